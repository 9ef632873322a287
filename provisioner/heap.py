"""Python's cycle collector and the tool's big reads.

A directory of 50,000 users is a million objects, and what the tool makes of it (an index,
a plan of 50,000 changes) a few million more, none of them in cycles. The collector would
look through all of them each time a few thousand more were made; while they are made, it
stays out.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def collector_off() -> Iterator[None]:
    """The cycle collector off meanwhile, as it was after (nested: off until the outermost
    ends). What was made meanwhile is data that lives on: it goes straight to the oldest
    generation, where only a full collection looks (freezing and unfreezing moves every
    tracked object there without looking at it; not when something is frozen already, which
    unfreezing would thaw). Merely enabling again has the next allocation look through all of
    it (0.1 s for a million objects)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            if not gc.get_freeze_count():
                gc.freeze()
                gc.unfreeze()
            gc.enable()
