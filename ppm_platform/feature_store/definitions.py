"""The Feast definitions of ppm-platform in the library: load them from ``feature_repo/features.py`` for a
:class:`~ppm_platform.config.Settings`, register them (``store.apply``), and check that the feature tables
behind them exist."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ppm_platform.config import Settings
from ppm_platform.feature_store.repo_config import get_store, write_repo_config

if TYPE_CHECKING:  # feast import is slow: keep it out of module import
    from feast import FeatureService, FeatureStore

#: module name the definitions file is loaded under (``feature_repo/features.py`` skips its CLI-only
#: side effects under this name)
DEFINITIONS_MODULE = "ppm_feature_repo_features"


def load_definitions(settings: Settings) -> dict[str, list[Any]]:
    """Build the Feast objects of ``<settings.feature_repo_dir>/features.py`` for ``settings`` (its
    ``build_definitions(settings)``; the file is imported once per process and path).

    Returns:
        ``{"entities", "data_sources", "push_sources", "feature_views", "feature_services"}`` lists.

    Raises:
        FileNotFoundError: the definitions file does not exist.
    """
    path = settings.feature_repo_dir / "features.py"
    if not path.is_file():
        raise FileNotFoundError(f"Feast definitions not found: {path} (Settings.feature_repo_dir)")
    mod = sys.modules.get(DEFINITIONS_MODULE)
    if mod is None or Path(mod.__file__).resolve() != path.resolve():
        spec = importlib.util.spec_from_file_location(DEFINITIONS_MODULE, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[DEFINITIONS_MODULE] = mod
        spec.loader.exec_module(mod)
    return mod.build_definitions(settings)


def apply_definitions(settings: Settings) -> dict[str, Any]:
    """Register every entity, data source, feature view and feature service (in-process ``store.apply``).

    Idempotent. Also writes the resolved config to ``<feast_dir>/feature_store.yaml`` for the Feast CLI.

    Returns:
        ``{"entities": [...], "feature_views": [...], "feature_services": [...], "seconds": s,
        "config": path}`` with the names now in the registry.
    """
    t0 = time.perf_counter()
    defs = load_definitions(settings)
    store = get_store(settings)
    store.apply([*defs["entities"], *defs["data_sources"], *defs.get("push_sources", []), *defs["feature_views"],
                 *defs["feature_services"]])
    cfg_path = write_repo_config(settings, settings.feast_dir / "feature_store.yaml")
    return {
        "entities": sorted(e.name for e in store.list_entities()),
        "feature_views": sorted(v.name for v in store.list_feature_views()),
        "feature_services": sorted(s.name for s in store.list_feature_services()),
        "seconds": round(time.perf_counter() - t0, 3),
        "config": str(cfg_path),
    }


def service_views(store: "FeatureStore", service: "FeatureService") -> list:
    """The registered feature views of ``service``, in its order."""
    return [store.get_feature_view(p.name) for p in service.feature_view_projections]


def check_sources(settings: Settings, store: "FeatureStore", service: "FeatureService | None" = None) -> None:
    """Raise a clear error if a local parquet behind ``service`` (or behind any view) is missing.

    Raises:
        FileNotFoundError: names the view, its source path and the feature table to build.
    """
    views = service_views(store, service) if service is not None else store.list_feature_views()
    for fv in views:
        path = getattr(fv.batch_source, "path", None)
        if path and "://" not in path and not Path(path).exists():
            raise FileNotFoundError(
                f"feature view {fv.name!r}: source {path} does not exist; build the feature table "
                f"{fv.tags.get('table', fv.name)!r} first (settings.features_dir={settings.features_dir})")
