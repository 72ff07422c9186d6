"""ONNX helpers shared by the encoder batch inference and the URM export/serving."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path


@contextlib.contextmanager
def quiet_onnx_export():
    """Silence torch.onnx's logging, warnings and progress prints for the duration of an export.

    The dynamo exporter logs "torchvision is not installed" warnings and prints progress lines; they are
    noise for a pipeline step.
    """
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
                yield
    finally:
        log.setLevel(level)


def cpu_session(path: Path, intra_op_threads: int | None = 1):
    """An ``onnxruntime.InferenceSession`` on the CPU provider.

    Args:
        intra_op_threads: threads per session (None or 0 = onnxruntime's default, one per core);
            1 keeps one session per core so processes, not threads, scale out.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    if intra_op_threads and intra_op_threads > 0:
        so.intra_op_num_threads = int(intra_op_threads)
        so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
