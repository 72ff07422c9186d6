"""The image-encoder fine-tune is reproducible: the same seed gives byte-identical weights in two processes.

It was not: the tensors were identical, but safetensors keeps the file's ``__metadata__`` in a Rust
``HashMap`` whose iteration order is randomized per process (and per map), so ``{"format", "categories"}``
came out in either order and the weight hash (``encoder_version``, hence every downstream ``ppm_version``)
changed from run to run. ``encoders.finetune.image.save_canonical`` sorts those keys.
"""

import json
import subprocess
import sys
from pathlib import Path

from ppm_platform.encoders.finetune.image import canonical_safetensors, save_canonical
from ppm_platform.testing.images import color_entity_items

REPO = Path(__file__).resolve().parents[2]

# one tiny fine-tune (run in this process and in a fresh one); prints the result's version and the file's sha256
_RUN = """
import hashlib, json, sys
import pandas as pd
from ppm_platform.config import Settings
from ppm_platform.encoders.finetune.image import finetune_image_encoder
items_json, art, images = sys.argv[1], sys.argv[2], sys.argv[3]
items = pd.read_json(items_json, orient="records")
s = Settings.from_env(env={"PPM_ARTIFACTS_DIR": art, "PPM_DATA_DIR": images})  # images: the catalog root
s.encoders.image_size = 64
s.finetune.threads = 1
s.finetune.export_onnx = False
s.finetune.image = s.finetune.image.model_copy(update={"epochs": 2, "batch_size": 8, "lr": 1e-2,
                                                       "backbone_lr": 1e-3, "train_from_block": 15})
r = finetune_image_encoder(s, items)
print(json.dumps({"version": r["version"], "sha256": hashlib.sha256(open(r["path"], "rb").read()).hexdigest(),
                  "curve": r["curve"]}))
"""


def test_canonical_safetensors_is_byte_stable_and_loads(tmp_path):
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save

    state = {"b": torch.arange(6, dtype=torch.float32).reshape(2, 3), "a": torch.ones(5, dtype=torch.int64)}
    meta = {"format": "pt", "categories": "Blue,Green,Red", "zeta": "1", "alpha": "2"}
    raw = {save(state, metadata=meta) for _ in range(12)}   # usually several byte strings: hash-map order
    assert len({canonical_safetensors(r) for r in raw}) == 1
    for i in range(12):   # 4 keys: a non-canonical writer passes 12 times with odds (1/24)^11
        save_canonical(state, tmp_path / f"w{i}.safetensors", meta)
    assert len({(tmp_path / f"w{i}.safetensors").read_bytes() for i in range(12)}) == 1
    got = load_file(tmp_path / "w0.safetensors")
    assert set(got) == {"a", "b"} and torch.equal(got["b"], state["b"]) and torch.equal(got["a"], state["a"])
    with safe_open(tmp_path / "w0.safetensors", "pt") as f:
        assert f.metadata() == meta


def test_image_finetune_same_seed_gives_identical_weight_hash_in_two_processes(tmp_path):
    items = color_entity_items(tmp_path, n=24, size=32)
    items_json = tmp_path / "items.json"
    items.to_json(items_json, orient="records")
    # two fresh processes, as two pipeline runs are (side by side: 1 torch thread each)
    procs = [subprocess.Popen([sys.executable, "-c", _RUN, str(items_json), str(tmp_path / f"art{k}"), str(tmp_path)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(2)]
    runs = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        runs.append(json.loads(out.strip().splitlines()[-1]))
    a, b = runs
    assert a["curve"] == b["curve"]
    assert a["sha256"] == b["sha256"], "fine-tuned image weights differ between two runs with the same seed"
    assert a["version"] == b["version"]


def test_canonical_header_keeps_tensor_offsets():
    """Only the metadata key order changes: same header length, same data section."""
    import struct

    import torch
    from safetensors.torch import save

    data = save({"x": torch.zeros(2, 3)}, metadata={"format": "pt", "categories": "A,B"})
    out = canonical_safetensors(data)
    h = struct.unpack("<Q", data[:8])[0]
    assert len(out) == len(data) and out[:8] == data[:8] and out[8 + h:] == data[8 + h:]
    assert list(json.loads(out[8:8 + h])["__metadata__"]) == ["categories", "format"]
