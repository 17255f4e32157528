"""ppd-infer (and ppd-infer-video's checks) end to end with small random-weight checkpoints in the official formats."""
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from checkpoint_files import tiny_video_models, write_ppd_checkpoint, write_video_checkpoints

from pixel_perfect_ros.evaluation.depth_io import from_png16, to_png16
from pixel_perfect_ros.geometry.decoding import RelativeDecoder
from pixel_perfect_ros.tools import infer, infer_video
from pixel_perfect_ros.tools.infer import build_parser, main, unique_stems


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "a.png"), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / "b.jpg"), rng.integers(0, 256, (40, 30, 3), dtype=np.uint8))
    (folder / "notes.txt").write_text("not an image, not picked up")
    return folder


@pytest.fixture()
def no_model_loading(monkeypatch):
    """ppd-infer's model loading replaced by a test failure: the error must be found before it."""
    def load_model(request):
        pytest.fail(f"the model was loaded for {request}")
    monkeypatch.setattr(infer, "load_model", load_model)


@pytest.fixture(scope="module")
def nan_checkpoint(tmp_path_factory) -> Path:
    """A tiny ppd.pth in the official format with every weight NaN: its depth is NaN everywhere."""
    path = tmp_path_factory.mktemp("nan") / "ppd.pth"
    state = write_ppd_checkpoint(path)
    torch.save({key: value.fill_(float("nan")) if value.is_floating_point() else value
                for key, value in state.items()}, path)
    return path


def run(tiny_checkpoints, inputs, out, *extra, variant=("ppd", "da2", "da2")):
    checkpoint, semantics, kind = variant
    return main([*map(str, inputs), "--checkpoint", str(tiny_checkpoints[checkpoint]),
                 "--semantics", str(tiny_checkpoints[semantics]), "--semantics-type", kind,
                 "--out", str(out), "--target-area", str(64 * 48), *extra])


def test_writes_three_files_per_image(tiny_checkpoints, images, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(tiny_checkpoints, [images], out, "--steps", "2") == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "a_depth.npy", "a_depth16.png", "a_depth_color.png", "b_depth.npy", "b_depth16.png", "b_depth_color.png"]
    for stem, shape in (("a", (48, 64)), ("b", (40, 30))):
        depth = np.load(out / f"{stem}_depth.npy")
        assert depth.shape == shape and depth.dtype == np.float32 and np.isfinite(depth).all()
        png16 = cv2.imread(str(out / f"{stem}_depth16.png"), cv2.IMREAD_UNCHANGED)
        assert png16.dtype == np.uint16
        np.testing.assert_allclose(from_png16(png16), np.clip(depth, -0.5, 1.5), atol=2e-5)
        assert cv2.imread(str(out / f"{stem}_depth_color.png")).shape == (*shape, 3)
    assert "wrote 2 of 2 depth maps" in capsys.readouterr().err


def test_moge2_variant_and_seed_reproducibility(tiny_checkpoints, images, tmp_path):
    variant = ("ppd_moge", "moge2", "moge2")
    for name in ("x", "y"):
        assert run(tiny_checkpoints, [images / "a.png"], tmp_path / name, "--seed", "3", variant=variant) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "x" / "a_depth.npy"), np.load(tmp_path / "y" / "a_depth.npy"))


def test_an_unavailable_backend_falls_back_to_torch_and_says_why(tiny_checkpoints, images, tmp_path, capsys):
    assert run(tiny_checkpoints, [images / "a.png"], tmp_path / "o", "--backend", "torch_cuda_graph",
               "--engine-dir", str(tmp_path / "engines"), "--force-engine-update", "--steps", "2") == 0
    err = capsys.readouterr().err
    assert "ppd-infer: backend torch_cuda_graph unavailable (needs a CUDA device" in err and "running torch" in err
    assert np.isfinite(np.load(tmp_path / "o" / "a_depth.npy")).all()
    run(tiny_checkpoints, [images / "a.png"], tmp_path / "p", "--backend", "auto", "--steps", "2")
    assert "running torch instead" not in capsys.readouterr().err  # auto on CPU is torch: nothing to fall back from


def test_samples_write_the_mean_depth_and_its_uncertainty(tiny_checkpoints, images, tmp_path, capsys):
    for name, extra in (("two", ["--samples", "2"]), ("s3", []), ("s4", ["--seed", "4"])):
        assert run(tiny_checkpoints, [images / "a.png"], tmp_path / name, "--steps", "2", "--seed", "3", *extra) == 0
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "a_depth.npy", "a_depth16.png", "a_depth_color.png", "a_uncertainty.npy", "a_uncertainty.png"]
    assert sorted(p.name for p in (tmp_path / "s3").iterdir()) == ["a_depth.npy", "a_depth16.png", "a_depth_color.png"]
    singles = np.stack([np.load(tmp_path / name / "a_depth.npy") for name in ("s3", "s4")])  # seeds 3 and 3 + 1
    depth = np.load(tmp_path / "two" / "a_depth.npy")
    np.testing.assert_allclose(depth, singles.mean(axis=0), atol=1e-5)  # the mean of the samples
    uncertainty = np.load(tmp_path / "two" / "a_uncertainty.npy")
    assert uncertainty.shape == (48, 64) and uncertainty.dtype == np.float32 and np.isfinite(uncertainty).all()
    # relative mode: std of the samples' exp(n) over exp(n) of the written depth (unitless)
    np.testing.assert_allclose(uncertainty, np.exp(singles).std(axis=0) / np.exp(depth), rtol=1e-4, atol=1e-6)
    assert uncertainty.max() > 1e-3
    assert cv2.imread(str(tmp_path / "two" / "a_uncertainty.png")).shape == (48, 64, 3)
    assert "wrote 1 of 1 depth maps" in capsys.readouterr().err


class InvalidBand:
    """The loaded model, with rows 0-3 of its depth NaN, rows 4-5 too far and column 0 too near to decode
    (``samples`` goes to the model, as ppd-infer sets it)."""

    def __init__(self, model):
        self.model = model

    samples = property(lambda self: self.model.samples, lambda self, count: setattr(self.model, "samples", count))

    def __call__(self, rgb):
        prediction = self.model(rgb)
        prediction.depth[:4], prediction.depth[4:6], prediction.depth[:, 0] = np.nan, 200.0, -200.0
        return prediction


def test_the_uncertainty_is_nan_exactly_where_the_written_depth_is_invalid(tiny_checkpoints, images, tmp_path,
                                                                          monkeypatch):
    load_model = infer.load_model

    def with_invalid_band(request):
        loaded = load_model(request)
        return replace(loaded, model=InvalidBand(loaded.model))
    monkeypatch.setattr(infer, "load_model", with_invalid_band)
    out = tmp_path / "o"
    assert run(tiny_checkpoints, [images / "a.png"], out, "--steps", "1", "--samples", "2") == 0
    depth, uncertainty = np.load(out / "a_depth.npy"), np.load(out / "a_uncertainty.npy")
    invalid = np.zeros((48, 64), bool)
    invalid[:6], invalid[:, 0] = True, True
    assert np.array_equal(~(np.isfinite(RelativeDecoder()(depth))), invalid)  # the band was written as made
    assert uncertainty.shape == (48, 64) and uncertainty.dtype == np.float32
    assert np.array_equal(np.isnan(uncertainty), invalid) and np.isfinite(uncertainty[~invalid]).all()
    color = cv2.imread(str(out / "a_uncertainty.png"))
    assert (color[invalid] == 0).all() and color[~invalid].any()


def test_backend_arguments_default_to_auto_and_the_default_cache():
    args = build_parser().parse_args(["img.png", "--out", "o"])
    assert (args.backend, args.engine_dir, args.force_engine_update) == ("auto", None, False)
    assert args.samples == 1 and build_parser().parse_args(["img.png", "--out", "o", "--samples", "16"]).samples == 16


def test_unreadable_image_is_skipped_and_reported(tiny_checkpoints, images, tmp_path, capsys):
    (images / "broken.png").write_bytes(b"\x89PNG truncated")
    assert run(tiny_checkpoints, [images], tmp_path / "out") == 1
    assert (tmp_path / "out" / "a_depth.npy").is_file() and (tmp_path / "out" / "b_depth.npy").is_file()
    err = capsys.readouterr().err
    assert "broken.png: not a readable image" in err and "wrote 2 of 3" in err


def test_a_model_without_valid_depth_fails_and_writes_nothing(nan_checkpoint, tiny_checkpoints, images, tmp_path,
                                                              capsys):
    out = tmp_path / "o"
    assert main([str(images / "a.png"), "--checkpoint", str(nan_checkpoint), "--semantics",
                 str(tiny_checkpoints["da2"]), "--out", str(out), "--target-area", str(64 * 48), "--steps", "1"]) == 1
    err = capsys.readouterr().err
    assert "skipped " + str(images / "a.png") + ": the model produced almost no valid depth (0.0 % of the pixels" in err
    assert "wrote 0 of 1 depth maps" in err
    assert list(out.iterdir()) == []  # no NaN file to be taken for a result


def test_a_video_model_without_valid_depth_writes_the_clip_and_fails(images, tmp_path, capsys):
    dit, pi3 = tiny_video_models()
    with torch.no_grad():
        for parameter in dit.parameters():
            parameter.fill_(float("nan"))
    ppvd, semantics = write_video_checkpoints(tmp_path, (dit, pi3))
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        cv2.imwrite(str(frames / f"{i}.png"), cv2.imread(str(images / "a.png")))
    out = tmp_path / "o"
    assert infer_video.main([str(frames), "--checkpoint", str(ppvd), "--semantics", str(semantics), "--out", str(out),
                             "--steps", "1"]) == 1
    err = capsys.readouterr().err
    assert "2 of 2 frames failed (the first, frame 0: the model produced almost no valid depth" in err
    assert np.isnan(np.load(out / "frames_depth.npz")["depth"]).all()  # the clip, written as predicted


def test_ppd_infer_video_checks_the_device_before_loading(images, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(infer_video, "load_model", lambda request: pytest.fail("the model was loaded"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without CUDA
    with pytest.raises(SystemExit) as exit_info:
        infer_video.main([str(images), "--checkpoint", "c.pth", "--semantics", "s.pth", "--out", str(tmp_path),
                          "--device", "cuda"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == ("ppd-infer-video: error: argument --device: device 'cuda' "
                                                        "requested but CUDA is not available to torch")


@pytest.mark.parametrize("arguments, message", [
    (["--target-area", "5"], "argument --target-area: expected a processing area of at least 256 pixels, got 5"),
    (["--device", "cuda"], "argument --device: device 'cuda' requested but CUDA is not available to torch"),
    (["--device", "gpu0"], "argument --device: device 'gpu0' is not a torch device (cpu, cuda, cuda:1, ...)"),
    (["--threads", "-1"], "argument --threads: expected a non-negative integer, got -1"),
])
def test_bad_arguments_are_one_line_before_the_model_loads(no_model_loading, images, tmp_path, monkeypatch, capsys,
                                                          arguments, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without CUDA
    with pytest.raises(SystemExit) as exit_info:
        main([str(images), "--out", str(tmp_path / "o"), *arguments])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert err.splitlines()[-1] == f"ppd-infer: error: {message}"


@pytest.mark.parametrize("case, message", [("missing input", "input not found"), ("empty folder", "no images (.bmp"),
                                           ("output is a file", "File exists")])
def test_bad_paths_are_one_line_before_the_model_loads(no_model_loading, images, tmp_path, capsys, case, message):
    inputs, out = {"missing input": (tmp_path / "absent.png", tmp_path / "o"),
                   "empty folder": (tmp_path / "empty", tmp_path / "o"),
                   "output is a file": (images, images / "notes.txt")}[case]
    (tmp_path / "empty").mkdir()
    assert main([str(inputs), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("ppd-infer: ") and message in err and "Traceback" not in err


def test_threads_apply_to_the_run_and_are_restored(images, tmp_path, monkeypatch):
    load_model, seen = infer.load_model, []

    def counting_threads(request):
        loaded = load_model(request)
        return replace(loaded, model=lambda rgb: seen.append(torch.get_num_threads()) or loaded.model(rgb))
    monkeypatch.setattr(infer, "load_model", counting_threads)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([str(images / "a.png"), "--out", str(tmp_path / "o"), "--steps", "1", "--threads", "2"]) == 0
        assert seen == [2] and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert build_parser().parse_args(["a.png", "--out", "o"]).threads == 1  # the default: see docs/offline.md


def test_missing_checkpoint_says_what_to_download(no_model_loading, images, tmp_path, capsys):
    code = main([str(images), "--checkpoint", str(tmp_path / "ckpt" / "ppd.pth"),
                 "--semantics", str(tmp_path / "ckpt" / "depth_anything_v2_vitl.pth"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert "checkpoint not found" in err and "huggingface.co/gangweix/Pixel-Perfect-Depth" in err
    assert f"put them in {tmp_path / 'ckpt'}/" in err
    assert not (tmp_path / "o").exists()


def test_without_checkpoint_runs_the_bundled_model(images, tmp_path, capsys):
    assert main([str(images / "a.png"), "--out", str(tmp_path / "o"), "--steps", "2"]) == 0
    assert "bundled tiny model" in capsys.readouterr().err
    depth = np.load(tmp_path / "o" / "a_depth.npy")
    assert np.isfinite(depth).all() and depth.std() > 0


def test_checkpoint_without_semantics_is_refused(images, tmp_path, capsys):
    assert main([str(images), "--checkpoint", str(tmp_path / "ppd.pth"), "--out", str(tmp_path / "o")]) == 2
    assert "both --checkpoint and --semantics" in capsys.readouterr().err


def test_wrong_checkpoint_is_a_clear_error(tiny_checkpoints, images, tmp_path, capsys):
    assert run(tiny_checkpoints, [images], tmp_path / "o", variant=("da2", "da2", "da2")) == 2
    assert "not a PPD checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [["--steps", "0"], ["--target-area", "x"], ["--semantics-type", "dino"],
                                 ["--backend", "tensorflow"], ["--samples", "0"], ["--samples", "17"],
                                 ["--samples", "2.5"], []])
def test_parser_rejects_bad_arguments(bad, capsys):
    required = ["img.png", "--checkpoint", "c", "--semantics", "s", "--out", "o"] if bad else ["img.png"]
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(required + bad)
    assert info.value.code == 2


def test_unique_stems_keeps_same_named_inputs_apart():
    assert unique_stems([Path("x/a.png"), Path("y/a.png"), Path("b.png")]) == ["a", "a_1", "b"]


def test_png16_scale_is_fixed_and_clipped():
    depth = np.array([[-1.0, -0.5, 0.5, 1.5, 9.0, np.nan]], np.float32)
    assert to_png16(depth).tolist() == [[0, 0, 32768, 65535, 65535, 0]]


def test_console_script_is_installed(tmp_path):
    script = Path(sys.executable).parent / "ppd-infer"
    result = subprocess.run([str(script), str(tmp_path), "--checkpoint", "none.pth", "--semantics", "none.pth",
                             "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "no images" in result.stderr
