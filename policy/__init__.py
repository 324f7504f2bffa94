"""The sv-backups CrossGuard policy pack: the backup contract, checked on what a stack declares.

Import-safe on purpose: importing `policy` or any rule module builds policy objects only. The gRPC server
starts in `policy/__main__.py` alone (what `pulumi preview --policy-pack policy` runs), so the offline checker
(`engines/policy_check.py`) and the tests drive the very same rule objects without a Pulumi CLI.
"""
