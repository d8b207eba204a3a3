"""free_port hands out loopback ports that an outgoing connection cannot take before the bind."""

from __future__ import annotations

import socket

from smvm import launcher


def test_ports_are_distinct_bindable_and_below_the_ephemeral_range():
    low = launcher._ephemeral_low()
    ports = [launcher.free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)  # never handed out twice
    assert all(1024 < p < low for p in ports), (low, [p for p in ports if p >= low])
    for port in ports[:20]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_port_in_use_is_skipped(monkeypatch):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        busy = held.getsockname()[1]
        held.listen()
        picks = iter([busy, busy, busy + 1 if busy + 1 < 65536 else busy - 1])

        class Scripted:
            def randrange(self, a, b):
                return next(picks)

        monkeypatch.setattr(launcher, "_PICKER", Scripted())
        monkeypatch.setattr(launcher, "_ephemeral_low", lambda: 65536)
        assert launcher.free_port() != busy
