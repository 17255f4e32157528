"""Image/CameraInfo pairing: stamp and latest modes, pending images, drops, history."""
import pytest

from pixel_perfect_ros.ros.pairing import CameraInfoPairer, Pair

MS = 1_000_000


class FakeClock:
    """A settable nanosecond clock."""

    def __init__(self) -> None:
        self.now_ns = 0

    def __call__(self) -> int:
        return self.now_ns


def stamp_pairer(tolerance_ns: int = 5 * MS, **kwargs) -> CameraInfoPairer:
    return CameraInfoPairer(tolerance_ns, "stamp", **kwargs)


def test_stamp_mode_pairs_equal_stamps():
    pairer = stamp_pairer(0)
    assert pairer.add_info(100, "cam", "info100") is None
    assert pairer.add_image(100, "cam", "img100") == Pair("img100", "info100")
    assert (pairer.paired, pairer.dropped_unpaired, pairer.pending) == (1, 0, None)


def test_stamp_mode_picks_closest_within_tolerance():
    pairer = stamp_pairer(10 * MS)
    for stamp_ns in (0, 30 * MS, 36 * MS, 48 * MS):
        pairer.add_info(stamp_ns, "cam", stamp_ns)
    assert pairer.add_image(38 * MS, "cam", "img").info == 36 * MS
    assert pairer.add_image(42 * MS, "cam", "img").info == 48 * MS  # ties go to the later stamp


def test_stamp_mode_tolerance_is_inclusive():
    pairer = stamp_pairer(5 * MS)
    pairer.add_info(0, "cam", "info")
    assert pairer.add_image(5 * MS, "cam", "img") == Pair("img", "info")
    assert pairer.add_image(5 * MS + 1, "cam", "late") is None
    assert pairer.pending == (5 * MS + 1, "cam")


def test_out_of_tolerance_info_does_not_pair_and_does_not_complete():
    pairer = stamp_pairer(5 * MS)
    pairer.add_info(0, "cam", "old")
    assert pairer.add_image(100 * MS, "cam", "img") is None
    assert pairer.add_info(200 * MS, "cam", "future") is None
    assert pairer.pending == (100 * MS, "cam") and pairer.paired == 0


@pytest.mark.parametrize("mode", ["stamp", "latest"])
def test_wrong_frame_id_never_pairs(mode):
    pairer = CameraInfoPairer(5 * MS, mode)
    pairer.add_info(0, "other", "info")
    assert pairer.add_image(0, "cam", "img") is None
    assert pairer.add_info(0, "other_again", "info2") is None
    assert pairer.pending == (0, "cam")
    assert pairer.add_info(0, "cam", "right") == Pair("img", "right")


@pytest.mark.parametrize("mode", ["stamp", "latest"])
def test_info_after_image_completes_the_pending_image(mode):
    pairer = CameraInfoPairer(0, mode)
    assert pairer.add_image(7, "cam", "img") is None
    assert pairer.add_info(7, "cam", "info") == Pair("img", "info")
    assert (pairer.paired, pairer.dropped_unpaired, pairer.pending) == (1, 0, None)
    assert pairer.add_info(7, "cam", "again") is None  # the image is paired once only


def test_superseded_pending_image_is_counted_as_dropped():
    pairer = stamp_pairer(0)
    assert pairer.add_image(1, "cam", "a") is None
    assert pairer.add_image(2, "cam", "b") is None
    assert pairer.dropped_unpaired == 1 and pairer.pending == (2, "cam")
    assert pairer.add_info(1, "cam", "info1") is None  # "a" is gone: latest frame wins
    assert pairer.add_info(2, "cam", "info2") == Pair("b", "info2")
    assert (pairer.paired, pairer.dropped_unpaired) == (1, 1)


def test_image_paired_on_arrival_still_drops_the_older_pending_image():
    pairer = stamp_pairer(0)
    pairer.add_image(1, "cam", "a")
    pairer.add_info(2, "cam", "info2")
    assert pairer.add_image(2, "cam", "b") == Pair("b", "info2")
    assert (pairer.paired, pairer.dropped_unpaired, pairer.pending) == (1, 1, None)


def test_latest_mode_uses_most_recent_info_whatever_its_stamp():
    pairer = CameraInfoPairer(0, "latest")
    pairer.add_info(10**12, "cam", "first")
    pairer.add_info(5, "cam", "second")  # received later, older stamp
    pairer.add_info(7, "other", "not_this_frame")
    assert pairer.add_image(999, "cam", "img") == Pair("img", "second")
    assert pairer.add_image(1000, "cam", "img2") == Pair("img2", "second")  # infos are reused
    assert pairer.paired == 2


def test_history_is_bounded_to_the_most_recent_infos():
    pairer = stamp_pairer(0, history=3)
    for stamp_ns in range(5):
        pairer.add_info(stamp_ns, "cam", stamp_ns)
    assert pairer.add_image(1, "cam", "evicted") is None
    assert pairer.add_image(2, "cam", "kept") == Pair("kept", 2)
    assert pairer.add_image(4, "cam", "newest") == Pair("newest", 4)


def test_pending_age_counts_from_receipt():
    clock = FakeClock()
    pairer = stamp_pairer(0, clock_ns=clock)
    assert pairer.pending_age_ns() is None
    clock.now_ns = 1_000
    pairer.add_image(123, "cam", "img")  # stamp time base is irrelevant to the age
    clock.now_ns = 251_000
    assert pairer.pending_age_ns() == 250_000
    pairer.add_info(123, "cam", "info")
    assert pairer.pending_age_ns() is None


def test_a_dropped_pending_image_is_counted_and_never_paired():
    pairer = stamp_pairer(0)
    pairer.add_image(7, "cam", "img")
    pairer.drop_pending()
    pairer.drop_pending()  # nothing left: nothing counted
    assert pairer.pending is None and pairer.pending_age_ns() is None and pairer.dropped_unpaired == 1
    assert pairer.add_info(7, "cam", "info") is None


def test_every_image_is_paired_dropped_or_pending():
    pairer = stamp_pairer(0)
    for stamp_ns in range(20):
        if stamp_ns % 3 == 0:
            pairer.add_info(stamp_ns, "cam", "info")
        pairer.add_image(stamp_ns, "cam", "img")
        if stamp_ns % 5 == 0:
            pairer.add_info(stamp_ns, "cam", "info")
    # paired: 0 3 5 6 9 10 12 15 18; dropped: the other stamps but the last, which is pending
    assert (pairer.paired, pairer.dropped_unpaired, pairer.pending) == (9, 10, (19, "cam"))


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        ({"tolerance_ns": 0, "mode": "exact"}, "unknown pairing mode 'exact'.*stamp.*latest"),
        ({"tolerance_ns": -1, "mode": "stamp"}, "tolerance_ns must be >= 0"),
        ({"tolerance_ns": 0, "mode": "stamp", "history": 0}, "history must be >= 1"),
    ],
)
def test_invalid_arguments_are_rejected(kwargs, reason):
    with pytest.raises(ValueError, match=reason):
        CameraInfoPairer(**kwargs)
