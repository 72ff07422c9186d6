"""Item-encoding throughput: items/s of (a) a plain single-process loop and (b) the Spark
``item_multimodal`` job on the same cores, for the torch and onnxruntime backends; prints one JSON object.

Both paths run the same function (:func:`ppm_platform.features.item_multimodal.encode_items_frame`: text +
image encoders, image decoding included) over the same items; models are loaded (and Spark workers warmed up)
before timing. The loop uses every core through torch/onnxruntime intra-op threads; Spark uses ``local[*]``
Python workers with ``encoders.torch_threads_per_worker`` threads each. Encoders: the fine-tuned ones when
``PPM_ARTIFACTS_DIR`` holds them (``encoders.factory.encoder_settings``), else the pre-trained ones (which have no ONNX
file, so the onnx backend falls back to torch; the JSON says which backend actually ran).

Usage::

    PPM_ARTIFACTS_DIR=/tmp/x/artifacts .venv/bin/python benchmarks/encode_throughput.py --items 256

Ratios, not absolute numbers, are the figures to compare (timings on shared machines are noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd


def _loop(settings, items: pd.DataFrame, batch_rows: int) -> dict:
    from ppm_platform.encoders import get_image_encoder, get_text_encoder
    from ppm_platform.features.item_multimodal import encode_items_frame

    text, image = get_text_encoder(settings), get_image_encoder(settings)  # load before timing
    encode_items_frame(items.head(4), settings)
    t0 = time.perf_counter()
    n = 0
    for s in range(0, len(items), batch_rows):
        n += len(encode_items_frame(items.iloc[s:s + batch_rows], settings))
    dt = time.perf_counter() - t0
    return {"items": n, "seconds": round(dt, 2), "items_per_s": round(n / dt, 2),
            "text_runtime": type(text).__name__, "image_runtime": type(image).__name__}


def _spark(spark, settings, items_path: Path, out: Path) -> dict:
    from ppm_platform.features.item_multimodal import compute_item_multimodal

    res = compute_item_multimodal(spark, settings, items_path, out)
    return {"items": res["items"], "seconds": res["seconds"], "items_per_s": res["items_per_s"]}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=256, help="catalog items to encode (first N with an image)")
    ap.add_argument("--backends", default="torch,onnx", help="comma list of backends to time (torch, onnx)")
    args = ap.parse_args(argv)

    import torch

    from ppm_platform.config import Settings
    from ppm_platform.encoders.factory import encoder_settings
    from ppm_platform.features.spark import get_spark

    base = encoder_settings(Settings.from_env().ensure_dirs())
    items = pd.read_parquet(base.tables_dir / "items.parquet")
    items = items[items["image_uri"].notna()].head(args.items).reset_index(drop=True)
    cores = os.cpu_count() or 1
    tmp = Path(tempfile.mkdtemp(prefix="encode-bench-"))
    items_path = tmp / "items.parquet"
    items.to_parquet(items_path)
    spark = get_spark(base)
    out: dict = {"items": len(items), "cores": cores, "text_model": str(base.encoders.text_model_path),
                 "image_weights": str(base.encoders.image_weights_path), "results": {}}
    for backend in args.backends.split(","):
        s = base.model_copy(deep=True)
        s.encoders.text_backend = s.encoders.image_backend = backend
        torch.set_num_threads(cores)
        loop = _loop(s, items, s.spark.arrow_batch_rows)
        _spark(spark, s, items_path, tmp / f"warm-{backend}.parquet")  # warm-up: workers load the encoders
        job = _spark(spark, s, items_path, tmp / f"mm-{backend}.parquet")
        out["results"][backend] = {"loop": loop, "spark": job,
                                   "spark_over_loop": round(job["items_per_s"] / loop["items_per_s"], 3)}
        print(f"{backend}: loop {loop['items_per_s']} items/s, spark {job['items_per_s']} items/s", file=sys.stderr)
    r = out["results"]
    if "torch" in r and "onnx" in r:
        out["onnx_over_torch_loop"] = round(r["onnx"]["loop"]["items_per_s"] / r["torch"]["loop"]["items_per_s"], 3)
        out["onnx_over_torch_spark"] = round(r["onnx"]["spark"]["items_per_s"] / r["torch"]["spark"]["items_per_s"], 3)
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
