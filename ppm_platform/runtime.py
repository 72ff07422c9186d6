"""Process-level runtime knobs shared by the long-running stages (encoder fine-tuning, PPM, Base/URM,
evaluation): torch's thread count and the progress-callback type."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

#: A stage's progress callback: called with one human-readable line per step (epoch, chunk); None = log only.
Progress = Callable[[str], None] | None


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with ``torch.set_num_threads(n)`` (``None``/0: unchanged), restoring the old value.

    The PPM / URM steps are small ops (``[B*L, 32]`` matrices): with more intra-op threads than free cores
    they spin at OpenMP barriers and run several times slower than with 1 thread (docs/scale.md §3)."""
    import torch

    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)
