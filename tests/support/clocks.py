"""A clock tests move by hand: ``clock.now += 5``; its ``sleep`` moves it instead of waiting.

A test module names its own start: ``class Clock(ManualClock): start = 50.0``.
"""

from __future__ import annotations


class ManualClock:
    start = 1000.0

    def __init__(self) -> None:
        self.now = self.start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 4))
        self.now += seconds
