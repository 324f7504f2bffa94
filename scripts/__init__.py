"""Operator and CI tools (offline plan, policy check). A package so tests can import `scripts.offline_plan`."""
