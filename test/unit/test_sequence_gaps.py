"""SequenceGaps: lost messages from gaps in each publisher's sequence numbers."""
from pixel_perfect_ros.ros.sequence_gaps import MAX_PUBLISHERS, SequenceGaps


def info(sequence, publisher=b"a"):
    return {"publication_sequence_number": sequence, "publisher_gid": {"data": publisher}}


def test_gaps_are_counted_per_publisher_from_the_first_message_seen():
    gaps = SequenceGaps()
    for sequence in (40, 41, 44, 45, 50):  # first seen at 40: what came before is not a loss
        gaps.add(info(sequence))
    for sequence in (1, 3):
        gaps.add(info(sequence, b"b"))
    assert gaps.lost == 2 + 4 + 1


def test_a_restarted_publisher_starts_over_and_missing_numbers_count_nothing():
    gaps = SequenceGaps()
    for sequence in (7, 8, 1, 2):
        gaps.add(info(sequence))
    gaps.add({"publication_sequence_number": None, "publisher_gid": None})
    gaps.add({"publication_sequence_number": 0, "publisher_gid": {"data": b"a"}})
    assert gaps.lost == 0


def test_the_least_recently_heard_publisher_is_forgotten_beyond_the_limit():
    gaps = SequenceGaps()
    for publisher in range(MAX_PUBLISHERS + 1):
        gaps.add(info(1, bytes([publisher])))
    gaps.add(info(5, bytes([0])))  # forgotten: a new baseline
    gaps.add(info(5, bytes([MAX_PUBLISHERS])))  # remembered: 3 lost
    assert gaps.lost == 3
