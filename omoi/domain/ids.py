"""Time-ordered ids, so primary keys sort by creation and make a cheap pagination cursor."""

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last = [0, 0]  # millisecond, counter within it


def new_id() -> uuid.UUID:
    """A UUIDv7 (RFC 9562) with a 12-bit counter in ``rand_a`` (its method 1), so ids made by
    one process are strictly increasing even within a millisecond."""
    with _lock:
        millis = time.time_ns() // 1_000_000
        if millis <= _last[0]:
            millis, counter = _last[0], _last[1] + 1
            if counter > 0xFFF:
                millis, counter = millis + 1, 0
        else:
            counter = 0
        _last[:] = [millis, counter]
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= counter << 64  # rand_a used as a counter
    value |= 0b10 << 62  # variant
    value |= int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)  # rand_b
    return uuid.UUID(int=value)


def first_id_at(millis: int) -> uuid.UUID:
    """The smallest UUIDv7 of the millisecond ``millis`` (since the epoch): every id ``new_id``
    made earlier sorts below it, so a primary key range finds what was created before then."""
    return uuid.UUID(int=((millis & ((1 << 48) - 1)) << 80) | (0x7 << 76) | (0b10 << 62))
