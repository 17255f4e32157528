"""Messages lost before a subscription, counted from gaps in each publisher's sequence numbers.

The middleware numbers every message a publisher (DDS writer) sends, 1, 2, 3, ...; rclpy hands the
number to a callback that takes the message info (``publication_sequence_number``, with the
publisher's ``publisher_gid``). A message lost in transport or overwritten in the subscription's
queue (KEEP_LAST history) leaves a gap. The first message of a publisher only sets its baseline (a
publisher that started before the subscription is not counted as losing what came before).
"""
from __future__ import annotations

from collections import OrderedDict

MAX_PUBLISHERS = 64
"""Publishers tracked at once; the one heard from least recently is forgotten beyond this."""


class SequenceGaps:
    """Counts messages missing between consecutive sequence numbers of each publisher.

    Attributes:
        lost: messages never received (sum of the gaps).
    """

    def __init__(self) -> None:
        self._last: OrderedDict[bytes, int] = OrderedDict()
        self.lost = 0

    def add(self, info: dict) -> None:
        """Take one received message's info (rclpy ``MessageInfo``: ``publisher_gid`` and
        ``publication_sequence_number``, either None where the middleware does not report them).

        A sequence number at or below the last one (a restarted publisher) starts that publisher over.
        """
        sequence, gid = info.get("publication_sequence_number"), info.get("publisher_gid")
        if not sequence or gid is None:
            return
        key = bytes(gid.get("data", b""))
        last = self._last.pop(key, None)
        if last is not None and sequence > last + 1:
            self.lost += sequence - last - 1
        self._last[key] = sequence
        if len(self._last) > MAX_PUBLISHERS:
            self._last.popitem(last=False)
