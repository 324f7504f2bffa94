"""The retention simulator's speed: one replay with the memoized listing (engines/retention_sim.py `_Listing`)
against the same replay with the jobs' listing on every run, in one process, one after the other; both must
report exactly the same (the report's text and the --json summary), or the benchmark fails.

Process CPU time (time.process_time) is what is compared: the machine is shared, wall time moves with the load.
"""

from __future__ import annotations

import dataclasses
import time

from engines import retention_sim, retention_stacks


def run(settings, options: retention_sim.Options, *, log=print) -> float:
    """Returns baseline / memoized CPU seconds; raises AssertionError when the two replays differ."""
    timings, outputs = {}, {}
    for memoize in (False, True):
        variant = dataclasses.replace(options, memoize=memoize)
        started = time.process_time()
        result = retention_sim.simulate(settings, variant)
        timings[memoize] = time.process_time() - started
        outputs[memoize] = (retention_sim.report(result), retention_stacks.summary(result))
        log(f"{'memoized' if memoize else 'baseline'}: {timings[memoize]:.1f} s CPU")
    if outputs[False] != outputs[True]:
        raise AssertionError("the memoized replay reports differently from the baseline")
    ratio = timings[False] / timings[True]
    log(f"same report; baseline / memoized = {ratio:.1f}x")
    return ratio
