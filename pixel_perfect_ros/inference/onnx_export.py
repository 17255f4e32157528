"""ONNX graphs of a PPD model: the semantics encoder and one DiT step (dynamo exporter, dynamic N, H, W).

Graphs (inputs and outputs are float32 / int32 at the boundary whatever the graph's precision):

    encoder.onnx    image (N, 3, H, W) float32 RGB in [0, 1] -> semantics (N, (H/16)*(W/16), 1024) float32
    dit_step.onnx   x (N, 4, H, W) float32 [latent, RGB - 0.5], semantics (N, (H/16)*(W/16), 1024) float32,
                    timestep (N,) int32 raw timestep in [-1, 1000] -> velocity (N, 1, H, W) float32

N, H and W are dynamic: N in [1, MAX_BATCH], H and W multiples of 16 in [32, max_height / max_width].

fp16 graphs are exports of a ``.half()`` copy with explicit casts: the graph casts its float32 inputs to
float16 inside (the DiT's semantics stay float32 until their L2 normalisation), the timestep embedding,
RoPE tables and position-embedding resize are computed in float32 by the modules themselves, and every
LayerNormalization and Softmax node of the exported graph is wrapped in Cast-to-float32 / Cast-back
nodes, so their statistics stay float32 (``_keep_statistics_fp32``; the known cause of wrong ViT-depth
outputs under TensorRT FP16 on JetPack 6).

Numerics vs float32 PyTorch in ONNX Runtime (CPU), bundled model, 128x96 .. 592x592: fp32 DiT step
<= 7e-6, encoder <= 5e-4 (ORT's antialiased Resize of the MoGe-2 encoder differs from PyTorch's by up to
7e-5 on the image); fp16 both <= 4.1e-3. ``tools/export.py`` states the tolerances it enforces.

``exported_graphs`` caches: file names carry the weights' fingerprint, dtype, opset, shape range and
torch version; writes are atomic, files readable by other users (``engine_cache.commit_file``); weights
above ``EXTERNAL_DATA_BYTES`` go to ``<graph>.onnx.data``.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import onnx
import torch
from onnx import TensorProto, helper
from torch import nn

from ..model.dit import SEMANTICS_DIM
from .backends.engine_cache import FILE_MODE, commit_file, make_cache_folder

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
"""Graph precisions -> torch dtype of the exported weights."""
MAX_BATCH = 16
"""Largest batch the dynamic N covers."""
MIN_SIZE_PX = 32
"""Smallest height / width the dynamic shapes cover (2 tokens of 16 px: torch.export specialises 1)."""
ENCODER_INPUTS, ENCODER_OUTPUTS = ["image"], ["semantics"]
DIT_INPUTS, DIT_OUTPUTS = ["x", "semantics", "timestep"], ["velocity"]


# ------------------------------------------------------------------------------------------------
# Graph wrappers: float32 boundary, casts inside
# ------------------------------------------------------------------------------------------------

class _EncoderGraph(nn.Module):
    """``forward_semantics`` with a float32 image in and float32 tokens out."""

    def __init__(self, encoder: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.encoder, self.dtype = encoder, dtype

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.encoder.forward_semantics(image.to(self.dtype)).float()  # (N, h*w, C)


class _DiTStepGraph(nn.Module):
    """One DiT evaluation with float32 x / semantics in and float32 velocity out."""

    def __init__(self, dit: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.dit, self.dtype = dit, dtype

    def forward(self, x: torch.Tensor, semantics: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        # semantics stay float32: the fusion L2-normalises them before casting to the model dtype
        return self.dit(x.to(self.dtype), semantics, timestep).float()  # (N, 1, H, W)


def _copy_as(module: nn.Module, dtype: str) -> nn.Module:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return copy.deepcopy(module).eval().requires_grad_(False).to(device="cpu", dtype=DTYPES[dtype])


def _check_range(max_height: int, max_width: int) -> None:
    for name, value in (("max_height", max_height), ("max_width", max_width)):
        if value < MIN_SIZE_PX or value % 16:
            raise ValueError(f"{name} must be a multiple of 16 >= {MIN_SIZE_PX}, got {value}")


def _dims(max_height: int, max_width: int):
    dim = torch.export.Dim
    batch = dim("N", min=1, max=MAX_BATCH)
    rows = dim("rows", min=MIN_SIZE_PX // 16, max=max_height // 16)
    cols = dim("cols", min=MIN_SIZE_PX // 16, max=max_width // 16)
    return batch, rows, cols


# ------------------------------------------------------------------------------------------------
# Export
# ------------------------------------------------------------------------------------------------

def export_encoder(encoder: nn.Module, path: str | Path, *, dtype: str = "fp32", opset: int = 18,
                   max_height: int = 768, max_width: int = 1024) -> Path:
    """Export a semantics encoder (``DepthAnythingV2Semantics`` or ``MoGe2Semantics``) to ``path``.

    Graph: ``image`` (N, 3, H, W) float32 RGB in [0, 1] -> ``semantics`` (N, (H/16)*(W/16), out_dim)
    float32; N, H, W dynamic (see the module docstring). The DINOv2 position-embedding resize is
    exported through ``DinoVisionTransformer._traceable_pos_encoding`` (matmuls, same numerics).

    Raises:
        ValueError: for a bad dtype or shape range.
        NotImplementedError: for DINOv2 ``*_reg`` backbones (antialiased position-embedding resize).
    """
    _check_range(max_height, max_width)
    graph = _EncoderGraph(_copy_as(encoder, dtype), DTYPES[dtype])
    batch, rows, cols = _dims(max_height, max_width)
    image = torch.rand(2, 3, 16 * 3, 16 * 4)
    dynamic = {"image": {0: batch, 2: 16 * rows, 3: 16 * cols}}
    return _export(graph, (image,), dynamic, ENCODER_INPUTS, ENCODER_OUTPUTS, Path(path), dtype, opset)


def export_dit_step(dit: nn.Module, path: str | Path, *, dtype: str = "fp32", opset: int = 18,
                    max_height: int = 768, max_width: int = 1024) -> Path:
    """Export one evaluation of the PPD ``DiT`` to ``path`` (graph in the module docstring).

    Raises:
        ValueError: for a bad dtype or shape range.
    """
    _check_range(max_height, max_width)
    graph = _DiTStepGraph(_copy_as(dit, dtype), DTYPES[dtype])
    batch, rows, cols = _dims(max_height, max_width)
    x = torch.randn(2, 4, 16 * 3, 16 * 4)
    semantics = torch.randn(2, 3 * 4, SEMANTICS_DIM)
    timestep = torch.tensor([500, 500], dtype=torch.int32)
    dynamic = {"x": {0: batch, 2: 16 * rows, 3: 16 * cols},
               "semantics": {0: batch, 1: torch.export.Dim.AUTO},
               "timestep": {0: batch}}
    return _export(graph, (x, semantics, timestep), dynamic, DIT_INPUTS, DIT_OUTPUTS, Path(path), dtype, opset)


def _export(graph: nn.Module, args: tuple, dynamic: dict, inputs: list[str], outputs: list[str], path: Path,
            dtype: str, opset: int) -> Path:
    """Dynamo export to a temporary file next to ``path``, fp16 casts, then an atomic rename."""
    make_cache_folder(path.parent)
    # the exporter prints its stages to stdout; errors still raise with their own message
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(graph.eval(), args, dynamo=True, opset_version=opset, input_names=inputs,
                                    output_names=outputs, dynamic_shapes=dynamic, verbose=False)
    model = program.model_proto
    if dtype == "fp16":
        _keep_statistics_fp32(model.graph)
    _atomic_save(model, path)
    return path


EXTERNAL_DATA_BYTES = 1 << 30
"""Graphs whose weights exceed this keep them in ``<name>.onnx.data`` beside the graph (protobuf's 2 GB
limit: the official DiT is ~2 GB in float32); smaller graphs are one file."""


def _atomic_save(model: onnx.ModelProto, path: Path) -> None:
    """Check and write ``model`` to a temporary file, then rename it to ``path`` (the rename commits it;
    external weights, when written, go to ``<path>.data`` first)."""
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    weight_bytes = sum(len(t.raw_data) for t in model.graph.initializer)
    try:
        if weight_bytes > EXTERNAL_DATA_BYTES:
            onnx.save_model(model, temp, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=f"{path.name}.data", size_threshold=1024)
            os.chmod(path.parent / f"{path.name}.data", FILE_MODE)  # written under the umask
        else:
            onnx.save_model(model, temp)
        onnx.checker.check_model(temp)  # by path: also valid for external weights
        commit_file(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


_FP32_STATISTICS_OPS = ("LayerNormalization", "Softmax")


def _keep_statistics_fp32(graph: onnx.GraphProto) -> int:
    """Wrap every LayerNormalization / Softmax node in Cast(float32) ... Cast(float16); returns how many.

    Applied to fp16 graphs: the node then computes in float32 on float16 tensors (its float16 weight
    inputs are cast too); its outputs keep their names and float16 types, so the rest is unchanged.
    """
    nodes, wrapped = [], 0
    for node in graph.node:
        if node.op_type not in _FP32_STATISTICS_OPS:
            nodes.append(node)
            continue
        wrapped += 1
        base = f"{node.name or node.op_type}_stat{wrapped}"
        for i, name in enumerate(node.input):
            if name:
                cast = f"{base}_fp32_in{i}"
                nodes.append(helper.make_node("Cast", [name], [cast], name=cast, to=TensorProto.FLOAT))
                node.input[i] = cast
        casts_back = []
        for i, name in enumerate(node.output):
            if name:
                raw = f"{base}_fp32_out{i}"
                node.output[i] = raw
                casts_back.append(helper.make_node("Cast", [raw], [name], name=f"{raw}_fp16", to=TensorProto.FLOAT16))
        nodes += [node, *casts_back]
    del graph.node[:]
    graph.node.extend(nodes)
    return wrapped


# ------------------------------------------------------------------------------------------------
# Cache: fingerprinted file names
# ------------------------------------------------------------------------------------------------

def model_fingerprint(*modules: nn.Module) -> str:
    """16-hex-digit sha256 over the modules' state dicts (module class, names, dtypes, shapes, bytes)."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(type(module).__qualname__.encode())
        for name, tensor in module.state_dict().items():
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def graph_names(dit: nn.Module, encoder: nn.Module, *, dtype: str, opset: int, max_height: int,
                max_width: int) -> tuple[str, str]:
    """File names of the encoder and DiT-step graphs: fingerprint, dtype, opset, shape range, torch."""
    torch_version = torch.__version__.split("+")[0]
    tail = f"{dtype}_opset{opset}_max{max_width}x{max_height}_torch{torch_version}.onnx"
    return (f"encoder_{model_fingerprint(encoder)}_{tail}", f"dit_step_{model_fingerprint(dit)}_{tail}")


def exported_graphs(dit: nn.Module, encoder: nn.Module, folder: str | Path, *, dtype: str, opset: int = 18,
                    max_height: int, max_width: int, force: bool = False,
                    log: Callable[[str], None] = print) -> tuple[Path, Path]:
    """(encoder.onnx, dit_step.onnx) in ``folder``, exported now unless a matching export is there.

    A file is reused when its name (fingerprint of the weights, dtype, opset, shape range, torch
    version; ``graph_names``) matches; ``force`` exports again. Writes are atomic.
    """
    folder = Path(folder).expanduser()
    encoder_name, dit_name = graph_names(dit, encoder, dtype=dtype, opset=opset, max_height=max_height,
                                         max_width=max_width)
    paths = folder / encoder_name, folder / dit_name
    for what, export, module, path in (("semantics encoder", export_encoder, encoder, paths[0]),
                                       ("DiT step", export_dit_step, dit, paths[1])):
        if path.is_file() and not force:
            continue
        log(f"exporting the {what} to ONNX ({dtype}, opset {opset}, up to {max_width}x{max_height}): {path}")
        start = time.perf_counter()
        export(module, path, dtype=dtype, opset=opset, max_height=max_height, max_width=max_width)
        log(f"exported the {what} in {time.perf_counter() - start:.1f} s")
    return paths
