"""sv-backups: `pulumi up --stack <env>` declares every backup of one Super Validator node.

Thin on purpose: read the config, validate all of it, then declare (see components/program.py).
"""

import gc

# Start-up is mostly importing the provider SDKs (tens of thousands of long-lived classes and typing objects):
# the cyclic collector would scan them over and over and find nothing to free. Paused until everything is
# declared (then restored, for a host that plans several stacks in one process). Measured by
# scripts/bench_plan.py (README "Benchmarks"): faster start-up, peak memory unchanged to within 1 MiB.
_collector_was_on = gc.isenabled()
gc.disable()
try:
    import pulumi

    from components.program import declare
    from components.settings import SettingsError, load_settings
    from components.stack_config import read_raw_config

    try:
        settings = load_settings(read_raw_config(), stack=pulumi.get_stack())
    except SettingsError as error:
        # One message per problem, and nothing declared.
        raise pulumi.RunError(str(error)) from None

    declare(settings)
finally:
    if _collector_was_on:
        gc.enable()
