"""ppm-platform: the PPM pre-trained plug-in CTR model (Gao et al., WWW'24) on a feature store.

The library, layered from interfaces down to data (enforced by import-linter, pyproject.toml): ``cli`` >
``pipeline`` (one function per stage) > ``serving`` | ``evaluation`` > ``training`` > ``feature_store`` (Feast) >
``features`` (Spark jobs) > ``encoders`` / ``model_store`` / ``catalog`` > ``models`` (torch, no I/O) > ``data`` >
``config``, ``io``, ``runtime``, ``onnx_common``, ``reporting``. It never imports Dagster (docs/architecture.md).
"""
