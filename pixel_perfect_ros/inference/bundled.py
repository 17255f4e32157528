"""The bundled default model: a tiny PPD trained on the synthetic world (pixel_perfect_ros/synthetic).

It lets the node and the CLIs run out of the box, with no download, and gives the tests a model whose
accuracy can be checked. It knows only synthetic rooms: for real cameras use the official checkpoints.
Model card: docs/bundled-model.md.
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
