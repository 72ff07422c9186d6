"""The artifact catalog: every artifact the platform writes and reads between stages, by name -> where it lives
under :class:`~ppm_platform.config.Settings` and the schema it conforms to.

One place for the file names: the ingest, the pipeline stages, serving, the asset checks, the Dagster asset
``deps`` and the Feast sources (``feature_repo/features.py``) get an artifact's path from :func:`path` instead of
joining ``"<name>.parquet"`` themselves, so renaming or moving an artifact is one edit here. It lives in
``data/`` beside the schemas it names, so the ingest (the first writer) can use it without importing upward.

Layouts (``Artifact.layout``): ``file`` = one parquet (or JSON) file; ``day_folder`` = a folder (for feature tables
named ``<table>.parquet``) of ``<YYYY-MM-DD>.parquet`` day files that read as one table (Feast's file and Spark sources,
DuckDB and pyarrow all read it so; :func:`ppm_platform.io.write_day_partitioned`); ``model`` = a published
model folder (a symlink to its current version, :mod:`ppm_platform.model_store`); ``folder`` = a folder
replaced whole when rewritten (the fine-tuned encoders).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

import pyarrow as pa

from ppm_platform.config import Settings
from ppm_platform.data import schemas
from ppm_platform.io import DAY_FILE

Root = Literal["tables_dir", "quarantine_dir", "features_dir", "models_dir", "artifacts_dir"]
Layout = Literal["file", "day_folder", "model", "folder"]


@dataclass(frozen=True)
class Artifact:
    """One artifact of the catalog.

    Attributes:
        name: the catalog name (for tables also the table name; for feature tables the Feast source name).
        root: the :class:`~ppm_platform.config.Settings` folder it lives in (a property name).
        filename: its name inside ``root``.
        layout: ``file``, ``day_folder`` or ``model`` (module docstring).
        schema: the Arrow schema its rows conform to (None: not a table, or a schema that depends on settings,
            see :func:`schema`).
    """

    name: str
    root: Root
    filename: str
    layout: Layout = "file"
    schema: pa.Schema | None = None

    def path(self, settings: Settings) -> Path:
        """The artifact's absolute path under ``settings``."""
        return getattr(settings, self.root) / self.filename


def _table(name: str, root: Root, schema: pa.Schema | None, layout: Layout = "file") -> Artifact:
    return Artifact(name, root, f"{name}.parquet", layout, schema)


#: every artifact by name
ARTIFACTS: dict[str, Artifact] = {a.name: a for a in [
    # canonical tables (ingest)
    *(_table(n, "tables_dir", s) for n, s in schemas.CANONICAL.items()),
    # the daily interaction log (daily assets): one <YYYY-MM-DD>.parquet per day
    Artifact("interactions_daily", "tables_dir", "interactions_daily", "day_folder", schemas.INTERACTIONS),
    # rows the ingest rejected, per canonical table (original columns as text + reason), and their DuckDB copy
    *(Artifact(f"{n}_quarantine", "quarantine_dir", f"{n}.parquet") for n in schemas.CANONICAL),
    Artifact("interactions_daily_quarantine", "quarantine_dir", "interactions_daily", "day_folder"),
    Artifact("quarantine_db", "artifacts_dir", "quarantine.duckdb"),
    # feature tables: one Feast source each
    _table("item_multimodal", "features_dir", schemas.ITEM_MULTIMODAL),
    _table("item_profile", "features_dir", schemas.ITEM_PROFILE),
    _table("user_profile", "features_dir", schemas.USER_PROFILE),
    _table("behavior_sequences", "features_dir", schemas.BEHAVIOR_SEQUENCES, "day_folder"),
    _table("ppm_item_cache", "features_dir", schemas.PPM_ITEM_CACHE),
    _table("ppm_user_cache", "features_dir", schemas.PPM_USER_CACHE, "day_folder"),
    _table("item_stats", "features_dir", None, "day_folder"),  # columns per settings.counters.windows_days
    _table("user_stats", "features_dir", None, "day_folder"),
    _table("item_semantic_id", "features_dir", None),  # one code column per settings.semantic_ids.levels
    # the priors of the counters' smoothed rates (the full counters stage writes them, the daily ones read them)
    Artifact("counter_priors", "features_dir", "counter_priors.json"),
    # the point-in-time training set of the URM (feature service urm_training)
    Artifact("training_set", "artifacts_dir", "training_set.parquet"),
    # published models
    *(Artifact(m, "models_dir", m, "model") for m in ("ppm", "urm", "base")),
    # the fine-tuned item encoders (a save_pretrained text model; the image encoder's weights file inside)
    Artifact("text_encoder", "models_dir", "text_encoder", "folder"),
    Artifact("image_encoder", "models_dir", "image_encoder", "folder"),
    # the semantic-id codebook (residual k-means centroids, npz + json) that codes new items too
    Artifact("semantic_id_codebook", "models_dir", "semantic_ids", "folder"),
]}

#: the feature tables behind the Feast feature views (one source each), in the order of :data:`ARTIFACTS`
FEATURE_TABLES = tuple(a.name for a in ARTIFACTS.values()
                       if a.root == "features_dir" and a.filename.endswith(".parquet"))
#: entity (:data:`ppm_platform.data.schemas.COUNTER_ENTITIES`) -> its counter table
COUNTER_TABLES = {"item": "item_stats", "user": "user_stats"}


def get(name: str) -> Artifact:
    """The catalog entry ``name``.

    Raises:
        KeyError: ``name`` is not in the catalog (the message lists the known names).
    """
    try:
        return ARTIFACTS[name]
    except KeyError:
        raise KeyError(f"unknown artifact {name!r}; the catalog has {sorted(ARTIFACTS)}") from None


def path(settings: Settings, name: str) -> Path:
    """The absolute path of artifact ``name`` under ``settings``. Raises ``KeyError`` as :func:`get`."""
    return get(name).path(settings)


def model_dir(settings: Settings, name: str) -> Path:
    """The published folder of model ``name``: the catalog's ``ppm`` / ``urm`` / ``base``, or any other name a
    caller publishes under ``settings.models_dir`` (a variant, a test's second model). Whether it exists is the
    reader's check (the model store and the Ranker raise ``FileNotFoundError`` naming it)."""
    return path(settings, name) if name in ARTIFACTS else settings.models_dir / name


def day_path(settings: Settings, name: str, day: date) -> Path:
    """The file of UTC ``day`` inside the ``day_folder`` artifact ``name`` (``<folder>/<YYYY-MM-DD>.parquet``).

    Raises:
        KeyError: ``name`` is not in the catalog. ValueError: ``name`` is not a day folder.
    """
    art = get(name)
    if art.layout != "day_folder":
        raise ValueError(f"artifact {name!r} ({art.filename}) is not a day folder")
    return art.path(settings) / DAY_FILE.format(day=day.isoformat())


def schema(settings: Settings, name: str) -> pa.Schema:
    """The Arrow schema of table ``name`` for ``settings`` (the counter tables' columns follow
    ``settings.counters.windows_days``, the semantic-id table's ``settings.semantic_ids.levels``).

    Raises:
        KeyError: ``name`` is not in the catalog. ValueError: ``name`` is not a table (a JSON file, a model).
    """
    entity = {t: e for e, t in COUNTER_TABLES.items()}.get(name)
    if entity is not None:
        return schemas.counter_schema(entity, tuple(int(w) for w in settings.counters.windows_days))
    if name == "item_semantic_id":
        return schemas.semantic_id_schema(settings.semantic_ids.levels)
    art = get(name)
    if art.schema is None:
        raise ValueError(f"artifact {name!r} ({art.filename}) is not a table")
    return art.schema
