"""The environment for a helper process the tests start that runs none of Flashwire's code: a
local push service, a schemathesis run.

`make test` measures coverage in every Python process the tests start (pyproject.toml,
`[tool.coverage.run] patch = ["subprocess"]`: coverage.py hands the child its configuration in
COVERAGE_PROCESS_START or COVERAGE_PROCESS_CONFIG, and a .pth file starts it there). In a process
that runs only test or third-party code, coverage measures nothing (`source_pkgs = ["flashwire"]`)
yet its tracer still runs on every line: it about doubled the CPU of the push fan-out test, where
the local push services decrypt and verify every message. Such processes get the environment below.
"""

from __future__ import annotations

from collections.abc import Mapping

COVERAGE_VARIABLES = ("COVERAGE_PROCESS_START", "COVERAGE_PROCESS_CONFIG")


def untraced(env: Mapping[str, str]) -> dict[str, str]:
    """`env` without the variables that start coverage in a child process."""
    return {name: value for name, value in env.items() if name not in COVERAGE_VARIABLES}
