"""Processing size and the official resize, against the table recorded from the official code."""
import json

import cv2
import numpy as np
import pytest
import torch

from pixel_perfect_ros.inference.preprocess import (
    image_to_tensor,
    processing_size,
    resize_depth,
    resize_to_processing,
)


@pytest.fixture(scope="module")
def resize_table(fixtures_dir):
    return json.loads((fixtures_dir / "ppvd_windowing_and_resize.json").read_text())["resize_keep_aspect"]


def test_processing_size_matches_official_table(resize_table):
    assert len(resize_table) == 13
    for size, expected in resize_table.items():
        height, width = map(int, size.split("x"))
        assert processing_size(height, width) == tuple(expected["resized_hw"]), size


def test_resize_uses_official_interpolation(resize_table):
    rng = np.random.default_rng(0)
    for size, expected in resize_table.items():
        height, width = map(int, size.split("x"))
        if height * width > 2_000_000:
            continue
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        out_h, out_w = expected["resized_hw"]
        interp = {"INTER_AREA": cv2.INTER_AREA, "INTER_CUBIC": cv2.INTER_CUBIC}[expected["interp"]]
        np.testing.assert_array_equal(
            resize_to_processing(image), cv2.resize(image, (out_w, out_h), interpolation=interp), err_msg=size
        )


def test_target_area_is_a_parameter():
    assert processing_size(480, 640, target_area=512 * 384) == (384, 512)
    assert processing_size(7, 9, target_area=256) == (16, 16)


def test_image_to_tensor_layout_and_range():
    image = np.zeros((2, 3, 3), np.uint8)
    image[0, 1] = (255, 51, 0)
    x = image_to_tensor(image)
    assert x.shape == (1, 3, 2, 3) and x.dtype == torch.float32
    assert x[0, :, 0, 1].tolist() == pytest.approx([1.0, 0.2, 0.0])
    assert x.sum().item() == pytest.approx(1.2)


def test_resize_depth_is_bilinear_and_identity_at_same_size():
    depth = torch.tensor([[[[0.0, 1.0]]]])
    assert resize_depth(depth, 1, 2) is depth
    torch.testing.assert_close(resize_depth(depth, 1, 4), torch.tensor([[[[0.0, 0.25, 0.75, 1.0]]]]))


@pytest.mark.parametrize(
    "image",
    [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3), np.float32),
     np.zeros((0, 4, 3), np.uint8)],
)
def test_bad_images_are_rejected(image):
    with pytest.raises(ValueError, match="RGB image|empty"):
        resize_to_processing(image)


@pytest.mark.parametrize("args", [(0, 10), (10, -1), (10, 10, 100)])
def test_bad_sizes_are_rejected(args):
    with pytest.raises(ValueError):
        processing_size(*args)
