"""Progress on a terminal for the long reads an operator waits on: restore-set, verify-set and failover.

One bar per command over the bytes it reads from the store (the compressed objects: what the network carries),
with the rate and the time left. tqdm draws it on stderr, and only when stderr is a terminal: in a pod, a pipe or
a log file nothing is drawn, so the JSON events and log lines the alerts and tests read stay exactly as they were.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import TextIO

from tqdm import tqdm

Advance = Callable[[int], object]


@contextlib.contextmanager
def byte_progress(total: int, description: str, stream: TextIO | None = None) -> Iterator[Advance]:
    """Yields `advance(n)`: n more bytes were read. Safe to call from several threads (tqdm locks its writes)."""
    out = stream or sys.stderr
    bar = tqdm(
        total=total,
        desc=description,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=out,
        disable=not _is_terminal(out),
        dynamic_ncols=True,
        smoothing=0.1,
    )
    try:
        yield bar.update
    finally:
        bar.close()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or file-less stream
        return False


def no_progress(_: int) -> None:
    """The advance of a caller that shows no progress."""
