"""engines/forked.py: a function over items in forked copies of the process, one copy per item, results in order.

Forking is tried in a fresh interpreter (a snippet run with -c): the test process itself may run other threads
(a test runner's, a fixture's server), and forking it then is exactly what the module refuses to do."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engines import forked

ROOT = Path(__file__).resolve().parents[2]


def _run(body: str) -> dict:
    code = f"import gc, json, os, sys, time\nsys.path.insert(0, {str(ROOT)!r})\nfrom engines import forked\n{body}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_results_come_in_the_items_order_each_from_its_own_copy():
    found = _run("""
def where(delay):
    time.sleep(delay)  # the first item finishes last
    return [delay, os.getpid()]
results = list(forked.in_forked_copies(where, [0.4, 0.0, 0.1, 0.0], workers=2))
print(json.dumps({"results": results, "me": os.getpid(), "frozen": gc.get_freeze_count()}))
""")
    assert [delay for delay, _ in found["results"]] == [0.4, 0.0, 0.1, 0.0]
    pids = [pid for _, pid in found["results"]]
    assert len(set(pids)) == 4 and found["me"] not in pids
    assert found["frozen"] == 0  # this process's collector is as it was before


def test_a_copy_that_dies_is_reported_and_takes_only_its_own_item():
    found = _run("""
def fragile(item):
    if item == "exits":
        os._exit(3)
    if item == "killed":
        os.kill(os.getpid(), 9)
    return item
results = list(forked.in_forked_copies(fragile, ["a", "exits", "b", "killed", "c"], workers=2))
print(json.dumps([str(r) if isinstance(r, forked.CopyDied) else r for r in results]))
""")
    assert found == ["a", "exited with status 3 without a result", "b", "killed by signal 9", "c"]


def test_a_consumer_that_stops_stops_the_copies_still_running(tmp_path):
    pid_file = tmp_path / "pid"
    found = _run(f"""
def slow(item):
    if item == "slow":
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        time.sleep(60)
    return item
results = forked.in_forked_copies(slow, ["quick", "slow"], workers=2)
first = next(results)
while not os.path.exists({str(pid_file)!r}):
    time.sleep(0.01)
started = time.monotonic()
results.close()
pid = int(open({str(pid_file)!r}).read())
try:
    os.kill(pid, 0)
    alive = True
except ProcessLookupError:
    alive = False
print(json.dumps({{"first": first, "alive": alive, "seconds": time.monotonic() - started}}))
""")
    assert found["first"] == "quick" and not found["alive"]
    assert found["seconds"] < 30  # not the 60 s the copy would have slept


def test_no_fork_while_another_thread_runs():
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, name="holding-a-lock-maybe")
    other.start()
    try:
        reason = forked.why_not_fork()
        assert reason is not None and "holding-a-lock-maybe" in reason
        with pytest.raises(RuntimeError, match="cannot fork copies of this process: other threads run"):
            next(forked.in_forked_copies(str, [1], workers=2))
    finally:
        stop.set()
        other.join()


def test_no_copy_at_a_time_is_refused():
    with pytest.raises(ValueError, match="workers: 0: at least 1"):
        next(forked.in_forked_copies(str, [1], workers=0))


@pytest.mark.skipif(sys.platform != "linux", reason="CPU affinity is Linux's")
def test_the_usable_cores_are_the_ones_this_process_may_run_on():
    """Pinned to one core, one copy at a time, however many cores the machine has."""
    found = _run("""
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
print(json.dumps({"cores": forked.usable_cores(), "machine": os.cpu_count()}))
""")
    assert found["cores"] == 1 and found["machine"] >= 1
