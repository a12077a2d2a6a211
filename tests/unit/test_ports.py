"""Ports for private servers are chosen where no outgoing connection can take them (CI saw EADDRINUSE)."""

from __future__ import annotations

import socket

import pytest

from flashwire.dev import ports
from flashwire.dev.ports import ephemeral_low, free_port, port_slice


def test_a_chosen_port_is_below_the_range_outgoing_connections_draw_from() -> None:
    chosen = [free_port() for _ in range(50)]
    assert all(ports.LOWEST_PORT <= port < ephemeral_low() for port in chosen)
    assert len(set(chosen)) == len(chosen)


def test_a_chosen_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_a_port_something_listens_on_is_never_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    busy = free_port()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", busy))
        listener.listen()
        monkeypatch.setattr(ports, "_given", set())
        monkeypatch.setattr(ports, "port_slice", lambda: range(busy, busy + 1))
        with pytest.raises(RuntimeError, match="no free port"):
            free_port()


def test_parallel_test_processes_choose_from_disjoint_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
    slices = []
    for worker in ("gw0", "gw1", "gw2"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        slices.append(set(port_slice()))
    assert all(len(s) > 1_000 for s in slices)
    assert not (slices[0] & slices[1]) and not (slices[1] & slices[2]) and not (slices[0] & slices[2])
    assert max(max(s) for s in slices) < ephemeral_low()
