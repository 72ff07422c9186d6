"""Process-level runtime knobs shared by the trainers (encoder fine-tuning, PPM, Base/URM)."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with ``torch.set_num_threads(n)`` (``None``/0: unchanged), restoring the old value.

    The PPM / URM steps are small ops (``[B*L, 32]`` matrices): with 2 intra-op threads on a shared 2-core
    machine they spin at OpenMP barriers, measured 17x slower than 1 thread (docs/scale.md §3)."""
    import torch

    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)
