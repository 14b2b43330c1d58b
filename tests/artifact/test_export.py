import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from helpers import make_checkpoint
from onnx import numpy_helper

from forecaster.artifact import export as export_mod
from forecaster.artifact.export import export
from forecaster.artifact.model_file import load_model
from forecaster.artifact.reference import LSTMLayer, lstm_layer
from forecaster.artifact.verify import random_windows, verify
from forecaster.cli import main
from forecaster.errors import ParityError
from forecaster.training import checkpoint
from forecaster.training.model import ModelConfig, build_forecaster


@pytest.fixture(scope="module", params=["relative", "minmax"])
def exported(request, tmp_path_factory):
    """(checkpoint, exported ONNX) per scaling, made once: exporting takes seconds."""
    folder = tmp_path_factory.mktemp(request.param)
    ckpt = make_checkpoint(folder / "m.pt", request.param)
    export(ckpt, folder / "m.onnx")
    return ckpt, folder / "m.onnx"


@pytest.fixture
def ckpt(exported, tmp_path):
    """A private copy of the checkpoint, for tests that export themselves."""
    return shutil.copy(exported[0], tmp_path / exported[0].name)


@pytest.fixture
def onnx_path(exported, tmp_path):
    return shutil.copy(exported[1], tmp_path / "m.onnx")


def torch_model(path):
    data = checkpoint.load(path)
    return build_forecaster(ModelConfig(**data["model_config"]), data["scaling"], data["state_dict"]), data


@pytest.mark.slow
def test_export_then_verify_round_trip(ckpt, tmp_path):
    result = export(ckpt, tmp_path / "m.onnx")
    assert result.max_rel <= 1e-4 and result.n_checked > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ckpt.name, "m.onnx"])
    outcome = verify(tmp_path / "m.onnx", n_windows=300)
    assert outcome.max_rel <= 1e-4 and outcome.n_windows == 300


def test_a_checkpoint_whose_windows_are_shorter_than_the_model_reads_is_refused(ckpt, tmp_path):
    from forecaster.errors import CheckpointError

    data = checkpoint.load(ckpt)
    checkpoint.save(ckpt, {**data, "parity_windows": data["parity_windows"][:, -20:]})  # har60 reads 60
    with pytest.raises(CheckpointError, match="its held-out windows hold 20 rows, but the model reads 60"):
        export(ckpt, tmp_path / "short.onnx")
    assert not (tmp_path / "short.onnx").exists()


@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_any_batch_size_matches_torch(exported, batch):
    ckpt, onnx_path = exported
    model, data = torch_model(ckpt)
    onnx_model = load_model(onnx_path)
    assert onnx_model.input_rows == 60 and onnx_model.seq_len == 20  # the har60 intervals read 60 rows
    windows = random_windows(batch, onnx_model.input_rows, seed=batch)
    index = np.arange(batch) % 2
    got, _ = onnx_model.score(windows, index)
    with torch.no_grad():  # the network reads the newest 20
        minmax = data["scaling"]["method"] == "minmax"
        args = (torch.tensor(windows[:, -20:]),) + ((torch.tensor(index),) if minmax else ())
        expected = model(*args).double().numpy()
    assert got.shape == (batch,)
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    assert np.abs(got - windows[:, -1, 3]).max() > 1e-3  # the network really contributes


def test_the_file_is_self_contained_and_loads_from_another_folder(onnx_path, tmp_path, monkeypatch):
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    shutil.move(tmp_path / "m.onnx", elsewhere / "moved.onnx")
    monkeypatch.chdir(tmp_path)
    model = onnx.load(str(elsewhere / "moved.onnx"))
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert load_model(elsewhere / "moved.onnx").seq_len == 20


def test_scaling_inside_the_graph_matches_the_checkpoint(exported, tmp_path):
    ckpt, onnx_path = exported
    shutil.copy(onnx_path, tmp_path / "m.onnx")
    model, data = torch_model(ckpt)
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "m.onnx")).graph.initializer}

    def by_suffix(suffix):
        return next(v for k, v in inits.items() if k.endswith(suffix))

    if data["scaling"]["method"] == "relative":
        np.testing.assert_allclose(by_suffix("gain"), data["scaling"]["gain"], rtol=1e-6)
    else:  # the exporter folds the tables into anonymous constants: find them by value
        tables = [v for v in inits.values() if v.shape == (2, 4)]
        lows = np.array(data["scaling"]["lows"])
        spans = np.array(data["scaling"]["highs"]) - lows
        assert any(np.allclose(t, lows, rtol=1e-6) for t in tables)
        assert any(np.allclose(t, spans, rtol=1e-6) for t in tables)
    # ...and the scaled inputs the graph computes equal torch's.
    windows = random_windows(50, 60, seed=3)
    index = np.arange(50) % 2
    _, extent = load_model(tmp_path / "m.onnx").score(windows, index)
    with torch.no_grad():  # the extent is the network's: its newest 20 rows
        args = (torch.tensor(windows[:, -20:]),) + (
            (torch.tensor(index),) if data["scaling"]["method"] == "minmax" else ()
        )
        scaled = model.scale_inputs(*args).abs().amax(dim=(1, 2)).double().numpy()
    np.testing.assert_allclose(extent, scaled, rtol=1e-6)


def test_a_corrupted_scaling_initializer_makes_verify_fail(onnx_path, tmp_path):
    model = onnx.load(str(tmp_path / "m.onnx"))
    for init in model.graph.initializer:
        if init.name.endswith("gain") or list(init.dims) == [2, 4]:  # relative gain / minmax tables
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.01, init.name))
    onnx.save(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(ParityError, match="ONNX Runtime vs the NumPy reference: largest difference"):
        verify(tmp_path / "bad.onnx")
    result = CliRunner().invoke(main, ["verify", str(tmp_path / "bad.onnx")])
    assert result.exit_code == 1 and "exceeds the tolerance 0.0001" in result.output


@pytest.mark.slow
def test_a_forced_mismatch_makes_export_fail_and_leaves_no_file(tmp_path, monkeypatch):
    ckpt = make_checkpoint(tmp_path / "m.pt")
    real = export_mod._to_onnx

    def tampered(*args, **kwargs):
        proto = real(*args, **kwargs)
        lstm = next(n for n in proto.graph.node if n.op_type == "LSTM")
        init = next(i for i in proto.graph.initializer if i.name == lstm.input[1])
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.5, init.name))
        return proto

    monkeypatch.setattr(export_mod, "_to_onnx", tampered)
    with pytest.raises(ParityError, match=r"ONNX Runtime vs torch, next_close: largest difference .* exceeds"):
        export(ckpt, tmp_path / "out.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_numpy_reference_matches_torch_lstm_on_the_same_weights():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(4, 16, 2, batch_first=True).double()
    x = torch.randn(5, 12, 4, dtype=torch.float64)
    expected = lstm(x)[0].detach().numpy()

    def onnx_order(w):  # torch packs (i, f, g, o); ONNX wants (i, o, f, c)
        i, f, g, o = np.split(w.detach().numpy(), 4)
        return np.concatenate([i, o, f, g])

    h = x.numpy()
    for k in range(2):
        layer = LSTMLayer(
            onnx_order(getattr(lstm, f"weight_ih_l{k}")),
            onnx_order(getattr(lstm, f"weight_hh_l{k}")),
            onnx_order(getattr(lstm, f"bias_ih_l{k}")) + onnx_order(getattr(lstm, f"bias_hh_l{k}")),
        )
        h = lstm_layer(h, layer)
    np.testing.assert_allclose(h, expected, rtol=1e-10, atol=1e-12)


def test_info_shows_the_metadata(onnx_path, tmp_path):
    result = CliRunner().invoke(main, ["info", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0
    sha = load_model(tmp_path / "m.onnx").sha256
    assert f"sha256    {sha}" in result.output
    assert "2x8 LSTM, seq_len 20, features open, high, low, close" in result.output
    assert "aa         " in result.output and "held-out RMSE" in result.output
    calibration = load_model(tmp_path / "m.onnx").metadata["intervals"]
    q80, q95 = calibration["quantiles"]
    assert "reads     60 rows per ticker (the network the newest 20, the har60 volatility 60)" in result.output
    assert (
        f"intervals {calibration['method']} volatility, score quantiles 80% {q80:.3f}, 95% {q95:.3f} "
        f"(from {calibration['n']} validation windows)" in result.output
    )
    said = json.loads(CliRunner().invoke(main, ["info", "--json", str(tmp_path / "m.onnx")]).output)
    assert (said["seq_len"], said["input_rows"], said["intervals"]["method"]) == (20, 60, "har60")
    assert isinstance(said["train_input_extent"], float) and said["sha256"] == sha


@pytest.mark.slow
def test_export_cli(tmp_path):
    ckpt = make_checkpoint(tmp_path / "m.pt")
    result = CliRunner().invoke(main, ["export", str(ckpt)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.onnx").exists() and "held-out windows: largest difference" in result.output
    missing = CliRunner().invoke(main, ["export", str(tmp_path / "nope.pt")])
    assert missing.exit_code == 1 and missing.output == f"Error: {tmp_path / 'nope.pt'}: no such checkpoint file\n"


def raw_export(ckpt):
    """The exporter's graph before our rewrite, and the model's ONNX Runtime feeds."""
    from forecaster.artifact.export import _to_onnx, _WithExtent

    model, data = torch_model(ckpt)
    uses_index = model.scaling.uses_ticker_index
    windows = torch.tensor(random_windows(2, 20, seed=0))
    example = (windows, torch.tensor([0, 1])) if uses_index else (windows,)
    return _to_onnx(_WithExtent(model, 20).eval(), example, uses_index, 20), uses_index


def run_graph(proto, uses_index, batch):
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"ohlc": random_windows(batch, 20, seed=batch)}
    if uses_index:
        feeds["ticker_index"] = np.arange(batch) % 2
    return session.run(None, feeds)


@pytest.mark.slow
def test_the_lstm_rewrite_gives_the_same_bits_with_less_data_movement(exported):
    from forecaster.artifact.lstm_graph import streamline_lstm_outputs

    raw, uses_index = raw_export(exported[0])
    fast = onnx.ModelProto.FromString(raw.SerializeToString())
    assert streamline_lstm_outputs(fast) == 2  # between the layers, and after the top one
    onnx.checker.check_model(fast, full_check=True)

    def count(proto, op):
        return sum(n.op_type == op for n in proto.graph.node)

    assert count(fast, "Transpose") == count(raw, "Transpose") - 3
    top = [n for n in fast.graph.node if n.op_type == "LSTM"][-1]
    assert top.output[0] == "" and top.output[1]  # reads Y_h; the sequence Y is never written
    for batch in (1, 300):
        for before, after in zip(run_graph(raw, uses_index, batch), run_graph(fast, uses_index, batch), strict=True):
            np.testing.assert_array_equal(before, after)
    assert count(onnx.load(str(exported[1])), "Transpose") == count(fast, "Transpose")  # export applies it


@pytest.mark.slow
def test_the_lstm_rewrite_leaves_a_graph_it_does_not_recognise_alone(exported):
    from forecaster.artifact.lstm_graph import streamline_lstm_outputs

    raw, uses_index = raw_export(exported[0])
    # Someone else also reads the lower layer's sequence: that step must stay as it is.
    lower = next(n for n in raw.graph.node if n.op_type == "LSTM")
    raw.graph.node.append(onnx.helper.make_node("Identity", [lower.output[0]], ["lower_y"]))
    raw.graph.output.append(onnx.helper.make_tensor_value_info("lower_y", onnx.TensorProto.FLOAT, ["t", 1, "b", "h"]))
    before = run_graph(raw, uses_index, 5)
    assert streamline_lstm_outputs(raw) == 1  # only the top layer's read of its last step
    onnx.checker.check_model(raw, full_check=True)
    for a, b in zip(before, run_graph(raw, uses_index, 5), strict=True):
        np.testing.assert_array_equal(a, b)


def test_verify_reads_the_head_by_structure_as_gemm_or_matmul_plus_add(onnx_path, tmp_path):
    # Rename every constant and write the head as MatMul + Add with a new bias:
    # the reference must find the weights by structure for verify to pass.
    model = onnx.load(str(tmp_path / "m.onnx"))
    renames = {init.name: f"c{i}" for i, init in enumerate(model.graph.initializer)}
    for init in model.graph.initializer:
        init.name = renames[init.name]
    for node in model.graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in gemm.attribute}
    inits = {i.name: i for i in model.graph.initializer}
    weight = numpy_helper.to_array(inits[gemm.input[1]])
    weight = weight.T if attrs.get("transB", 0) else weight
    model.graph.initializer.append(numpy_helper.from_array(weight.astype(np.float32), "head_w_t"))
    bias = (
        numpy_helper.to_array(inits[gemm.input[2]])
        if len(gemm.input) > 2 and gemm.input[2]
        else np.zeros(1, np.float32)
    )
    model.graph.initializer.append(numpy_helper.from_array((bias + 0.5).astype(np.float32), "head_b"))
    position = list(model.graph.node).index(gemm)
    out = gemm.output[0]
    model.graph.node.remove(gemm)
    model.graph.node.insert(position, onnx.helper.make_node("MatMul", [gemm.input[0], "head_w_t"], ["mm"]))
    model.graph.node.insert(position + 1, onnx.helper.make_node("Add", ["mm", "head_b"], [out]))
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp_path / "matmul.onnx"))
    assert verify(tmp_path / "matmul.onnx").max_rel <= 1e-4  # fails if the Add's bias (+0.5) is missed
