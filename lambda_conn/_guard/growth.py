"""How fast one resource grows per invocation, and where the next invocations take it.

A limit is a level; a leak is a rate. A leak of more than about a tenth of the maximum per
invocation passes any fixed ceiling in one step, so the guard also tracks, per resource
(descriptors, resident memory), the increase each invocation leaves behind after cleanup.

The increase is measured against the high-water mark, not the previous value: usage that
swings up and down around a level sets no new mark and shows no growth, while a leak sets
one every time. From the last ``WINDOW`` increases the projection takes "the next
invocation or two": one more step as large as the largest increase seen, or two more as
large as the second largest. A single jump (a cache filled once) thus projects one step,
and only growth seen twice projects two: a lazy load that merely fits does not recycle
every fresh environment after its second invocation.
"""

from __future__ import annotations

WINDOW = 4  # increases the projection looks at (the current one included)
SUSTAINED = 8  # increases a steady rate must have shown, every one of them
HORIZON = 2  # invocations ahead for growth seen at least twice
UNKNOWN = 1 << 62  # the maximum where none is known: never reached


class Growth:
    """Increases of one resource's usage after cleanup, relative to its high-water mark."""

    __slots__ = ("gap", "high", "increases", "last", "maximum", "top", "watch")

    def __init__(self, baseline: int, maximum: int | None = None) -> None:
        self.maximum = UNKNOWN if maximum is None else maximum  # reached: the next one fails
        self.high = baseline  # the most this environment has held after an invocation
        self.last = baseline  # the value after the previous invocation
        self.increases: list[int] = []  # newest last, at most SUSTAINED
        self.top = 0  # the largest of them (a cheap bound of every step the window holds)
        self.gap = 1  # invocations since the last measurement (a skipped count adds one)
        self.watch = self._watch()

    def _watch(self) -> int:
        """The least value from which ``near`` holds: ``value + HORIZON * step`` reaches
        the maximum for ``step`` the largest stored increase, or ``value - high`` itself."""
        by_top = self.maximum - HORIZON * self.top
        by_own = -(-(self.maximum + HORIZON * self.high) // (1 + HORIZON))
        return by_top if by_top < by_own else by_own

    def __repr__(self) -> str:
        return f"Growth(high={self.high}, increases={self.increases})"

    def increase(self, value: int) -> int:
        """Per-invocation increase ``value`` would record (spread over a skipped stretch)."""
        grown = value - self.high
        return -(-grown // self.gap) if grown > 0 else 0

    def near(self, value: int) -> bool:
        """Whether a projection from ``value`` might reach the maximum: the cheap test that
        ends the common case (``value >= watch``, which the guard inlines)."""
        return value >= self.watch

    def near_from_bound(self, most: int) -> bool:
        """``near`` for an upper bound of an unmeasured count, at the rates already seen
        (this invocation's own increase shows at the next count)."""
        return most + HORIZON * self.top >= self.maximum

    def projection(self, value: int) -> tuple[int, int, int]:
        """(rate, horizon, projected value) after the next invocation or two."""
        recent = sorted((*self.increases[1 - WINDOW :], self.increase(value)))
        largest = recent[-1]
        second = recent[-2] if len(recent) > 1 else 0
        if second * HORIZON >= largest and second > 0:
            return second, HORIZON, value + HORIZON * second
        return largest, 1, value + largest

    def sustained(self, value: int) -> float:
        """The steady rate of the last SUSTAINED invocations (0 if fewer have been seen):
        their mean increase without the largest one, and 0 unless at least half of them
        grew. A leak grows again and again, also one that leaks on every other request; a
        warm-up grows once or twice, then stays."""
        if len(self.increases) < SUSTAINED - 1:
            return 0.0
        recent = sorted((*self.increases[1 - SUSTAINED :], self.increase(value)))
        if 2 * sum(1 for grown in recent if grown > 0) < SUSTAINED:
            return 0.0
        return sum(recent[:-1]) / (SUSTAINED - 1)

    def skipped(self) -> None:
        """This invocation was not measured (a cheap bound proved it far under)."""
        self.gap += 1

    def record(self, value: int) -> None:
        """The value this invocation left, after cleanup. Cheap: it runs every invocation."""
        increases = self.increases
        self.last = value
        grown = value - self.high
        if grown > 0:
            step = -(-grown // self.gap)
            self.high = value
            self.gap = 1
            if step > self.top:
                self.top = step
            increases.append(step)
            self.watch = self._watch()
        else:
            increases.append(0)
            self.gap = 1
        if len(increases) > SUSTAINED and increases.pop(0) == self.top and self.top:
            self.top = max(increases)
            self.watch = self._watch()
