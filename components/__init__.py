"""sv-backups Pulumi components.

Import-light on purpose: `components.retention` and `components.naming` are also shipped in the job image,
which has no Pulumi, so nothing here imports pulumi at package import time.
"""
