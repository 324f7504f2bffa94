"""Operator and CI commands: each parses its arguments and makes one call into the package that does the work."""
