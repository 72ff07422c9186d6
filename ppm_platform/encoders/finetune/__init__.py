"""Encoder fine-tuning (PPM, DESIGN.md §1): :mod:`~ppm_platform.encoders.finetune.text` (query matching,
SimCSE-style InfoNCE) and :mod:`~ppm_platform.encoders.finetune.image` (entity prediction, multi-label BCE);
:mod:`~ppm_platform.encoders.finetune.common` holds what both stages share (curve plot, atomic folder
replace, the skipped result)."""
