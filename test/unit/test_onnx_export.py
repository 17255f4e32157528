"""ONNX export (dynamo, dynamic N/H/W) of the DiT step and the encoders, checked in ONNX Runtime; ppd-export."""
import os
import stat

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from pixel_perfect_ros.inference import bundled
from pixel_perfect_ros.inference import onnx_export
from pixel_perfect_ros.inference.checkpoints import load_ppd_dit, load_semantics_encoder
from pixel_perfect_ros.inference.onnx_export import export_dit_step, export_encoder, exported_graphs, \
    model_fingerprint
from pixel_perfect_ros.tools import export as export_cli

SIZES = [(48, 64), (96, 80)]  # (H, W): two resolutions inside the exported range
BATCH = 2


def shared_cache(tmp_path_factory):
    """Export folder shared with test_onnxruntime_backend.py (same model and range: exported once)."""
    folder = tmp_path_factory.getbasetemp() / "onnx_cache"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def bundled_model():
    dit = load_ppd_dit(bundled.CHECKPOINT).eval().requires_grad_(False)
    encoder = load_semantics_encoder(bundled.SEMANTICS, bundled.SEMANTICS_TYPE).eval().requires_grad_(False)
    return dit, encoder


@pytest.fixture(scope="module")
def bundled_graphs(bundled_model, tmp_path_factory):
    lines = []
    paths = exported_graphs(*bundled_model, shared_cache(tmp_path_factory), dtype="fp32", max_height=768,
                            max_width=1024, log=lines.append)
    return paths, lines


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def max_diff(got, expected):
    return float(np.abs(got - expected.numpy()).max())


def test_dit_step_matches_torch_at_two_resolutions(bundled_model, bundled_graphs):
    dit, _ = bundled_model
    run = session(bundled_graphs[0][1])
    generator = torch.Generator().manual_seed(0)
    for height, width in SIZES:
        x = torch.randn(BATCH, 4, height, width, generator=generator)
        semantics = torch.randn(BATCH, (height // 16) * (width // 16), 1024, generator=generator)
        timestep = torch.tensor([1000, 250], dtype=torch.int32)  # one timestep per image
        with torch.inference_mode():
            expected = dit(x, semantics, timestep)
        got = run.run(None, {"x": x.numpy(), "semantics": semantics.numpy(), "timestep": timestep.numpy()})[0]
        assert got.shape == (BATCH, 1, height, width)
        assert max_diff(got, expected) < 1e-4  # measured ~6e-6


def test_moge2_encoder_matches_torch_at_two_resolutions(bundled_model, bundled_graphs):
    _, encoder = bundled_model
    run = session(bundled_graphs[0][0])
    for height, width in SIZES:
        image = torch.rand(BATCH, 3, height, width, generator=torch.Generator().manual_seed(height))
        with torch.inference_mode():
            expected = encoder.forward_semantics(image)
        got = run.run(None, {"image": image.numpy()})[0]
        assert got.shape == (BATCH, (height // 16) * (width // 16), 1024)
        assert max_diff(got, expected) < 2e-3  # ORT's antialiased Resize; measured ~1e-4


def test_da2_encoder_matches_torch_at_two_resolutions(tiny_checkpoints, tmp_path, monkeypatch):
    encoder = load_semantics_encoder(tiny_checkpoints["da2"], "da2").eval()
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 1 << 20)  # as a > 2 GB model: weights beside
    folder = tmp_path / "graphs"
    umask = os.umask(0o077)  # a private umask: the graphs are made readable by other users all the same
    try:
        run = session(export_encoder(encoder, folder / "da2.onnx", max_height=608, max_width=608))
    finally:
        os.umask(umask)
    assert (folder / "da2.onnx.data").stat().st_size > 1 << 20 and (folder / "da2.onnx").stat().st_size < 1 << 20
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert [stat.S_IMODE(p.stat().st_mode) for p in (folder / "da2.onnx", folder / "da2.onnx.data")] == [0o644] * 2
    for height, width in SIZES + [(592, 592)]:  # 592 px: DINOv2's native 37 x 37 grid, used unresized
        image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(width))
        with torch.inference_mode():
            expected = encoder.forward_semantics(image)
        assert max_diff(run.run(None, {"image": image.numpy()})[0], expected) < 2e-3


def test_fp16_dit_keeps_statistics_fp32_and_runs_in_onnxruntime(tiny_checkpoints, tmp_path):
    dit = load_ppd_dit(tiny_checkpoints["ppd"]).eval()
    umask = os.umask(0o077)  # a private umask: a one-file graph is made readable by other users all the same
    try:
        path = export_dit_step(dit, tmp_path / "dit16.onnx", dtype="fp16", max_height=128, max_width=128)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and not list(tmp_path.glob(".*.tmp"))
    graph = onnx.load(str(path)).graph
    by_output = {out: node for node in graph.node for out in node.output}
    assert {"LayerNormalization", "Softmax"} <= {node.op_type for node in graph.node}
    for node in graph.node:
        if node.op_type in ("LayerNormalization", "Softmax"):  # every input comes through a Cast to float32
            assert all(by_output[i].op_type == "Cast" and by_output[i].attribute[0].i == onnx.TensorProto.FLOAT
                       for i in node.input if i)
    float32, int32 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT32
    assert [i.type.tensor_type.elem_type for i in graph.input] == [float32, float32, int32]
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    x, semantics = torch.randn(BATCH, 4, 48, 64), torch.randn(BATCH, 12, 1024)
    timestep = torch.tensor([500, 500], dtype=torch.int32)
    with torch.inference_mode():
        expected = dit(x, semantics, timestep)
    got = session(path).run(None, {"x": x.numpy(), "semantics": semantics.numpy(), "timestep": timestep.numpy()})[0]
    assert max_diff(got, expected) < 2e-2  # ORT CPU has the fp16 kernels; measured ~3e-3 on the bundled model


def test_exported_graphs_reuses_the_cache_and_reexports_a_changed_model(bundled_model, bundled_graphs,
                                                                        tiny_checkpoints, tmp_path_factory,
                                                                        monkeypatch):
    paths, first_lines = bundled_graphs
    assert all(p.is_file() and p.parent == shared_cache(tmp_path_factory) for p in paths)
    assert model_fingerprint(bundled_model[0]) in paths[1].name and "fp32_opset18_max1024x768" in paths[1].name
    lines = []
    assert exported_graphs(*bundled_model, paths[0].parent, dtype="fp32", max_height=768, max_width=1024,
                           log=lines.append) == paths
    assert lines == []  # nothing exported the second time
    assert not list(paths[0].parent.glob(".*.tmp"))  # atomic writes leave no temp files
    # a small model and stub exports (the real export is tested above): a weight change renames (re-exports)
    # its graph, force exports again in place
    def stub_export(module, path, **kwargs):
        path.write_bytes(b"graph")
        return path

    monkeypatch.setattr(onnx_export, "export_encoder", stub_export)
    monkeypatch.setattr(onnx_export, "export_dit_step", stub_export)
    folder = tmp_path_factory.mktemp("tiny_cache")
    dit = load_ppd_dit(tiny_checkpoints["ppd"]).eval()
    encoder = load_semantics_encoder(tiny_checkpoints["da2"], "da2").eval()
    kwargs = dict(dtype="fp32", max_height=64, max_width=64)
    _, dit_path = onnx_export.exported_graphs(dit, encoder, folder, **kwargs, log=lines.append)
    with torch.no_grad():
        dit.final_layer.linear.bias.add_(1.0)
    lines.clear()
    _, changed = onnx_export.exported_graphs(dit, encoder, folder, **kwargs, log=lines.append)
    assert changed != dit_path and changed.is_file() and len(lines) == 2  # only the DiT: start + time lines
    assert "exporting the DiT step" in lines[0]
    lines.clear()
    onnx_export.exported_graphs(dit, encoder, folder, **kwargs, force=True, log=lines.append)
    assert len(lines) == 4


def test_ppd_export_cli_table_and_exit_codes(bundled_graphs, tmp_path, capsys):
    out = bundled_graphs[0][0].parent  # same model and range: the CLI reuses the export
    assert export_cli.main(["--out", str(out), "--check-sizes", "64x48,80x96", "--max-size", "1024x768"]) == 0
    printed = capsys.readouterr().out
    assert "TensorRT not installed: engines not built (ONNX graphs written)" in printed
    table = [line.split() for line in printed.splitlines() if line.startswith(("encoder ", "dit_step "))]
    assert [(row[0], row[2], row[-1]) for row in table] == [
        ("encoder", "64x48", "yes"), ("dit_step", "64x48", "yes"), ("encoder", "80x96", "yes"),
        ("dit_step", "80x96", "yes")]
    # a tolerance below the measured diff fails the check
    assert export_cli.main(["--out", str(out), "--check-sizes", "64x48", "--max-size", "1024x768",
                            "--tolerance", "1e-12"]) == 1
    assert export_cli.main(["--out", str(tmp_path), "--checkpoint", str(tmp_path / "missing.pth"),
                            "--semantics", str(tmp_path / "missing.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("")
    assert export_cli.main(["--out", str(tmp_path / "a_file")]) == 2  # before the model loads
    assert "File exists" in capsys.readouterr().err
    for bad in (["--check-sizes", "60x48"], ["--tolerance", "nan"], ["--threads", "-1"]):
        with pytest.raises(SystemExit) as error:
            export_cli.main(["--out", str(tmp_path), *bad])
        assert error.value.code == 2
