"""``tensorrt``: the exported ONNX graphs (encoder, one DiT step) as TensorRT engines, native Python API.

Written against the documented TensorRT Python API of 10.x (JetPack 6 ships 10.3) and 11.x. TensorRT
cannot be installed where this package is developed and tested, so this file is kept thin: the pure
parts (``build_plan``, ``check_in_profile``, ``torch_dtype``, the shape profile in ``profiles.py``) and
the engine cache (``engine_cache.py``) are tested; the calls into ``tensorrt`` are not.

Precision per TensorRT major version (``build_plan``):

    10.x  fp32 / bf16 / fp16: parse the float32 ONNX; fp16 and bf16 set ``BuilderFlag.FP16`` / ``BF16``
          (weak typing). No layer is pinned: the opset-18 graphs' LayerNormalization nodes parse to
          ``INormalizationLayer``, whose compute precision defaults to float32 in mixed-precision
          (weakly typed) builds, "to avoid overflow errors" (TensorRT 10.x ``NvInfer.h``,
          ``INormalizationLayer::setComputePrecision``; Python: ``INormalizationLayer.compute_precision``,
          TensorRT 10.3 Python API "Layers"). Setting ``ILayer.precision`` would only cast the layer's
          input first, and ``set_output_type(float32)`` would force float32 outputs and reformat layers
          between FP16 neighbours; ``OBEY_PRECISION_CONSTRAINTS`` serves nothing else, so it is not set.
          The FP16 LayerNorm overflow known from JetPack 6 is that of LayerNorms decomposed into
          Reduce / Pow layers (graphs below opset 17): TensorRT's own build warning ("Running layernorm
          after self-attention ... may cause overflow") names ``INormalizationLayer`` (opset >= 17) as
          the cure, and NVIDIA/TensorRT issue #2781 states its precision is handled by the builder.
    11.x  strongly typed networks only (the precision flags are gone): fp16 parses the fp16 ONNX
          (statistics kept float32 by the exporter's casts); fp32 the float32 one; bf16 is not offered
          (no bf16 graph is exported).

Shapes: both engines are built for ``profiles.profile_shapes(options)`` (N = 1, 32 px .. the max, tuned at
``opt_height`` x ``opt_width``); ``shape_refusal`` says when a frame is outside it, so that the caller
rebuilds the backend for a range covering it (``profiles.options_covering``).

Both engines run on torch CUDA tensors (``set_tensor_address`` + ``execute_async_v3`` on the current
stream); the Euler loop is ``pipeline.sample_depth`` with the engine in place of the DiT.
"""
from __future__ import annotations

import importlib
import logging
import re
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..sampling import DTYPES, sample_depth
from .base import Backend, BackendOptions, BackendUnavailable
from .engine_cache import BuildProgress, EngineCache, ShapeProfile, engine_key
from .profiles import BATCH, GRAPHS, graph_input_shapes, profile_refusal, profile_shapes

ONNX_OPSET = 18
"""Opset of the parsed graphs: TensorRT 10.3's parser has no ``Attention`` op (added in 10.14); from 17 on,
LayerNormalization is one node (``INormalizationLayer``, float32 statistics: see the module docstring)."""
INSTALL_HINT = ("TensorRT Python package not installed: on Jetson it comes with JetPack 6 "
                "(apt install python3-libnvinfer), on desktops from NVIDIA's pip index "
                "(pip install tensorrt --extra-index-url https://pypi.nvidia.com)")
_LOG = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------
# Pure helpers (no TensorRT)
# ------------------------------------------------------------------------------------------------

def trt_major(version: str) -> int:
    """Major version of a TensorRT version string ("10.3.0.30" -> 10).

    Raises:
        ValueError: for a string that does not start with a number.
    """
    match = re.match(r"\s*(\d+)", str(version))
    if match is None:
        raise ValueError(f"not a TensorRT version: {version!r}")
    return int(match.group(1))


def build_plan(trt_version: str, precision: str, compute_capability: tuple[int, int] | None = None) -> dict:
    """How to build an engine of ``precision`` with this TensorRT (see the module docstring).

    Returns:
        dict with ``onnx_dtype`` ("fp32" | "fp16": which exported graph to parse), ``strongly_typed``
        (network creation flag) and ``builder_flags`` / ``cleared_flags`` (``trt.BuilderFlag`` names to
        set / clear).

    Raises:
        ValueError: for an unknown precision.
        BackendUnavailable: for TensorRT < 10, bf16 on TensorRT 11, or bf16 on a GPU below sm 8.0.
    """
    if precision not in DTYPES:
        raise ValueError(f"precision must be one of {sorted(DTYPES)}, got {precision!r}")
    major = trt_major(trt_version)
    if major < 10:
        raise BackendUnavailable(f"TensorRT {trt_version} is too old: 10.x (JetPack 6) or 11.x is needed")
    if precision == "bf16" and compute_capability is not None and tuple(compute_capability) < (8, 0):
        raise BackendUnavailable(f"bf16 needs a GPU of compute capability 8.0 or newer, this one is "
                                 f"{compute_capability[0]}.{compute_capability[1]}: use fp16")
    # fp32 means fp32: TF32 (on by default in TensorRT) would differ from torch's float32 matmuls.
    cleared = ["TF32"] if precision == "fp32" else []
    if major == 10:
        flags = [] if precision == "fp32" else [precision.upper()]
        return dict(onnx_dtype="fp32", strongly_typed=False, builder_flags=flags, cleared_flags=cleared)
    if precision == "bf16":
        raise BackendUnavailable(f"TensorRT {trt_version} takes precision from the ONNX graph and no bf16 "
                                 "graph is exported: use dtype fp16 (or fp32)")
    return dict(onnx_dtype=precision, strongly_typed=True, builder_flags=[], cleared_flags=cleared)


def check_in_profile(profile: ShapeProfile, n: int, height: int, width: int) -> None:
    """Raises ValueError with ``profiles.profile_refusal``'s reason for an input the engines do not take."""
    refusal = profile_refusal(profile, n, height, width)
    if refusal is not None:
        raise ValueError(refusal)


def workspace_bytes(total_memory_bytes: int) -> int:
    """Builder workspace limit: a quarter of the GPU memory, at most 4 GiB (Jetsons share it with the CPU)."""
    return int(min(total_memory_bytes // 4, 4 << 30))


_TORCH_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT32": torch.int32,
                 "INT64": torch.int64, "INT8": torch.int8, "UINT8": torch.uint8, "BOOL": torch.bool}


def torch_dtype(trt_dtype) -> torch.dtype:
    """The torch dtype of a ``trt.DataType`` (or its name, "FLOAT", "DataType.HALF", ...)."""
    name = getattr(trt_dtype, "name", str(trt_dtype)).split(".")[-1]
    if name not in _TORCH_DTYPES:
        raise ValueError(f"no torch dtype for TensorRT {trt_dtype}")
    return _TORCH_DTYPES[name]


def import_tensorrt():
    """The ``tensorrt`` module. Raises BackendUnavailable (with the install hint) when it is missing."""
    try:
        return importlib.import_module("tensorrt")
    except ImportError as error:
        raise BackendUnavailable(f"{INSTALL_HINT} ({error})") from error


# ------------------------------------------------------------------------------------------------
# TensorRT calls (not run in this project's CI: TensorRT is not installable there)
# ------------------------------------------------------------------------------------------------

class EngineBuildError(RuntimeError):
    """The ONNX graph did not parse or TensorRT built no engine; the message has the parser's errors."""


def build_engine(trt, onnx_path: str | Path, input_shapes: dict, plan: dict, workspace: int,
                 logger, progress: BuildProgress | None = None) -> bytes:
    """Serialized engine of ``onnx_path`` built per ``plan`` (``build_plan``) for ``input_shapes``.

    Args:
        trt: the ``tensorrt`` module.
        input_shapes: input name -> (min, opt, max) shape (``graph_input_shapes``); inputs not listed
            must have static shapes.
        workspace: builder workspace limit in bytes.
        logger: a ``trt.ILogger``.
        progress: receives the builder's progress (``IProgressMonitor``) when given.

    Raises:
        EngineBuildError: when parsing or building fails.
    """
    builder = trt.Builder(logger)
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if plan["strongly_typed"] and strongly_typed is not None:  # a later 11.x may drop the (then implicit) flag
        flags |= 1 << int(strongly_typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    for flag in plan["builder_flags"]:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    for flag in plan["cleared_flags"]:
        if hasattr(trt.BuilderFlag, flag):
            config.clear_flag(getattr(trt.BuilderFlag, flag))
    profile = builder.create_optimization_profile()
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        if tensor.name in input_shapes:
            profile.set_shape(tensor.name, *input_shapes[tensor.name])
        elif any(dim < 0 for dim in tensor.shape):
            raise EngineBuildError(f"{onnx_path}: no shape range for the dynamic input {tensor.name} {tensor.shape}")
    config.add_optimization_profile(profile)
    if progress is not None and hasattr(trt, "IProgressMonitor"):
        config.progress_monitor = _progress_monitor(trt, progress)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT built no engine from {onnx_path} (see its log above)")
    return bytes(memoryview(serialized))


def _progress_monitor(trt, progress: BuildProgress):
    """An ``IProgressMonitor`` forwarding to ``progress``."""

    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):
            progress.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name, step):
            return progress.step_complete(phase_name, step)

        def phase_finish(self, phase_name):
            progress.phase_finish(phase_name)

    return Monitor()


class EngineRunner:
    """Runs one engine on torch CUDA tensors: inputs by name in, outputs by name out (new tensors)."""

    def __init__(self, trt, engine, device: torch.device):
        self.engine, self.device = engine, device
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.dtypes = {n: torch_dtype(engine.get_tensor_dtype(n)) for n in names}

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        if sorted(inputs) != sorted(self.inputs):
            raise ValueError(f"engine inputs are {self.inputs}, got {sorted(inputs)}")
        keep = []  # the bound tensors must outlive the enqueue
        for name, tensor in inputs.items():
            tensor = tensor.to(self.device, self.dtypes[name]).contiguous()
            keep.append(tensor)
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            outputs[name] = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        if not self.context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        return outputs


class EngineDiT:
    """The DiT-step engine as a callable with the DiT's signature, for ``pipeline.sample_depth``.

    ``runner`` takes x (N, 4, H, W), semantics (N, (H/16)*(W/16), 1024), timestep (N,) and returns
    {"velocity": (N, 1, H, W)}.
    """

    def __init__(self, runner: Callable[..., dict[str, torch.Tensor]]):
        self.runner = runner

    def __call__(self, x: torch.Tensor, semantics: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        timestep = timestep.reshape(-1).expand(x.shape[0])  # () or (1,) -> (N,)
        return self.runner(x=x, semantics=semantics, timestep=timestep)["velocity"]


# ------------------------------------------------------------------------------------------------
# Backend
# ------------------------------------------------------------------------------------------------

class TensorRTBackend(Backend):
    """TensorRT engines of the encoder and the DiT step (see the module docstring).

    Args (beyond ``Backend``'s):
        log: receives progress lines (export, engine loads and builds); default: this module's logger
            at INFO level.

    Raises (from the constructor): BackendUnavailable when TensorRT is not installed, the device is not
    CUDA, the precision cannot be built with this TensorRT, or the engine build fails.
    """

    name = "tensorrt"
    max_batch = BATCH  # the engines' profiles (min = opt = max batch)

    def __init__(self, dit: nn.Module, encoder: nn.Module, device: torch.device, dtype: str,
                 options: BackendOptions = BackendOptions(), log: Callable[[str], None] | None = None):
        super().__init__(dit, encoder, device, dtype, options)
        trt = import_tensorrt()
        if self.device.type != "cuda":
            raise BackendUnavailable(f"TensorRT runs on CUDA devices, the device is {self.device}")
        if not torch.cuda.is_available():
            raise BackendUnavailable("CUDA is not available (torch.cuda.is_available() is False)")
        self.log = log or _LOG.info
        capability = torch.cuda.get_device_capability(self.device)
        gpu_name = torch.cuda.get_device_name(self.device)
        self.plan = build_plan(trt.__version__, dtype, capability)
        self.profile = profile_shapes(options)
        from .. import onnx_export  # torch.onnx and onnx load only for this backend

        folder = options.folder
        onnx_paths = onnx_export.exported_graphs(
            dit, encoder, folder, dtype=self.plan["onnx_dtype"], opset=ONNX_OPSET, max_height=options.max_height,
            max_width=options.max_width, force=options.force_engine_update, log=self.log)
        logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(logger)  # engines must not outlive their runtime
        workspace = workspace_bytes(torch.cuda.get_device_properties(self.device).total_memory)
        cache = EngineCache(folder, self.log, warn=_LOG.warning if log is None else log)
        self.runners: dict[str, EngineRunner] = {}
        with torch.cuda.device(self.device):
            for graph, onnx_path in zip(GRAPHS, onnx_paths):
                key = engine_key(onnx_path, trt.__version__, gpu_name, capability, dtype, self.profile)

                def build(progress, graph=graph, onnx_path=onnx_path):
                    return build_engine(trt, onnx_path, graph_input_shapes(graph, self.profile), self.plan,
                                        workspace, logger, progress)

                try:
                    # One entry per exported graph (its name has the weights' fingerprint) and precision.
                    engine = cache.load_or_build(f"{Path(onnx_path).stem}.{dtype}", key, build,
                                                 self._runtime.deserialize_cuda_engine,
                                                 force=options.force_engine_update)
                except EngineBuildError as error:
                    raise BackendUnavailable(f"the TensorRT engine build failed: {error}") from error
                self.runners[graph] = EngineRunner(trt, engine, self.device)
        self._dit = EngineDiT(self.runners["dit_step"])

    def shape_refusal(self, n: int, height: int, width: int) -> str | None:
        """Why the engines cannot take an (n, 3, height, width) input (``profiles.profile_refusal``), or None."""
        return profile_refusal(self.profile, n, height, width)

    def _check(self, image: torch.Tensor) -> None:
        """Last guard before an engine runs (callers ask ``shape_refusal`` first)."""
        n, _, height, width = image.shape
        check_in_profile(self.profile, n, height, width)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        self._check(image)
        with torch.cuda.device(self.device):
            return self.runners["encoder"](image=image)["semantics"].float()

    def sample(self, image, semantics, noise, timesteps):
        self._check(image)
        with torch.cuda.device(self.device):
            return sample_depth(self._dit, image.float(), semantics.float(), noise, timesteps).float()
