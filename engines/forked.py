"""Run a function over items in forked copies of this process: one copy per item, at most N at once, results in
the items' order.

Why copies of this process rather than fresh ones: a copy starts with everything this process has loaded (for
scripts/plan.py, the program and the provider SDKs: most of a plan's time), so it pays only for its own item.
Why one copy per item: each starts from the same state, as the item would alone, and a copy that dies (killed,
out of memory) takes only its own item with it; a fork of a loaded process costs milliseconds.

Only where forking is safe (`why_not_fork()`): on Linux (macOS's system libraries do not survive a fork) and while
no other thread runs (a lock one holds would stay held in the copy, forever).
"""

from __future__ import annotations

import gc
import multiprocessing
import multiprocessing.connection
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CopyDied:
    """The copy for an item ended without a result: `exitcode` is its exit status, or minus the signal that
    killed it."""

    exitcode: int | None

    def __str__(self) -> str:
        if self.exitcode is not None and self.exitcode < 0:
            return f"killed by signal {-self.exitcode}"
        return f"exited with status {self.exitcode} without a result"


def usable_cores() -> int:
    """How many copies may usefully run at once: the cores this process may run on (its CPU affinity; a cgroup
    quota is not seen), or 1 where it cannot fork."""
    return 1 if sys.platform != "linux" else len(os.sched_getaffinity(0))


def why_not_fork() -> str | None:
    """Why this process cannot fork copies of itself now, or None when it can."""
    if sys.platform != "linux":
        return f"forking is only safe on Linux, not {sys.platform}"
    others = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    if others:
        return f"other threads run in this process ({', '.join(sorted(others))})"
    return None


def in_forked_copies(function: Callable[[Any], Any], items: Sequence[Any], workers: int) -> Iterator[Any]:
    """`function(item)` for each item, each in its own forked copy, at most `workers` at once; yields, in the
    items' order, each result (it must pickle) or `CopyDied`. `function` itself is never pickled: the copies
    inherit it. Leaving early (an exception, Ctrl-C, a consumer that stops) stops the copies still running."""
    if workers < 1:
        raise ValueError(f"workers: {workers}: at least 1 copy must run at once")
    reason = why_not_fork()
    if reason is not None:
        raise RuntimeError(f"cannot fork copies of this process: {reason}")
    fork = multiprocessing.get_context("fork")
    sys.stdout.flush()  # a copy must not inherit, and print again, what this process has yet to write
    sys.stderr.flush()
    frozen_before = gc.get_freeze_count()
    # What this process has loaded, out of the collector's reach: a copy's collections then skip it (fewer of its
    # pages copied, less time), as the gc.freeze() documentation advises before forking.
    gc.freeze()
    waiting = list(enumerate(items))
    running: dict[multiprocessing.connection.Connection, tuple[int, Any]] = {}  # result pipe -> (index, process)
    done: dict[int, Any] = {}
    next_index = 0
    try:
        while waiting or running:
            while waiting and len(running) < workers:
                index, item = waiting.pop(0)
                receiver, sender = fork.Pipe(duplex=False)
                copy = fork.Process(target=_send_result, args=(function, item, sender), daemon=True)
                copy.start()
                sender.close()  # the copy holds its end: EOF here once it ends
                running[receiver] = (index, copy)
            for receiver in multiprocessing.connection.wait(list(running)):
                index, copy = running.pop(receiver)
                try:
                    done[index] = receiver.recv()  # before joining: the copy waits until its result is read
                except (EOFError, OSError):  # ended before sending (or mid-way)
                    copy.join()
                    done[index] = CopyDied(copy.exitcode)
                receiver.close()
                copy.join()
            while next_index in done:
                yield done.pop(next_index)
                next_index += 1
    finally:
        for receiver, (_, copy) in running.items():
            copy.terminate()
            copy.join()
            receiver.close()
        if frozen_before == 0:
            gc.unfreeze()


def _send_result(function: Callable[[Any], Any], item: Any, sender: multiprocessing.connection.Connection) -> None:
    sender.send(function(item))
    sender.close()
