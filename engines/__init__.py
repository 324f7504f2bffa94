"""The engines: libraries that run the program and its rules offline, for the commands in scripts/.

The offline plan (offline_plan: the program under Pulumi's mock engine; forked: several stacks side by side;
plan_stacks: the plan command's run over one or several stacks), the policy runner over a plan (policy_check), and
the retention simulator (retention_sim, priced by storage_prices; run over named stacks by retention_stacks).
They import the program (components/), the jobs (jobs/), the policy pack (policy/) and the rules (rules/); only
commands, benchmarks and tests import them.
"""
