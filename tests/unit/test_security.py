"""Security basics: artifacts are loaded only through safe formats, and no secret is committed.

Path traversal from catalog fields at ingest is covered by tests/unit/test_bad_input_catalogue.py (image_*
cases); here: images reopened after ingest (a symlink swapped in the meantime) and the new-item path go
through the same containment and pixel-limit check.
Request-size bounds of the HTTP service are tested with the service (tests/unit/test_http_api.py).
"""

from __future__ import annotations

import re
import struct
import subprocess
import zlib
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from ppm_platform.config import Settings

REPO = Path(__file__).resolve().parents[2]
CODE_DIRS = ("ppm_platform", "dagster_project", "feature_repo", "benchmarks")


def _tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", *patterns], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    return [REPO / p for p in out.splitlines() if (REPO / p).is_file()]


def unsafe_loads(text: str) -> list[str]:
    """Lines that deserialize with pickle: ``torch.load(`` without ``weights_only=True``, ``pickle.load(s)``,
    ``joblib.load``, ``np.load(..., allow_pickle=True)``, ``pd.read_pickle``."""
    bad = []
    for m in re.finditer(r"torch\.load\(", text):
        depth, end = 0, m.end() - 1
        for end in range(m.end() - 1, len(text)):  # the call up to its matching ")"
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            if depth == 0:
                break
        call = text[m.start(): end + 1]
        if "weights_only=True" not in call:
            bad.append(call)
    bad += re.findall(r"(?:pickle|cloudpickle|dill)\.loads?\(|joblib\.load\(|read_pickle\(|allow_pickle\s*=\s*True", text)
    return bad


def test_scanner_catches_unsafe_loads():
    assert unsafe_loads('sd = torch.load(p, map_location="cpu")')
    assert unsafe_loads("x = pickle.loads(b)") and unsafe_loads("np.load(f, allow_pickle=True)")
    assert not unsafe_loads('sd = torch.load(str(path), map_location="cpu", weights_only=True)')


def test_no_unsafe_deserialization_in_the_code_base():
    files = [p for p in _tracked(*CODE_DIRS) if p.suffix == ".py"]
    assert len(files) > 20
    found = {str(p.relative_to(REPO)): unsafe_loads(p.read_text()) for p in files}
    assert {k: v for k, v in found.items() if v} == {}


SECRET_PATTERNS = {
    "aws access key": r"AKIA[0-9A-Z]{16}",
    "github token": r"gh[pousr]_[A-Za-z0-9]{36,}",
    "slack token": r"xox[baprs]-[A-Za-z0-9-]{10,}",
    "private key": r"-----BEGIN (?:RSA |EC |OPENSSH |DSA )?PRIVATE KEY-----",
    "openai/hf key": r"\b(?:sk-[A-Za-z0-9]{32,}|hf_[A-Za-z0-9]{30,})\b",
    "password assignment": r"(?i)\b(?:password|passwd|secret|api_key|token)\s*[:=]\s*['\"][^'\"\s]{8,}['\"]",
}


def find_secrets(text: str) -> list[str]:
    return [name for name, pat in SECRET_PATTERNS.items() if re.search(pat, text)]


def test_secret_scanner_catches_examples():
    assert find_secrets("aws = 'AKIA" + "ABCDEFGHIJKLMNOP'") == ["aws access key"]
    assert find_secrets('API_KEY = "' + "s3cr3tvalue123" + '"') == ["password assignment"]
    assert find_secrets("-----BEGIN " + "PRIVATE KEY-----") == ["private key"]
    assert find_secrets("redis: str = '127.0.0.1:6379'") == []


def test_no_secrets_in_tracked_files():
    hits = {}
    for p in _tracked():
        if p.stat().st_size > 2_000_000:
            continue
        try:
            text = p.read_text()
        except UnicodeDecodeError:
            continue
        if found := find_secrets(text):
            hits[str(p.relative_to(REPO))] = found
    assert hits == {}


# ---- catalog images reopened after ingest, and the new-item path -----------------------------------------------
def _png_header(w: int, h: int) -> bytes:
    """A PNG whose header claims ``w x h`` pixels (a decompression bomb costs nothing to build)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_symlink_swapped_after_ingest_is_refused_by_the_encoder_path(tmp_path):
    from ppm_platform.data.ingest import ingest_dataset
    from ppm_platform.data.validation import check_image
    from ppm_platform.data.item_content import ImageRefusedError
    from ppm_platform.encoders.image import load_image
    from ppm_platform.features.item_multimodal import encode_items_frame

    cat = tmp_path / "catalog"
    (cat / "img").mkdir(parents=True)
    Image.new("RGB", (16, 16), (0, 128, 255)).save(cat / "img" / "real.jpg")
    (tmp_path / "outside").mkdir()
    Image.new("RGB", (16, 16), (255, 0, 0)).save(tmp_path / "outside" / "secret.jpg")
    link = cat / "img" / "poster.jpg"
    link.symlink_to(cat / "img" / "real.jpg")  # inside the root: accepted at ingest
    pd.DataFrame({"item_id": [1], "title": ["Blue mug"], "image_uri": ["img/poster.jpg"]}).to_csv(cat / "items.csv", index=False)
    pd.DataFrame({"user_id": [10]}).to_csv(cat / "users.csv", index=False)
    pd.DataFrame({"user_id": [10], "item_id": [1], "event_timestamp": ["2024-02-01T10:00:00Z"],
                  "click": [1]}).to_csv(cat / "interactions.csv", index=False)
    s = Settings.from_env(env={}, dataset="canonical", data_dir=str(cat), artifacts_dir=str(tmp_path / "art"))
    items = ingest_dataset(s)["items"].clean
    uri = items.loc[0, "image_uri"]
    assert uri == str(cat / "img" / "poster.jpg")
    assert encode_items_frame(items, s)["has_image"].tolist() == [1]

    link.unlink()
    link.symlink_to(tmp_path / "outside" / "secret.jpg")  # swapped after ingest: points out of the root
    with pytest.raises(ImageRefusedError, match="escapes the catalog root") as e:
        encode_items_frame(items, s)  # what the item_multimodal Spark job and the new-item path run
    assert e.value.path == uri and e.value.reason == "image path escapes the catalog root"
    with pytest.raises(ImageRefusedError, match=re.escape(f"{uri!r} refused: image path escapes the catalog root")):
        load_image(uri, root=s.data_dir)
    assert check_image(uri, s.data_dir) == "image path escapes the catalog root"


def test_encoder_refuses_an_image_over_the_pixel_limit(tmp_path):
    from ppm_platform.data.item_content import MAX_IMAGE_PIXELS, ImageRefusedError
    from ppm_platform.encoders.image import load_image

    big = tmp_path / "big.png"
    big.write_bytes(_png_header(9_000, 9_000))  # 81 Mpx: under Pillow's own bomb limit, over the platform's
    assert 9_000 * 9_000 > MAX_IMAGE_PIXELS
    with pytest.raises(ImageRefusedError, match=re.escape("refused: image too large (> 64,000,000 px)")):
        load_image(str(big), root=tmp_path)


def test_new_item_push_refuses_images_outside_the_root_or_too_large(tmp_path):
    from ppm_platform.serving.new_item import add_new_item

    cat = tmp_path / "catalog"
    cat.mkdir()
    s = Settings.from_env(env={}, data_dir=str(cat), artifacts_dir=str(tmp_path / "art")).ensure_dirs()
    outside = tmp_path / "elsewhere.jpg"
    Image.new("RGB", (16, 16)).save(outside)
    (cat / "link.jpg").symlink_to(outside)
    (cat / "big.png").write_bytes(_png_header(9_000, 9_000))
    Image.new("RGB", (16, 16)).save(cat / "ok.jpg")
    escapes, too_large = "image path escapes the catalog root", "image too large (> 64,000,000 px)"
    for path, reason in ((outside, escapes), (cat / "link.jpg", escapes), (cat / ".." / "elsewhere.jpg", escapes),
                         (cat / "big.png", too_large), (cat / "missing.jpg", "image file missing")):
        with pytest.raises(ValueError, match=re.escape(f"new item 9000001: image {str(path)!r} refused: {reason}")):
            add_new_item(s, 9_000_001, "Brand New (2026)", ["Drama"], path, store=object())  # never reaches the store
    # an image inside the root passes the check (this test has no PPM: that is the next error)
    with pytest.raises(FileNotFoundError, match="has no PPM"):
        add_new_item(s, 9_000_001, "Brand New (2026)", ["Drama"], cat / "ok.jpg", store=object())
