"""The bundled default models: a tiny PPD and a tiny PPVD trained on the synthetic world (pixel_perfect_ros/synthetic).

They let the node and the CLIs run out of the box in image and video mode, with no download, and give the
tests models whose accuracy can be checked. They know only synthetic rooms: for real cameras use the
official checkpoints. Model card: docs/bundled-model.md.
"""
from pathlib import Path

BUNDLED_DIR = Path(__file__).resolve().parents[1] / "data" / "bundled"
CHECKPOINT = BUNDLED_DIR / "ppd.pth"
"""The tiny PPD DiT (official ``ppd.pth`` format, fp16 tensors)."""
SEMANTICS = BUNDLED_DIR / "moge2.pt"
"""Its semantics encoder (MoGe-2 ``model.pt`` format, encoder only, fp16 tensors)."""
SEMANTICS_TYPE = "moge2"
TARGET_AREA = 128 * 96
"""Processing area it was trained at, pixels; larger areas leave its training distribution."""
VIDEO_CHECKPOINT = BUNDLED_DIR / "ppvd.pth"
"""The tiny PPVD video DiT (official ``ppvd.pth`` format); its network size comes from the file."""
VIDEO_SEMANTICS = BUNDLED_DIR / "pi3.safetensors"
"""Its Pi3 semantics encoder (official Pi3 ``model.safetensors`` format)."""
