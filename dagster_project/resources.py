"""Resources keyed by profile, as Dagster's ``project_fully_featured`` keys them by environment:
``local`` = embedded (Spark ``local[*]``, DuckDB offline store, SQLite online store), ``cluster`` = Spark
master URL + Spark offline store + Redis (chosen by ``PPM_PROFILE``)."""

from __future__ import annotations

import os

import dagster as dg

from ppm_platform.config import Settings


class PPMSettingsResource(dg.ConfigurableResource):
    """Platform settings. Empty fields fall back to ``PPM_*`` environment variables, then defaults."""

    profile: str = ""
    artifacts_dir: str = ""
    data_dir: str = ""

    def get(self) -> Settings:
        overrides = {k: v for k, v in {"profile": self.profile, "artifacts_dir": self.artifacts_dir,
                                       "data_dir": self.data_dir}.items() if v}
        return Settings.from_env(**overrides).ensure_dirs()


class SparkResource(dg.ConfigurableResource):
    """A SparkSession built lazily from the settings (``local[*]`` or the cluster master)."""

    settings: PPMSettingsResource

    def session(self):
        from ppm_platform.features.spark import get_spark

        return get_spark(self.settings.get())


def resources_for(profile: str | None = None) -> dict:
    """Resource set for ``profile`` (default: ``PPM_PROFILE`` or ``local``). Both profiles use the same
    resource classes; the profile setting switches Spark master, offline and online store underneath."""
    profile = profile or os.environ.get("PPM_PROFILE", "local")
    settings = PPMSettingsResource(profile=profile)
    return {"ppm": settings, "spark": SparkResource(settings=settings)}
