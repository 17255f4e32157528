"""The TensorRT backend without TensorRT (not installable here): fallback, precision plans, shape
profiles, and the glue around the engines (run with stand-ins that follow the documented API)."""
import sys
import types

import pytest
import torch

from pixel_perfect_ros.inference import bundled
from pixel_perfect_ros.inference.backends import BackendOptions, BackendUnavailable, create_backend
from pixel_perfect_ros.inference.backends import tensorrt_backend as trtb
from pixel_perfect_ros.inference.backends.engine_cache import ShapeProfile
from pixel_perfect_ros.inference.pipeline import PixelPerfectDepth
from pixel_perfect_ros.inference.sampling import sample_depth
from pixel_perfect_ros.model.flow import sampling_timesteps


@pytest.fixture(scope="module")
def model():
    return PixelPerfectDepth.from_checkpoints(bundled.CHECKPOINT, bundled.SEMANTICS, bundled.SEMANTICS_TYPE)


@pytest.fixture
def no_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError


# ---- fallback ---------------------------------------------------------------------------------

def test_missing_tensorrt_is_unavailable_with_the_install_hint(model, no_tensorrt):
    with pytest.raises(BackendUnavailable, match="TensorRT Python package not installed"):
        trtb.TensorRTBackend(model.dit, model.semantics_encoder, torch.device("cpu"), "fp32")
    backend, reason = create_backend("tensorrt", model.dit, model.semantics_encoder, torch.device("cpu"), "fp32")
    assert backend.name == "torch"
    assert reason.startswith("backend tensorrt unavailable (TensorRT Python package not installed")
    assert "pypi.nvidia.com" in reason and reason.endswith("running torch instead")


def test_tensorrt_without_a_cuda_device_is_unavailable(model, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0"))
    with pytest.raises(BackendUnavailable, match="CUDA devices, the device is cpu"):
        trtb.TensorRTBackend(model.dit, model.semantics_encoder, torch.device("cpu"), "fp16")


def test_pipeline_with_tensorrt_falls_back_to_the_torch_result(model, no_tensorrt):
    fallback = PixelPerfectDepth(model.dit, model.semantics_encoder, steps=2, target_area=32 * 48,
                                 backend="tensorrt")
    reference = PixelPerfectDepth(model.dit, model.semantics_encoder, steps=2, target_area=32 * 48)
    assert fallback.backend.name == "torch" and "TensorRT Python package not installed" in fallback.backend_fallback
    image = (torch.rand(40, 60, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8).numpy()
    assert (fallback(image).depth == reference(image).depth).all()


# ---- precision plans --------------------------------------------------------------------------

def test_trt_major():
    assert trtb.trt_major("10.3.0.30") == 10 and trtb.trt_major("11.0.0") == 11
    with pytest.raises(ValueError):
        trtb.trt_major("unknown")


def test_plans_for_tensorrt_10_use_builder_flags_on_the_fp32_graph():
    fp32 = trtb.build_plan("10.3.0", "fp32", (8, 7))
    assert fp32 == dict(onnx_dtype="fp32", strongly_typed=False, builder_flags=[], cleared_flags=["TF32"])
    for precision, flag in (("fp16", "FP16"), ("bf16", "BF16")):
        plan = trtb.build_plan("10.3.0", precision, (8, 7))  # Orin: Ampere, sm 8.7
        # no layer pins and no OBEY_PRECISION_CONSTRAINTS: INormalizationLayer computes in float32 by default
        assert plan == dict(onnx_dtype="fp32", strongly_typed=False, builder_flags=[flag], cleared_flags=[])
    with pytest.raises(BackendUnavailable, match="compute capability 8.0"):
        trtb.build_plan("10.3.0", "bf16", (7, 5))


def test_plans_for_tensorrt_11_are_strongly_typed_without_precision_flags():
    for precision, cleared in (("fp32", ["TF32"]), ("fp16", [])):
        plan = trtb.build_plan("11.0.0", precision, (9, 0))
        assert plan == dict(onnx_dtype=precision, strongly_typed=True, builder_flags=[], cleared_flags=cleared)
    with pytest.raises(BackendUnavailable, match="no bf16 graph is exported"):
        trtb.build_plan("11.0.0", "bf16", (9, 0))
    with pytest.raises(BackendUnavailable, match="too old"):
        trtb.build_plan("8.6.1", "fp16")
    with pytest.raises(ValueError, match="precision"):
        trtb.build_plan("10.3.0", "int8")


# ---- shapes -----------------------------------------------------------------------------------

def test_profile_and_graph_shapes_are_consistent():
    profile = trtb.profile_shapes(BackendOptions(max_height=512, max_width=768))
    assert profile == ShapeProfile((1, 32, 32), (1, 512, 768), (1, 512, 768))  # opt 0: tuned at the max
    encoder = trtb.graph_input_shapes("encoder", profile)
    dit = trtb.graph_input_shapes("dit_step", profile)
    assert encoder == {"image": ((1, 3, 32, 32), (1, 3, 512, 768), (1, 3, 512, 768))}
    for (n, h, w), x, semantics, timestep in zip((profile.min, profile.opt, profile.max), dit["x"],
                                                 dit["semantics"], dit["timestep"]):
        assert x == (n, 4, h, w) and h % 16 == 0 and w % 16 == 0
        assert semantics == (n, (h // 16) * (w // 16), 1024) and timestep == (n,)
    with pytest.raises(ValueError, match="multiples of 16"):
        trtb.profile_shapes(BackendOptions(max_height=500))
    with pytest.raises(ValueError, match="graph must be one of"):
        trtb.graph_input_shapes("decoder", profile)


def test_profile_is_tuned_at_the_opt_size_within_the_range():
    profile = trtb.profile_shapes(BackendOptions(max_height=1184, max_width=1184, opt_height=672, opt_width=1184))
    assert profile == ShapeProfile((1, 32, 32), (1, 672, 1184), (1, 1184, 1184))
    assert trtb.graph_input_shapes("encoder", profile)["image"][1] == (1, 3, 672, 1184)
    assert trtb.profile_shapes(BackendOptions(opt_height=512)).opt == (1, 512, 1024)  # the 0 side: its max
    for opt_height, opt_width in ((1024, 1024), (16, 1024), (500, 1024)):  # above the max, below 32, not /16
        with pytest.raises(ValueError, match=r"opt_height / opt_width must be multiples of 16 between 32"):
            trtb.profile_shapes(BackendOptions(opt_height=opt_height, opt_width=opt_width))


def test_inputs_outside_the_profile_name_the_parameters_to_change():
    profile = trtb.profile_shapes(BackendOptions())
    trtb.check_in_profile(profile, 1, 768, 1024)
    with pytest.raises(ValueError, match=r"1x1024x768 is outside .*rebuilt .*max_height / max_width"):
        trtb.check_in_profile(profile, 1, 1024, 768)
    with pytest.raises(ValueError, match="multiples of 16"):
        trtb.check_in_profile(profile, 1, 100, 128)


def test_small_helpers():
    assert trtb.torch_dtype(types.SimpleNamespace(name="HALF")) is torch.float16
    assert trtb.torch_dtype("DataType.INT32") is torch.int32
    with pytest.raises(ValueError):
        trtb.torch_dtype("FP4")
    assert trtb.workspace_bytes(8 << 30) == 2 << 30 and trtb.workspace_bytes(80 << 30) == 4 << 30
    assert str(BackendOptions().folder).endswith(".cache/pixel_perfect_ros")
    assert str(BackendOptions(engine_file_path="/tmp/e").folder) == "/tmp/e"


# ---- the glue around the engines, with stand-ins ---------------------------------------------

def test_engine_dit_runs_the_official_loop(model):
    """EngineDiT + sample_depth with a stand-in 'engine' that is the DiT: same result as torch."""
    calls = []

    def runner(x, semantics, timestep):
        calls.append(tuple(timestep.shape))
        return {"velocity": model.dit(x, semantics, timestep)}

    image, noise = torch.rand(1, 3, 32, 48), torch.randn(1, 1, 32, 48)
    timesteps = sampling_timesteps(2)
    with torch.inference_mode():
        semantics = model.semantics_encoder.forward_semantics(image)
        expected = sample_depth(model.dit, image, semantics, noise, timesteps)
        got = sample_depth(trtb.EngineDiT(runner), image, semantics, noise, timesteps)
    assert torch.equal(got, expected) and calls == [(1,), (1,)]


class FakeEngine:
    """Follows the documented ICudaEngine / IExecutionContext calls; 'runs' by recording bindings."""

    def __init__(self):
        self.io = {"x": ("INPUT", "FLOAT"), "timestep": ("INPUT", "INT32"), "velocity": ("OUTPUT", "FLOAT")}
        self.num_io_tensors = len(self.io)
        self.context = types.SimpleNamespace(shapes={}, addresses={}, streams=[])
        ctx = self.context
        ctx.set_input_shape = lambda name, shape: ctx.shapes.__setitem__(name, shape)
        ctx.set_tensor_address = lambda name, ptr: ctx.addresses.__setitem__(name, ptr)
        ctx.get_tensor_shape = lambda name: (ctx.shapes["x"][0], 1, *ctx.shapes["x"][2:])
        ctx.execute_async_v3 = lambda stream: ctx.streams.append(stream) or True

    def create_execution_context(self):
        return self.context

    def get_tensor_name(self, index):
        return list(self.io)[index]

    def get_tensor_mode(self, name):
        return self.io[name][0]

    def get_tensor_dtype(self, name):
        return types.SimpleNamespace(name=self.io[name][1])


def test_engine_runner_binds_torch_tensors(monkeypatch):
    fake_trt = types.SimpleNamespace(TensorIOMode=types.SimpleNamespace(INPUT="INPUT"))
    stream = types.SimpleNamespace(cuda_stream=1234)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: stream)
    engine = FakeEngine()
    runner = trtb.EngineRunner(fake_trt, engine, torch.device("cpu"))
    assert runner.inputs == ["x", "timestep"] and runner.outputs == ["velocity"]
    x = torch.rand(1, 4, 32, 48, dtype=torch.float64)  # cast to the engine's float32
    out = runner(x=x, timestep=torch.tensor([500], dtype=torch.int64))["velocity"]
    ctx = engine.context
    assert ctx.shapes == {"x": (1, 4, 32, 48), "timestep": (1,)} and ctx.streams == [1234]
    assert out.shape == (1, 1, 32, 48) and out.dtype == torch.float32
    assert ctx.addresses["velocity"] == out.data_ptr()
    with pytest.raises(ValueError, match="engine inputs"):
        runner(x=x)


def test_build_engine_follows_the_plan():
    """build_engine against a recording stand-in of the documented builder API."""
    record = {"flags": [], "shapes": {}}
    inputs = [types.SimpleNamespace(name="image", shape=(-1, 3, -1, -1))]
    # no num_layers / get_layer: build_engine touches no layer (no precision pins)
    network = types.SimpleNamespace(num_inputs=1, get_input=inputs.__getitem__)
    config = types.SimpleNamespace(
        set_memory_pool_limit=lambda pool, size: record.__setitem__("workspace", size),
        set_flag=record["flags"].append, clear_flag=lambda flag: None,
        add_optimization_profile=lambda profile: None)
    profile = types.SimpleNamespace(set_shape=lambda name, *shapes: record["shapes"].__setitem__(name, shapes))
    builder = types.SimpleNamespace(
        create_network=lambda flags: record.__setitem__("network_flags", flags) or network,
        create_builder_config=lambda: config, create_optimization_profile=lambda: profile,
        build_serialized_network=lambda net, cfg: b"plan")
    fake_trt = types.SimpleNamespace(
        Builder=lambda logger: builder,
        OnnxParser=lambda net, logger: types.SimpleNamespace(parse_from_file=lambda path: True),
        NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=1),
        MemoryPoolType=types.SimpleNamespace(WORKSPACE="WORKSPACE"),
        BuilderFlag=types.SimpleNamespace(FP16="FP16"))
    shapes = trtb.graph_input_shapes("encoder", trtb.profile_shapes(BackendOptions(opt_height=480, opt_width=640)))
    plan = trtb.build_plan("10.3.0", "fp16", (8, 7))
    assert trtb.build_engine(fake_trt, "encoder.onnx", shapes, plan, 1 << 30, logger=None) == b"plan"
    assert record["network_flags"] == 0 and record["flags"] == ["FP16"] and record["workspace"] == 1 << 30
    assert record["shapes"] == {"image": ((1, 3, 32, 32), (1, 3, 480, 640), (1, 3, 768, 1024))}
    # TensorRT 11: strongly typed network, no flags; a dynamic input without a range is an error.
    record["flags"].clear()
    trtb.build_engine(fake_trt, "encoder.onnx", shapes, trtb.build_plan("11.0.0", "fp16"), 1 << 30, logger=None)
    assert record["network_flags"] == 2 and record["flags"] == []
    with pytest.raises(trtb.EngineBuildError, match="no shape range for the dynamic input image"):
        trtb.build_engine(fake_trt, "encoder.onnx", {}, plan, 1 << 30, logger=None)


def test_build_engine_reports_parser_errors_and_forwards_progress():
    errors = ["In node 12 (Attention): unsupported operator"]
    parser = types.SimpleNamespace(parse_from_file=lambda path: False, num_errors=1, get_error=errors.__getitem__)
    builder = types.SimpleNamespace(create_network=lambda flags: object())
    fake_trt = types.SimpleNamespace(Builder=lambda logger: builder, OnnxParser=lambda net, logger: parser,
                                     NetworkDefinitionCreationFlag=types.SimpleNamespace())
    with pytest.raises(trtb.EngineBuildError, match=r"could not parse dit.onnx: In node 12 \(Attention\)"):
        trtb.build_engine(fake_trt, "dit.onnx", {}, trtb.build_plan("10.3.0", "fp32"), 1 << 30, logger=None)

    class IProgressMonitor:
        def __init__(self):
            pass

    lines = []
    progress = trtb.BuildProgress("encoder", lines.append, every_s=0)
    monitor = trtb._progress_monitor(types.SimpleNamespace(IProgressMonitor=IProgressMonitor), progress)
    monitor.phase_start("Building engine", None, 2)
    assert monitor.step_complete("Building engine", 0) is True
    monitor.phase_finish("Building engine")
    assert lines == ["  encoder: Building engine (2 steps)", "  encoder: Building engine 1/2"]
