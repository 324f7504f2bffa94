"""How a drill that calls the Kubernetes API runs: one client, SIGTERM turned into the drill's own exception.

The CronJob's deadline (or a node drain) sends SIGTERM; raising it inside the drill lets the drill unwind through
its own cleanup (it deletes the scratch claims and pods it created) instead of dying with them left behind. Shared
by jobs/drill_cometbft.py and jobs/drill_snapshots.py.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

from jobs import events
from jobs.kube import KubeClient, KubeConfig


def run_drill(
    config: KubeConfig,
    retry_wait: float,
    build: Callable[[KubeClient], Any],
    log: Callable[..., dict[str, Any]],
    terminated: type[BaseException],
    results: list[dict] | None = None,
) -> int:
    """`build(client)` makes the drill; its `run()` gives the exit code and its `result` is appended to `results`.
    An unexpected error is one `backup.failed` event (stage internal), exit 1."""
    previous = None
    if threading.current_thread() is threading.main_thread():  # signal handlers can only be set there

        def terminate(signum, frame):
            raise terminated()

        previous = signal.signal(signal.SIGTERM, terminate)
    try:
        with KubeClient(config, retry_wait=retry_wait) as client:
            drill = build(client)
            code = drill.run()
            if results is not None:
                results.append(drill.result)
            return code
    except Exception as error:
        log(events.FAILED, error=f"unexpected {type(error).__name__}: {error}", stage="internal")
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
