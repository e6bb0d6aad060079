"""Free loopback ports for test servers, chosen where nothing else will be handed them.

A port found free with ``bind(("127.0.0.1", 0))`` comes from the kernel's ephemeral range
(32768-60999 on Linux), the same range Ray's own processes (GCS, raylet, agents) draw from when
a cluster starts. A port picked that way and bound a moment later by HAProxy can meanwhile be
taken by a Ray agent, and requests then reach the agent instead (seen as a 401 from Ray's token
auth). Ports here come from 20000-29999: above Ray's default worker ports (10002-19999), below
its direct-ingress ports (30000-31000, and 31001-32000 in the test clusters) and the
ephemeral range.
"""

from __future__ import annotations

import random
import socket

LOW, HIGH = 20000, 29999


def free_port(rng: random.Random | None = None) -> int:
    """A port in [LOW, HIGH] nothing listens on now."""
    pick = rng or random.SystemRandom()
    for _ in range(500):
        port = pick.randint(LOW, HIGH)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {LOW}-{HIGH}")
