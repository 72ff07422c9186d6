"""ONNX export of URM / Base: dynamic batch, parity with torch through onnxruntime, OnnxScorer feeding."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from ppm_platform.models import URM, URM_INPUT_NAMES, URMConfig
from ppm_platform.serving.onnx_export import BASE_INPUT_NAMES, OnnxScorer, export_urm_onnx

try:  # pytest's default (prepend) import mode puts tests/unit on sys.path
    from test_models import small_urm_cfg, urm_batch
except ImportError:  # tests/ made a package
    from tests.unit.test_models import small_urm_cfg, urm_batch


def np_batch(cfg: URMConfig, b: int, seed: int) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in urm_batch(cfg, b, seed).items()}


def torch_probs(model: URM, batch: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(model.forward_dict({k: torch.from_numpy(v) for k, v in batch.items()})).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """URM exported from a batch-7 example, Base from a batch-1 example (dynamo exporter), both trained a
    little so the parity check is on non-trivial weights."""
    out = {}
    d = tmp_path_factory.mktemp("onnx")
    for use_ppm, b in ((True, 7), (False, 1)):
        torch.manual_seed(3)
        cfg = small_urm_cfg(use_ppm=use_ppm)
        model = URM(cfg).eval()
        example = np_batch(cfg, b, seed=1)
        if not use_ppm:  # Base needs no ppm_* inputs at all
            example = {k: v for k, v in example.items() if not k.startswith("ppm_")}
        info = export_urm_onnx(model, example, d / ("urm" if use_ppm else "base") / "model.onnx")
        out[use_ppm] = (model, cfg, info)
    return out


@pytest.mark.parametrize("use_ppm", [True, False])
def test_export_report_and_graph_signature(exported, use_ppm):
    model, cfg, info = exported[use_ppm]
    assert info["max_abs_diff"] <= 1e-5 and info["opset"] >= 17 and info["export_s"] > 0
    assert info["exporter"] == "dynamo"
    graph = onnx.load(info["path"]).graph
    names = [i.name for i in graph.input]
    assert names == list(URM_INPUT_NAMES if use_ppm else BASE_INPUT_NAMES) == info["input_names"]
    assert [o.name for o in graph.output] == ["probs"]
    for vi in (*graph.input, *graph.output):  # batch axis symbolic on every input and the output
        dim0 = vi.type.tensor_type.shape.dim[0]
        assert dim0.dim_param and not dim0.HasField("dim_value"), vi.name
    assert not model.training  # the model's mode is restored


@pytest.mark.parametrize("use_ppm", [True, False])
@pytest.mark.parametrize("batch", [1, 7, 100])
def test_onnx_parity_at_batch_sizes(exported, use_ppm, batch):
    model, cfg, info = exported[use_ppm]
    scorer = OnnxScorer(info["path"])
    data = np_batch(cfg, batch, seed=100 + batch)
    got = scorer.predict(data)  # the full dict: Base's scorer drops the ppm_* inputs itself
    assert got.shape == (batch, 2) and got.dtype == np.float32
    np.testing.assert_allclose(got, torch_probs(model, data), atol=1e-5, rtol=0)
    assert ((got > 0) & (got < 1)).all()


def test_scorer_casts_dtypes_and_names_missing_inputs(exported):
    model, cfg, info = exported[True]
    scorer = OnnxScorer(info["path"], intra_op_threads=1)
    assert scorer.input_names == list(URM_INPUT_NAMES)
    data = np_batch(cfg, 4, seed=7)
    loose = {k: (v.astype(np.int32) if v.dtype == np.int64 else v.astype(np.float64)) for k, v in data.items()}
    np.testing.assert_allclose(scorer.predict(loose), scorer.predict(data), atol=1e-6)
    with pytest.raises(KeyError, match="ppm_user_seq"):
        scorer.predict({k: v for k, v in data.items() if k != "ppm_user_seq"})
    base_scorer = OnnxScorer(exported[False][2]["path"])
    assert "ppm_item_vec" not in base_scorer.input_names


def test_legacy_exporter_and_parity_failure_leaves_no_file(tmp_path):
    cfg = small_urm_cfg(use_ppm=True)
    model = URM(cfg).train()
    example = np_batch(cfg, 5, seed=2)
    # an encoder handing int32 ids / float64 features still yields a graph with the contract dtypes
    loose = {k: (v.astype(np.int32) if v.dtype == np.int64 else v.astype(np.float64)) for k, v in example.items()}
    info = export_urm_onnx(model, loose, tmp_path / "m.onnx", dynamo=False)
    assert info["exporter"] == "torchscript" and info["max_abs_diff"] <= 1e-5
    elem = {i.name: i.type.tensor_type.elem_type for i in onnx.load(info["path"]).graph.input}
    assert elem["user_idx"] == elem["hist_item_idx"] == onnx.TensorProto.INT64
    assert elem["item_genres"] == elem["ppm_user_seq"] == onnx.TensorProto.FLOAT
    assert model.training  # restored
    model.eval()
    np.testing.assert_allclose(OnnxScorer(info["path"]).predict(np_batch(cfg, 9, 5)),
                               torch_probs(model, np_batch(cfg, 9, 5)), atol=1e-5, rtol=0)

    with pytest.raises(ValueError, match="parity"):
        export_urm_onnx(model, example, tmp_path / "bad.onnx", atol=-1.0, dynamo=False)
    # no partial or temp file: the failed export wrote neither graph (the serving graph is the good export's)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "model_serving.onnx"]
    with pytest.raises(KeyError, match="ppm_item_vec"):
        export_urm_onnx(model, {k: v for k, v in example.items() if k != "ppm_item_vec"}, tmp_path / "x.onnx",
                        dynamo=False)


@pytest.mark.parametrize("use_ppm", [True, False])
def test_serving_graph_broadcasts_the_user_row_and_matches_torch(exported, use_ppm):
    """model_serving.onnx: the user inputs have batch 1 (static), the item inputs batch N
    (symbolic); scores equal torch on the user row repeated N times within 1e-5, at N = 1, 7, 100."""
    from ppm_platform.models.urm import ITEM_INPUT_NAMES, USER_INPUT_NAMES
    from ppm_platform.serving.onnx_export import SERVING_FILE, serving_input_names

    model, cfg, info = exported[use_ppm]
    serving = info["serving"]
    assert serving["max_abs_diff"] <= 1e-5 and serving["path"].endswith(SERVING_FILE)
    graph = onnx.load(serving["path"]).graph
    assert [i.name for i in graph.input] == list(serving_input_names(model)) == serving["input_names"]
    for vi in graph.input:
        dim0 = vi.type.tensor_type.shape.dim[0]
        if vi.name in USER_INPUT_NAMES:
            assert dim0.dim_value == 1, vi.name
        else:
            assert vi.name in ITEM_INPUT_NAMES and dim0.dim_param and not dim0.HasField("dim_value"), vi.name
    scorer = OnnxScorer(serving["path"])
    for n in (1, 7, 100):
        data = np_batch(cfg, n, seed=200 + n)
        user = {k: data[k][:1] for k in USER_INPUT_NAMES}
        items = {k: data[k] for k in ITEM_INPUT_NAMES}
        got = scorer.predict({**user, **items})
        wide = {**{k: np.repeat(v, n, axis=0) for k, v in user.items()}, **items}
        assert got.shape == (n, 2)
        np.testing.assert_allclose(got, torch_probs(model, wide), atol=1e-5, rtol=0)
