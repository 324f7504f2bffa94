"""The ground floor: the backup rules every other part shares, in pure Python.

Retention windows and tiers (retention), cron schedules and their timing (schedules), resource and label names
(naming), the GCP storage layout per region pair (gcp_locations), the Postgres set manifest format and the stale-set
rule (manifest), which databases of a server a run must account for (databases), the history audit's gap rule
(history), what a DR stack must share with its primary (dr_pairing), and the kept lists the stack config is checked
against (aws_regions, config_keys). Imported by the Pulumi program (components/), the in-pod jobs (jobs/), the
policy pack (policy/) and the engines (engines/); it imports none of them, nor Pulumi, a cloud SDK or anything that
does I/O. The job image copies this package whole.
"""
