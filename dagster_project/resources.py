"""Resources keyed by profile, as Dagster's ``project_fully_featured`` keys them by environment:
``local`` = embedded (Spark ``local[*]``, DuckDB offline store, SQLite online store), ``cluster`` = Spark
master URL + Spark offline store + Redis (chosen by ``PPM_PROFILE``). Both profiles use the same resource
classes; the profile setting switches Spark master, offline and online store underneath.

The platform :class:`~ppm_platform.config.Settings` are built once per run (``setup_for_execution``) and
handed by the steps to the Spark resource, so one run sees one configuration."""

from __future__ import annotations

import os

import dagster as dg
from pydantic import PrivateAttr

from ppm_platform.config import Settings

PROFILES = ("local", "cluster")


class PPMSettingsResource(dg.ConfigurableResource):
    """Platform settings. Empty fields fall back to ``PPM_*`` environment variables, then defaults."""

    profile: str = ""
    artifacts_dir: str = ""
    data_dir: str = ""

    _settings: Settings | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._settings = self._build()

    def _build(self) -> Settings:
        overrides = {k: v for k, v in {"profile": self.profile, "artifacts_dir": self.artifacts_dir,
                                       "data_dir": self.data_dir}.items() if v}
        return Settings.from_env(**overrides).ensure_dirs()

    def get(self) -> Settings:
        """The run's settings (built at resource setup; on direct invocation of an asset or check, at the
        first call).

        Raises:
            FileNotFoundError: ``PPM_CONFIG`` names a missing file.
            pydantic.ValidationError: a setting has the wrong type.
        """
        if self._settings is None:
            self._settings = self._build()
        return self._settings


class SparkResource(dg.ConfigurableResource):
    """The SparkSession of a run, built lazily from the run's settings (``local[*]`` or the cluster master)."""

    def session(self, settings: Settings):
        """The (reused) SparkSession for ``settings.spark``; steps pass the run's ``ppm.get()``."""
        from ppm_platform.features.spark import get_spark

        return get_spark(settings)


def _resources(profile: str) -> dict:
    return {"ppm": PPMSettingsResource(profile=profile), "spark": SparkResource()}


#: the resource set of each profile
RESOURCES_BY_PROFILE = {p: _resources(p) for p in PROFILES}


def resources_for(profile: str | None = None) -> dict:
    """Resource set for ``profile`` (default: ``PPM_PROFILE`` or ``local``). An unknown profile gets the same
    resources and fails in the first step that reads the settings (``Settings`` validates the profile)."""
    profile = profile or os.environ.get("PPM_PROFILE", "local")
    return RESOURCES_BY_PROFILE.get(profile) or _resources(profile)
