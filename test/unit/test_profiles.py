"""The shape range of the compiled backends (inference/backends/profiles.py): the processing sizes the
node runs, the options that cover them, and the TensorRT profile built from those options. Pure: no
TensorRT, no ONNX Runtime session."""
import pytest

from pixel_perfect_ros.inference.backends import BackendOptions
from pixel_perfect_ros.inference.backends import tensorrt_backend as trtb
from pixel_perfect_ros.inference.backends.engine_cache import ShapeProfile
from pixel_perfect_ros.inference.backends.profiles import (
    expected_processing_sizes, options_covering, profile_refusal)
from pixel_perfect_ros.inference.preprocess import DEFAULT_TARGET_AREA, processing_size

# camera (height, width) -> processing (H, W) at the default area 1024 * 768
CAMERAS = {
    (720, 1280): (672, 1184),   # 16:9
    (1080, 1920): (672, 1184),  # 16:9
    (480, 640): (768, 1024),    # 4:3
    (1024, 768): (1024, 768),   # portrait 4:3: 768 wide, 1024 high
}
ULTRAWIDE = (1080, 2520)  # 21:9
"""A camera outside a 4:3-only range: processing 576 x 1360 (H x W)."""


def default_options() -> BackendOptions:
    """What the node derives without a known camera (ros/parameters.py: from an empty range)."""
    return options_covering(BackendOptions(max_height=0, max_width=0),
                            expected_processing_sizes(DEFAULT_TARGET_AREA))


def tensorrt_backend(options: BackendOptions) -> trtb.TensorRTBackend:
    """A TensorRTBackend with only its profile set (no TensorRT, no engines): enough for shape_refusal."""
    backend = object.__new__(trtb.TensorRTBackend)
    backend.profile = trtb.profile_shapes(options)
    return backend


def input_shapes_at(graph: str, height: int, width: int) -> dict[str, tuple[int, ...]]:
    """Each input's shape for one height x width frame."""
    frame = ShapeProfile((1, height, width), (1, height, width), (1, height, width))
    return {name: shapes[0] for name, shapes in trtb.graph_input_shapes(graph, frame).items()}


@pytest.mark.parametrize("camera, processing", CAMERAS.items())
def test_default_range_covers_the_usual_cameras_in_both_orientations(camera, processing):
    assert processing_size(*camera, DEFAULT_TARGET_AREA) == processing
    options = default_options()
    assert (options.max_height, options.max_width) == (1184, 1184)
    assert (options.opt_height, options.opt_width) == (768, 1024)  # tuned for a 4:3 landscape camera
    profile = trtb.profile_shapes(options)
    backend = tensorrt_backend(options)
    for height, width in (processing, processing[::-1]):
        assert height <= options.max_height and width <= options.max_width
        trtb.check_in_profile(profile, 1, height, width)
        assert backend.shape_refusal(1, height, width) is None
        for graph in ("encoder", "dit_step"):
            frame = input_shapes_at(graph, height, width)
            for name, (low, opt, high) in trtb.graph_input_shapes(graph, profile).items():
                assert all(a <= b <= c for a, b, c in zip(low, frame[name], high)), (graph, name)
                assert all(a <= b <= c for a, b, c in zip(low, opt, high)), (graph, name)


def test_expected_sizes_put_the_known_camera_first_in_both_orientations():
    assert expected_processing_sizes(DEFAULT_TARGET_AREA) == [(768, 1024), (1024, 768), (672, 1184), (1184, 672)]
    assert expected_processing_sizes(DEFAULT_TARGET_AREA, [(1080, 1920), (720, 1280)]) == [(672, 1184), (1184, 672)]


def test_a_known_camera_tunes_the_engines_for_its_own_processing_size():
    options = options_covering(default_options(), expected_processing_sizes(DEFAULT_TARGET_AREA, [(1080, 1920)]))
    assert (options.opt_height, options.opt_width) == (672, 1184)
    assert trtb.profile_shapes(options) == ShapeProfile((1, 32, 32), (1, 672, 1184), (1, 1184, 1184))


def test_options_covering_never_narrows():
    wide = BackendOptions(max_height=2048, max_width=2048, opt_height=1024, opt_width=2048)
    covered = options_covering(wide, [(768, 1024)])
    assert (covered.max_height, covered.max_width) == (2048, 2048)
    assert (covered.opt_height, covered.opt_width) == (768, 1024)
    assert options_covering(wide, []) == wide
    grown = options_covering(BackendOptions(), [(672, 1184)])  # 768 x 1024 -> each side its maximum
    assert (grown.max_height, grown.max_width) == (768, 1184)


def test_a_camera_outside_a_4_to_3_range_is_refused_with_the_reason_then_covered():
    four_three = options_covering(BackendOptions(max_height=0, max_width=0),
                                  expected_processing_sizes(DEFAULT_TARGET_AREA, [(480, 640)]))
    height, width = processing_size(*ULTRAWIDE, DEFAULT_TARGET_AREA)
    assert (height, width) == (576, 1360) and width > four_three.max_width
    refusal = tensorrt_backend(four_three).shape_refusal(1, height, width)
    assert refusal.startswith("input N,H,W 1x576x1360 is outside the TensorRT engines' shape range "
                              "(N,H,W 1x32x32 .. 1x1024x1024 (opt 1x768x1024))")
    assert "must be rebuilt for a range that covers it" in refusal
    # what the run-time fallback does with it: rebuild for the frame in both orientations
    rebuilt = options_covering(four_three, [(height, width), (width, height)])
    assert tensorrt_backend(rebuilt).shape_refusal(1, height, width) is None
    assert (rebuilt.opt_height, rebuilt.opt_width) == (576, 1360)


def test_profile_refusal_names_batch_and_alignment():
    profile = ShapeProfile((1, 32, 32), (1, 768, 1024), (1, 768, 1024))
    assert profile_refusal(profile, 1, 768, 1024) is None
    assert "input N,H,W 2x768x1024 is outside" in profile_refusal(profile, 2, 768, 1024)
    assert "input N,H,W 1x16x16 is outside" in profile_refusal(profile, 1, 16, 16)
    assert profile_refusal(profile, 1, 100, 128, "exported ONNX graphs") == (
        "the exported ONNX graphs take heights and widths that are multiples of 16, got 100 x 128")
