"""The Dagster code location of ppm-platform: ``defs/<group>/{assets,checks}.py`` per pipeline stage, merged in
``definitions.py``; thin assets over :mod:`ppm_platform.pipeline` (docs/architecture.md)."""
