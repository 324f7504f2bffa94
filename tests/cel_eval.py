"""Run by the pinned cel-python venv (tests/pinned_venvs.py CEL_PYTHON), not imported by the tests: reads a JSON
list of {"expression", "activation"} on stdin and writes, for each, true/false or {"error": "..."} as JSON.
An error is reported, not raised: Kubernetes denies a request whose validation errors (failurePolicy Fail), and
the tests want to tell an expression that is false from one that cannot be evaluated."""

import json
import sys

import celpy


def main() -> None:
    env = celpy.Environment()
    results = []
    for case in json.load(sys.stdin):
        try:
            program = env.program(env.compile(case["expression"]))
            value = program.evaluate({k: celpy.json_to_cel(v) for k, v in case["activation"].items()})
            is_bool = isinstance(value, celpy.celtypes.BoolType)
            results.append(bool(value) if is_bool else {"error": f"not a bool: {value!r}"})
        except Exception as error:  # every failure is the case's result
            results.append({"error": f"{type(error).__name__}: {error}"})
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
