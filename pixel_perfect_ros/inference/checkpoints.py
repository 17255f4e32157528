"""Strict loading of the official checkpoints (PPD_SPEC 4).

The official code loads with ``strict=False``, which silently leaves a random DiT when a prefix is
wrong. Here every missing, unexpected or mis-shaped key is an error naming the keys and the file, except
prefixes listed below as ignored on purpose, each with its reason. Files are read with
``torch.load(weights_only=True)`` (no code execution) and models are built on the meta device and
filled with the file's tensors (no random init of 500M parameters, no second copy in memory).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import safetensors.torch
import torch
from torch import nn

from ..model.dinov2 import DINOV2_ARCHITECTURES
from ..model.dit import DiT, dit_config_from_state_dict
from ..model.dit_video import VideoDiT, video_dit_config_from_state_dict
from ..model.moge2 import MoGe2Model
from ..model.pi3 import Pi3Semantics, pi3_config_from_state_dict, pi3_semantics_from_config
from ..model.semantics import DepthAnythingV2Semantics, MoGe2Semantics

PPD_PREFIX = "dit."
"""Prefix of the DiT keys in ``ppd.pth`` / ``ppd_moge.pth`` (``PixelPerfectDepth.dit``)."""

PPVD_PREFIX = "dit_video."
"""Prefix of the DiT_Video keys in ``ppvd.pth`` (``PixelPerfectVideoDepth.dit_video``)."""

PPD_IGNORED = {
    "sem_encoder.": "the semantics encoder is loaded from its own checkpoint (--semantics); whether the "
    "official ppd.pth also carries it could not be checked, so its keys are accepted and unused",
}
PPVD_IGNORED = {
    "sem_encoder.": "the Pi3 semantics encoder is loaded from its own checkpoint; whether the official "
    "ppvd.pth also carries it could not be checked, so its keys are accepted and unused",
}
DA2_IGNORED = {
    "depth_head.": "PPD builds Depth Anything v2 without its DPT depth head; only the ViT (pretrained.*) is used",
}
MOGE2_IGNORED = {
    prefix: "only the MoGe-2 encoder provides PPD's semantics; the heads serve MoGe-2's own metric depth"
    for prefix in ("neck.", "points_head.", "normal_head.", "mask_head.", "scale_head.")
}

SEMANTICS_TYPES = ("da2", "moge2")

OFFICIAL_CHECKPOINTS = {
    "ppd.pth": "PPD DiT for Depth Anything v2 semantics: huggingface.co/gangweix/Pixel-Perfect-Depth (file ppd.pth)",
    "depth_anything_v2_vitl.pth": "Depth Anything v2 ViT-L: huggingface.co/depth-anything/Depth-Anything-V2-Large",
    "ppd_moge.pth": "PPD DiT for MoGe-2 semantics: Google Drive link in the README of "
    "github.com/gangweix/pixel-perfect-depth",
    "moge2.pt": "MoGe-2 ViT-L: huggingface.co/Ruicheng/moge-2-vitl-normal (file model.pt, saved as moge2.pt)",
}
"""Official file name -> where users get it (none can be fetched at run time here)."""


def download_instructions(directory: str | Path = "checkpoints") -> str:
    """What to download by hand and where to put it, for error messages."""
    lines = [f"  {name:<28} {where}" for name, where in OFFICIAL_CHECKPOINTS.items()]
    return (
        "Download the official weights by hand (nothing is fetched automatically):\n"
        + "\n".join(lines)
        + f"\nand put them in {directory}/ (DA2 variant: ppd.pth + depth_anything_v2_vitl.pth; MoGe-2 "
        "variant: ppd_moge.pth + moge2.pt), or name them with --checkpoint and --semantics."
    )


PPVD_CHECKPOINTS = {
    "ppvd.pth": "PPVD video DiT: huggingface.co/gangweix/Pixel-Perfect-Depth (file ppvd.pth)",
    "pi3.safetensors": "Pi3: huggingface.co/yyfz233/Pi3 (file model.safetensors, saved as pi3.safetensors)",
}
"""Official PPVD file name -> where users get it (nothing is fetched at run time)."""


def video_download_instructions(directory: str | Path = "checkpoints") -> str:
    """What to download by hand for PPVD and where to put it, for error messages."""
    lines = [f"  {name:<20} {where}" for name, where in PPVD_CHECKPOINTS.items()]
    return ("Download the official weights by hand (nothing is fetched automatically):\n" + "\n".join(lines)
            + f"\nand put them in {directory}/, or name them with --checkpoint and --semantics.")


_MAX_LISTED = 8


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or does not match the model it should fill."""


def read_checkpoint(path: str | Path) -> dict:
    """``torch.load`` a checkpoint on the CPU with ``weights_only=True``.

    Raises:
        CheckpointError: if the file is missing or is not a readable torch checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt / foreign files
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {exc}") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, expected a dict of tensors")
    return obj


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _MAX_LISTED else "")


def load_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], path: Path, ignored: Mapping[str, str]):
    """Fill a (meta-device) ``model`` with ``state_dict``, accepting only the ``ignored`` extra prefixes.

    Raises:
        CheckpointError: naming the file and the missing, unexpected and mis-shaped keys.
    """
    expected = model.state_dict()
    used = {k: v for k, v in state_dict.items() if not k.startswith(tuple(ignored))}
    missing = sorted(set(expected) - set(used))
    unexpected = sorted(set(used) - set(expected))
    misshaped = sorted(
        f"{k} {tuple(used[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in set(used) & set(expected)
        if tuple(used[k].shape) != tuple(expected[k].shape)
    )
    problems = [
        f"{label}: {_listing(keys)}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped))
        if keys
    ]
    if problems:
        raise CheckpointError(f"{path} does not match {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict({k: v.float() for k, v in used.items()}, strict=True, assign=True)
    unfilled = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if unfilled:
        raise CheckpointError(f"{type(model).__name__} has tensors no checkpoint key fills: {_listing(unfilled)}")
    return model


def _strip(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove ``prefix`` from the keys that have it; keep the others unchanged."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


def _load_prefixed_dit(path: str | Path, prefix: str, what: str, config_from_state_dict, model_class, ignored):
    """A DiT-like module from a flat checkpoint whose keys carry ``prefix``, its architecture read from
    the tensor shapes (built on the meta device, then the file's tensors assigned)."""
    path = Path(path)
    state = read_checkpoint(path)
    dit_keys = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not dit_keys:
        raise CheckpointError(f"{path} has no '{prefix}*' keys, so it is not a {what}; "
                              f"first keys: {_listing(sorted(state))}")
    try:
        config = config_from_state_dict(dit_keys)
        with torch.device("meta"):
            model = model_class(**config)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    return load_strict(model, _strip(state, prefix), path, ignored)


def load_ppd_dit(path: str | Path) -> DiT:
    """The DiT of an official ``ppd.pth`` / ``ppd_moge.pth`` (keys ``dit.*``).

    The architecture (hidden size, depth, heads, ...) is read from the tensor shapes, so the official
    full-size file and small test files in the same format both load.
    """
    return _load_prefixed_dit(path, PPD_PREFIX, "PPD checkpoint (ppd.pth / ppd_moge.pth)",
                              dit_config_from_state_dict, DiT, PPD_IGNORED)


def load_ppvd_dit(path: str | Path) -> VideoDiT:
    """The DiT_Video of an official ``ppvd.pth`` (flat dict, keys ``dit_video.*``); sizes from the shapes."""
    return _load_prefixed_dit(path, PPVD_PREFIX, "PPVD checkpoint (ppvd.pth)", video_dit_config_from_state_dict,
                              VideoDiT, PPVD_IGNORED)


def _dinov2_architecture(embed_dim: int, depth: int, registers: int) -> str:
    for name, arch in DINOV2_ARCHITECTURES.items():
        if (arch["embed_dim"], arch["depth"], arch.get("num_register_tokens", 0)) == (embed_dim, depth, registers):
            return name
    raise CheckpointError(f"no known DINOv2 architecture with width {embed_dim}, {depth} blocks, {registers} registers")


def load_da2_semantics(path: str | Path) -> DepthAnythingV2Semantics:
    """The DINOv2 encoder of an official Depth Anything v2 checkpoint (``pretrained.*`` keys).

    The ViT size (vits/vitb/vitl) is recognised from the position-embedding width and block count.
    """
    path = Path(path)
    state = read_checkpoint(path)
    if "pretrained.pos_embed" not in state:
        raise CheckpointError(
            f"{path} has no 'pretrained.pos_embed', so it is not a Depth Anything v2 checkpoint; "
            f"first keys: {_listing(sorted(state))}"
        )
    embed_dim = state["pretrained.pos_embed"].shape[-1]
    depth = len({k.split(".")[2] for k in state if k.startswith("pretrained.blocks.")})
    try:
        with torch.device("meta"):
            model = DepthAnythingV2Semantics.from_backbone_name(_dinov2_architecture(embed_dim, depth, 0))
    except (CheckpointError, NotImplementedError) as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    return load_strict(model, state, path, DA2_IGNORED)


def load_moge2_semantics(path: str | Path) -> MoGe2Semantics:
    """The encoder of an official MoGe-2 ``model.pt`` (``{'model_config', 'model'}``; ``encoder.*``)."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    if not {"model_config", "model"} <= set(ckpt):
        raise CheckpointError(
            f"{path} is not a MoGe-2 model.pt: expected the entries 'model_config' and 'model', "
            f"found {_listing(sorted(ckpt))}"
        )
    try:
        with torch.device("meta"):
            model = MoGe2Semantics.from_config(ckpt["model_config"]["encoder"])
    except (KeyError, TypeError, ValueError, NotImplementedError) as exc:
        raise CheckpointError(f"{path}: unusable encoder config {ckpt['model_config'].get('encoder')!r}: {exc}") from exc
    return load_strict(model, ckpt["model"], path, MOGE2_IGNORED)


def load_moge2_model(path: str | Path, model_kwargs: Mapping | None = None) -> MoGe2Model:
    """The full MoGe-2 model (encoder, neck, heads, scale head) of an official ``model.pt``.

    Built from the file's own ``model_config`` on the meta device and filled strictly: every key of the
    file must be used and every tensor of the model filled (upstream loads with ``strict=False``).

    Args:
        path: ``{'model_config', 'model'}`` checkpoint (``moge2.pt``).
        model_kwargs: optional top-level ``model_config`` overrides, merged with ``dict.update`` as
            upstream's ``from_pretrained(model_kwargs=...)`` (e.g. ``{'remap_output': 'linear'}``).

    Raises:
        CheckpointError: for a missing / unreadable file, a file not in this format, an unusable
            config, or missing / unexpected / mis-shaped keys (named, with the file).
    """
    path = Path(path)
    ckpt = read_checkpoint(path)
    if not {"model_config", "model"} <= set(ckpt) or not isinstance(ckpt["model_config"], Mapping):
        raise CheckpointError(
            f"{path} is not a MoGe-2 model.pt: expected the entries 'model_config' (dict) and 'model', "
            f"found {_listing(sorted(ckpt))}"
        )
    config = dict(ckpt["model_config"])
    config.update(model_kwargs or {})
    try:
        with torch.device("meta"):
            model = MoGe2Model.from_config(config)
    except (KeyError, TypeError, ValueError, NotImplementedError) as exc:
        raise CheckpointError(f"{path}: unusable MoGe-2 model_config: {exc}") from exc
    return load_strict(model, ckpt["model"], path, ignored={}).eval()


def load_semantics_encoder(path: str | Path, semantics_type: str) -> nn.Module:
    """The semantics encoder for ``semantics_type`` "da2" or "moge2" from its official checkpoint."""
    if semantics_type == "da2":
        return load_da2_semantics(path)
    if semantics_type == "moge2":
        return load_moge2_semantics(path)
    raise ValueError(f"semantics_type must be one of {SEMANTICS_TYPES}, got {semantics_type!r}")


# ---------------------------------------------------------------------------------------------------
# Pi3 (PPVD's semantics encoder)
# ---------------------------------------------------------------------------------------------------

PI3_IGNORED = {
    prefix: "unused by forward_semantics: PPVD takes only Pi3's encoder and decoder tokens, not its "
    "point / confidence / camera predictions, so these heads are not built"
    for prefix in ("point_decoder.", "point_head.", "conf_decoder.", "conf_head.", "camera_decoder.", "camera_head.")
}


def pi3_semantics_from_state_dict(state: Mapping[str, torch.Tensor], path: str | Path) -> Pi3Semantics:
    """Build a :class:`Pi3Semantics` on the meta device from official Pi3 keys and fill it strictly.

    Sizes come from the tensor shapes (:func:`~pixel_perfect_ros.model.pi3.pi3_config_from_state_dict`);
    the heads in :data:`PI3_IGNORED` are skipped; ``path`` only names the source in errors.

    Raises:
        CheckpointError: not Pi3 keys, or missing / unexpected / mis-shaped keys (named).
    """
    path = Path(path)
    try:
        config = pi3_config_from_state_dict(state)
        with torch.device("meta"):
            model = pi3_semantics_from_config(config)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}; first keys: {_listing(sorted(state))}") from exc
    return load_strict(model, state, path, PI3_IGNORED)


def load_pi3_semantics(path: str | Path) -> Pi3Semantics:
    """Encoder + decoder of the official Pi3 ``model.safetensors`` (flat official key names).

    Raises:
        CheckpointError: for a missing or unreadable file, or keys that do not match (named).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = safetensors.torch.load_file(path, device="cpu")
    except Exception as exc:  # safetensors raises its own error types for corrupt / foreign files
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
    return pi3_semantics_from_state_dict(state, path)
