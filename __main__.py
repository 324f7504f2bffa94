"""sv-backups: `pulumi up --stack <env>` declares every backup of one Super Validator node.

Thin on purpose: read the config, validate all of it, then declare (see components/program.py).
"""

import gc

# Start-up is mostly importing the provider SDKs (tens of thousands of long-lived classes and typing objects),
# then the engine resolving every resource's outputs: the cyclic collector would scan those objects over and over
# (a full pass over them costs ~0.15 s) and find next to nothing to free. `pulumi up` runs the program in a
# process of its own that ends with it, so the collector stays off to the end; the offline plan
# (engines/offline_plan.py) turns it back on after each run. Measured by scripts/bench_plan.py (README
# "Benchmarks"): start-up time and peak memory with and without.
gc.disable()

import pulumi  # noqa: E402

from components.program import declare  # noqa: E402
from components.settings import SettingsError, load_settings  # noqa: E402
from components.stack_config import read_raw_config  # noqa: E402

try:
    settings = load_settings(read_raw_config(), stack=pulumi.get_stack())
except SettingsError as error:
    # One message per problem, and nothing declared.
    raise pulumi.RunError(str(error)) from None

declare(settings)
# Everything loaded and declared so far lives until the process ends. Python still runs one full collection at
# exit, over every class of the provider SDKs: a fifth to a third of a bare import's wall time
# (scripts/bench_plan.py, the bare floor against the floor frozen at exit). Frozen objects are left out of it
# (the OS reclaims the memory; Python never promised finalizers at exit). The offline plan unfreezes them after
# each run.
gc.freeze()
