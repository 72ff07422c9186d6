"""Torch models (no I/O in here): PPM (ID-free, pre-trained plug-in), IDRec, MMoE and URM.

See :mod:`ppm_platform.models.ppm` for the caching split (what is frozen + cached vs. trained in URM).
"""

from ppm_platform.models.idrec import IDRec, IDRecConfig
from ppm_platform.models.layers import MLP, CrossNetV2, DINAttention, DotAttentionPooling, attention_pool, masked_softmax
from ppm_platform.models.mmoe import MMoE, MMoEConfig
from ppm_platform.models.ppm import PPM, PPMConfig, PPMItemTower, PPMReadout, PPMSequenceEncoder
from ppm_platform.models.urm import (
    IDREC_INPUT_NAMES,
    PPM_INPUT_NAMES,
    TASKS,
    URM,
    URM_INPUT_NAMES,
    URMConfig,
    multitask_bce,
)

__all__ = [
    "MLP", "CrossNetV2", "DINAttention", "DotAttentionPooling", "attention_pool", "masked_softmax",
    "PPM", "PPMConfig", "PPMItemTower", "PPMReadout", "PPMSequenceEncoder",
    "IDRec", "IDRecConfig", "MMoE", "MMoEConfig", "URM", "URMConfig", "URM_INPUT_NAMES", "PPM_INPUT_NAMES", "IDREC_INPUT_NAMES", "TASKS", "multitask_bce",
]
