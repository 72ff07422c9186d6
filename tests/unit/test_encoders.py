"""Frozen encoders: MiniLM text embeddings (shape, unit norm, semantics) and EfficientNet-Lite0 image
features (every PIL mode, missing images, unreadable files)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ppm_platform.config import Settings
from ppm_platform.data.item_content import ImageLoadError, item_text
from ppm_platform.encoders import (
    encoder_version,
    get_image_encoder,
    get_text_encoder,
    load_image,
)
from ppm_platform.features.item_multimodal import me_matrix


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings.from_env(env={})


@pytest.fixture(scope="module")
def text_encoder(settings):
    return get_text_encoder(settings)


@pytest.fixture(scope="module")
def image_encoder(settings):
    return get_image_encoder(settings)


def test_text_encoder_shape_norm_and_semantics(text_encoder, settings):
    texts = [
        "A cowboy doll and a space ranger toy become friends.",
        "Two toys, a cowboy and an astronaut action figure, learn to get along.",
        "Quarterly tax filing deadlines for small businesses.",
        "",
    ]
    emb = text_encoder.encode(texts, batch_size=3)
    assert emb.shape == (4, 384) and emb.dtype == np.float32 and text_encoder.dim == 384
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] + 0.2 and sim[1, 0] > sim[1, 2] + 0.2
    # batching does not change the result
    np.testing.assert_allclose(text_encoder.encode(texts[:2], batch_size=1), emb[:2], atol=1e-5)
    assert text_encoder.encode([]).shape == (0, 384)
    assert text_encoder.version.startswith("all-MiniLM-L6-v2@")
    assert get_text_encoder(settings) is text_encoder  # one model per process
    with pytest.raises(TypeError, match=r"texts\[0\]"):
        text_encoder.encode([None])


def test_item_text():
    assert item_text("Toy Story (1995)", ["Animation", "Comedy"]) == "Toy Story (1995). Genres: Animation, Comedy"
    assert item_text("X", np.array([], dtype=object)) == "X. Genres: "


def _render(path, mode: str, size=(120, 180)) -> str:
    rng = np.random.default_rng(abs(hash(mode)) % 2**32)
    rgb = Image.fromarray(rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8), "RGB")
    img = rgb.convert(mode)
    fmt = "PNG" if mode in ("RGBA", "P") else "JPEG"
    p = path / f"img_{mode}.{fmt.lower()}"
    img.save(p, fmt)
    return str(p)


def test_image_encoder_all_modes_and_missing(image_encoder, tmp_path):
    paths = [_render(tmp_path, m) for m in ("RGB", "L", "CMYK", "RGBA", "P")]
    wide = Image.new("RGB", (400, 90), (200, 30, 30))  # extreme aspect ratio
    wide.save(tmp_path / "wide.jpg")
    all_paths = [paths[0], None, *paths[1:], str(tmp_path / "wide.jpg"), "file://" + paths[0]]
    feats, has = image_encoder.encode_paths(all_paths, batch_size=3, root=tmp_path)
    assert feats.shape == (8, 1280) and feats.dtype == np.float32 and has.dtype == np.int64
    assert has.tolist() == [1, 0, 1, 1, 1, 1, 1, 1]
    assert np.isfinite(feats).all()
    assert (feats[1] == 0).all()
    assert all(np.abs(feats[i]).sum() > 0 for i in range(8) if i != 1)
    np.testing.assert_allclose(feats[7], feats[0], atol=1e-5)  # file:// URI == plain path
    assert load_image(paths[2], 224, root=tmp_path).shape == (3, 224, 224)
    assert image_encoder.version.startswith("efficientnet-lite0@") and image_encoder.dim == 1280
    empty, none_has = image_encoder.encode_paths([None, None], root=None)
    assert empty.shape == (2, 1280) and not empty.any() and none_has.tolist() == [0, 0]


def test_image_encoder_unreadable_file_names_the_path(image_encoder, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        image_encoder.encode_paths([None, str(bad)], root=tmp_path)
    with pytest.raises(ImageLoadError, match="missing.jpg"):
        image_encoder.encode_paths([str(tmp_path / "missing.jpg")], root=tmp_path)


def test_encoder_version_without_loading(settings, text_encoder, image_encoder):
    assert encoder_version(settings) == f"{text_encoder.version}|{image_encoder.version}"


def test_me_matrix_concatenates_text_image_has_image(settings):
    import pandas as pd

    rng = np.random.default_rng(1)
    df = pd.DataFrame({
        "item_id": [5, 3],
        "text_emb": [rng.random(384, dtype=np.float32) for _ in range(2)],
        "image_emb": [rng.random(1280, dtype=np.float32), np.zeros(1280, np.float32)],
        "has_image": [1, 0],
    })
    ids, me = me_matrix(df)
    assert ids.tolist() == [5, 3] and me.shape == (2, settings.encoders.me_dim) == (2, 1665) and me.dtype == np.float32
    np.testing.assert_array_equal(me[0, :384], df["text_emb"][0])
    np.testing.assert_array_equal(me[0, 384:1664], df["image_emb"][0])
    assert me[:, 1664].tolist() == [1.0, 0.0]
    df["text_emb"] = [np.zeros(384, np.float32), np.zeros(10, np.float32)]
    with pytest.raises(ValueError, match="text_emb"):
        me_matrix(df)
