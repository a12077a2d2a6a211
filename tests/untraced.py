"""The environment for a helper process the tests start that runs none of Flashwire's code: a
local push service, a schemathesis run.

`make test` measures coverage in every Python process the tests start (pyproject.toml,
`[tool.coverage.run] patch = ["subprocess"]`: coverage.py hands the child its configuration in
COVERAGE_PROCESS_START or COVERAGE_PROCESS_CONFIG, and a .pth file starts it there). In a process
that runs only test or third-party code, coverage measures nothing (`source_pkgs = ["flashwire"]`)
yet its tracer still runs on every line: it about doubled the CPU of the push fan-out test, where
the local push services decrypt and verify every message. Such processes get the environment below.

The same holds for the tests marked `load` (pyproject.toml): they exist to show behaviour at scale
(10,000 readers, 14,000 push targets), on code paths the functional tests already cover, and the
tracer doubled their time. Their service and worker processes start untraced (the `stack` fixture),
and the test process pauses its own tracer while they run (`tracer_paused`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import coverage
import pytest

COVERAGE_VARIABLES = ("COVERAGE_PROCESS_START", "COVERAGE_PROCESS_CONFIG")


def untraced(env: Mapping[str, str]) -> dict[str, str]:
    """`env` without the variables that start coverage in a child process."""
    return {name: value for name, value in env.items() if name not in COVERAGE_VARIABLES}


def is_load_test(item: pytest.Item) -> bool:
    """Is `item` marked `load` (a test that exists for scale, run without coverage's tracer)?"""
    return item.get_closest_marker("load") is not None


@contextlib.contextmanager
def tracer_paused() -> Iterator[None]:
    """Coverage's tracer stopped in this process for the block, started again after it (nothing
    happens when coverage is not running)."""
    current = coverage.Coverage.current()
    if current is None:
        yield
        return
    current.stop()
    try:
        yield
    finally:
        current.start()
