"""Growth per invocation and the projection: the arithmetic, with injected probes.

The end-to-end cases (150 descriptors or 30 MB per invocation under awslambdaric) are in
tests/health/test_health_projection.py; here the probe, clock and recycler are fakes, so a
case near the 1,024-descriptor maximum needs no descriptors.
"""

from __future__ import annotations

import json
import logging
import random
from typing import Any

import pytest
from test_health_config import SQS, Probe, Rig

from lambda_conn._guard.growth import HORIZON, SUSTAINED, WINDOW, Growth

MB = 1 << 20


def grow(growth: Growth, *values: int) -> None:
    for value in values:
        growth.record(value)


def test_a_steady_rate_projects_two_invocations_ahead() -> None:
    growth = Growth(100)
    grow(growth, 250, 400)
    assert growth.projection(550) == (150, HORIZON, 850)


def test_a_single_jump_projects_one_invocation_ahead() -> None:
    growth = Growth(100)
    grow(growth, 101, 102)
    assert growth.projection(402) == (300, 1, 702)  # 300 once: one more such step
    growth.record(402)
    assert growth.projection(403) == (300, 1, 703)  # still the largest step in the window


def test_growth_is_measured_against_the_high_water_mark() -> None:
    growth = Growth(500)
    grow(growth, 700, 500, 650, 520)  # swings under the mark set at 700
    assert growth.increases == [200, 0, 0, 0]
    assert growth.projection(690) == (0, 1, 690)
    assert growth.projection(720) == (20, 1, 740)


def test_the_window_forgets_a_rate_that_went_down() -> None:
    growth = Growth(100)
    grow(growth, 250, 400, 410, 420, 430)  # 150 twice, then 10 at a time
    assert WINDOW == 4  # the two 150s are five and four invocations back
    assert growth.projection(440) == (10, HORIZON, 460)


@pytest.mark.parametrize("seed", range(3))
def test_the_cheap_test_never_misses_a_projection(seed: int) -> None:
    draw = random.Random(seed)
    growth = Growth(100, 1024)
    for _ in range(400):
        value = growth.high + draw.randint(-200, 120)
        value = max(0, min(value, 1023))
        if growth.projection(value)[2] >= 1024:  # the projected value
            assert growth.near(value), (value, growth)
        near = value + HORIZON * max(growth.top, value - growth.high) >= 1024
        assert growth.near(value) == near
        growth.record(value)


def test_a_skipped_count_spreads_the_increase_over_the_invocations_it_covers() -> None:
    growth = Growth(100)
    growth.skipped()
    growth.skipped()
    assert growth.increase(400) == 100  # three invocations since 100
    growth.record(400)
    assert growth.increases == [100] and growth.gap == 1


def test_sustained_is_a_rate_seen_again_and_again_not_a_jump() -> None:
    growth = Growth(10)
    grow(growth, *range(11, 11 + SUSTAINED - 2))
    assert growth.sustained(11 + SUSTAINED - 2) == 0  # one short of SUSTAINED increases
    growth.record(11 + SUSTAINED - 2)
    assert growth.sustained(11 + SUSTAINED - 1) == 1
    assert growth.sustained(11 + SUSTAINED - 1 + 300) == 1  # one jump is not a rate


def test_sustained_counts_a_leak_on_every_other_invocation_but_not_a_warm_up() -> None:
    every_other = Growth(10)
    grow(every_other, *[10 + (n + 1) // 2 * 2 for n in range(SUSTAINED)])
    assert every_other.increases == [0, 2] * (SUSTAINED // 2)
    assert every_other.sustained(every_other.last) == pytest.approx(6 / 7)  # 2, 0, ... 0
    assert every_other.sustained(every_other.last + 2) == pytest.approx(8 / 7)
    warm_up = Growth(10)
    grow(warm_up, 110, 210, 310, *[310] * (SUSTAINED - 3))  # three loads, then nothing
    assert warm_up.sustained(310) == 0


def leak(rig: Rig, *steps: int, event: Any = None) -> list[str | None]:
    return [rig.invoke(event, leak=step) for step in steps]


def test_a_fast_leak_is_recycled_before_it_reaches_rlimit_whatever_the_min_lifetime() -> None:
    # GIVEN a limit of 50% of 1,024, a minimum lifetime of an hour, and a leak of 150
    rig = Rig(fd_limit="50%", jitter=0, min_lifetime=3600)
    rig.invoke()  # baseline 10
    # WHEN it passes the limit (deferred) and goes on
    assert leak(rig, 150, 150, 150, 150) == [None, None, None, "report"]
    assert rig.emitted[-1][1]["deferred_by"] == "min_lifetime"
    # THEN it recycles at 610 + 150: two more would reach 1,024, one would not yet
    assert rig.invoke(leak=150) == "recycle"
    action, fields = rig.emitted[-1]
    assert action == "recycle"
    assert (fields["reason"], fields["resource"], fields["measured"]) == ("projected", "fd", 760)
    assert (fields["rate"], fields["horizon"], fields["projection"]) == (150, 2, 1060)
    assert fields["limit"] == 1024 and fields["baseline"] == 10
    assert not fields["at_ceiling"] and "deferred_by" not in fields


def test_a_rising_rate_is_projected_as_soon_as_it_shows() -> None:
    # GIVEN a slow leak far under every limit, the limit itself out of the way
    rig = Rig(fd_limit=1024, jitter=0, hard_ceiling=1.0)
    rig.invoke()
    assert leak(rig, *[1] * 50) == [None] * 50  # 60 descriptors
    # WHEN it speeds up to 300 an invocation
    assert rig.invoke(leak=300) is None  # 360: one step of 300 seen, 660 < 1,024
    # THEN the second step confirms the rate: two more would pass 1,024
    assert rig.invoke(leak=300) == "recycle"
    fields = rig.emitted[-1][1]
    assert (fields["measured"], fields["rate"], fields["horizon"]) == (660, 300, 2)
    assert fields["projection"] == 1260


def test_projection_at_each_step_of_a_rising_rate() -> None:
    rig = Rig(fd_limit=1024, jitter=0, hard_ceiling=1.0)
    rig.invoke()  # 10
    assert leak(rig, 1, 1, 1, 200) == [None, None, None, None]  # 213: 213 + 200 < 1024
    assert leak(rig, 200) == [None]  # 413: 413 + 2 * 200 = 813
    assert leak(rig, 200) == [None]  # 613: 613 + 400 = 1013 < 1024
    assert rig.invoke(leak=200) == "recycle"  # 813: 813 + 400 >= 1024
    assert rig.emitted[-1][1]["projection"] == 1213


def test_a_rate_that_went_down_is_projected_from_the_new_rate() -> None:
    # GIVEN 150 an invocation up to 610, then 10
    rig = Rig(fd_limit=1024, jitter=0, hard_ceiling=1.0)
    rig.invoke()  # 10
    assert leak(rig, 150, 150, 150, 150) == [None] * 4
    # WHEN it climbs at 10 an invocation to 1,000, where 150 would have been projected
    assert leak(rig, *[10] * 39) == [None] * 39 and rig.fds.value == 1000
    # THEN only two steps of 10 reaching 1,024 recycle
    assert rig.invoke(leak=4) == "recycle"
    fields = rig.emitted[-1][1]
    assert (fields["measured"], fields["rate"], fields["projection"]) == (1004, 10, 1024)


@pytest.mark.parametrize("seed", range(5))
def test_noise_around_a_high_level_never_triggers(seed: int) -> None:
    # GIVEN descriptors that swing by up to 60 around 850, for 500 invocations
    draw = random.Random(seed)
    rig = Rig(fds=850, fd_limit=1024, jitter=0, hard_ceiling=1.0, min_lifetime=3600)
    rig.invoke()
    results = []
    for _ in range(500):
        rig.fds.value = 850 + draw.randint(-60, 60)
        results.append(rig.invoke())
    # THEN no recycle, no report: swings under the high-water mark are no growth
    assert results == [None] * 500 and rig.emitted == []


def test_memory_noise_does_not_trigger_but_a_memory_leak_does() -> None:
    # GIVEN 128 MB, a 70% limit, RSS swinging by up to 3 MB around 100 MB
    draw = random.Random(7)
    rig = Rig(rss=100 * MB, memory_limit="99%", jitter=0, hard_ceiling=1.0, min_lifetime=3600)
    rig.invoke()
    for _ in range(300):
        rig.rss.value = 100 * MB + draw.randint(-3 * MB, 3 * MB)
        assert rig.invoke() is None
    # WHEN 8 MB an invocation is kept from there on
    results = []
    while not results or results[-1] is None:
        rig.rss.value += 8 * MB
        results.append(rig.invoke())
    # THEN it recycles once two more would reach 128 MB, and not before three would
    fields = rig.emitted[-1][1]
    assert fields["reason"] == "projected" and fields["resource"] == "memory"
    assert (fields["rate"], fields["horizon"]) == (8 * MB, 2)
    assert fields["projection"] == fields["measured"] + 16 * MB >= 128 * MB
    assert 128 * MB - 3 * 8 * MB <= fields["measured"] < 128 * MB


def test_a_warm_up_jump_that_would_fit_again_is_not_projected() -> None:
    # GIVEN a cache filled once, 400 descriptors, with room for another 400 (not two)
    rig = Rig(fd_limit="90%", jitter=0, hard_ceiling=1.0)
    rig.invoke()
    assert rig.invoke(leak=400) is None  # 410 + 400 < 1024: one step ahead fits
    assert [rig.invoke() for _ in range(20)] == [None] * 20


def test_a_jump_that_would_not_fit_again_is_projected_one_step_ahead() -> None:
    rig = Rig(fd_limit="90%", jitter=0, hard_ceiling=1.0)
    rig.invoke()
    assert rig.invoke(leak=510) == "recycle"  # 520 + 510 >= 1024
    fields = rig.emitted[-1][1]
    assert (fields["rate"], fields["horizon"], fields["projection"]) == (510, 1, 1030)


def test_a_projection_overrides_the_retrying_trigger_policy() -> None:
    rig = Rig(fd_limit="50%", jitter=0, min_lifetime=3600)
    rig.invoke()
    assert leak(rig, 150, 150, 150, 150, event=SQS) == [None, None, None, "report"]
    assert rig.emitted[-1][1]["deferred_by"] == "min_lifetime"
    assert rig.invoke(SQS, leak=150) == "recycle"
    assert rig.emitted[-1][1]["reason"] == "projected" and rig.emitted[-1][1]["trigger"] == "batch"


def test_a_projection_where_no_exit_is_allowed_is_reported() -> None:
    rig = Rig(fd_limit="90%", jitter=0, report_only=True)
    rig.invoke()
    assert rig.invoke(leak=600) == "report"
    fields = rig.emitted[-1][1]
    assert fields["reason"] == "projected" and fields["deferred_by"] == "report_only"
    assert not rig.recycler.armed


def test_the_garbage_collector_runs_before_a_projection_is_acted_on() -> None:
    rig = Rig(fd_limit="90%", jitter=0)
    rig.invoke()
    rig.freed_by_gc = 500
    assert rig.invoke(leak=600) is None and rig.collections == 1  # 610 -> 110 after a gc
    assert rig.guard.growth["fd"].high == 110  # the growth recorded is what gc left


class Timed(Rig):
    """A rig whose clock moves ``interval`` seconds per invocation (a request rate)."""

    def __init__(self, interval: float, **settings: Any) -> None:
        super().__init__(**settings)
        self.interval = interval

    def invoke(self, event: Any = None, leak: int = 0, request_id: str = "req-1") -> str | None:
        self.clock.now += self.interval
        return super().invoke(event, leak, request_id)


def run_until_recycled(rig: Rig, step: int, most: int) -> list[str | None]:
    results = [rig.invoke()]
    while results[-1] != "recycle" and len(results) < most:
        results.append(rig.invoke(leak=step))
    return results


def test_a_slow_leak_that_would_reach_the_ceiling_first_recycles_at_the_limit() -> None:
    # GIVEN 1 descriptor an invocation at 500 requests a second, the default 60 s lifetime
    rig = Timed(0.002, fd_limit="50%", jitter=0, min_lifetime=60)
    # WHEN it passes the limit of 512 after about 1 s (the ceiling would come 0.8 s later)
    results = run_until_recycled(rig, 1, 2000)
    # THEN it recycles there, not at 90%
    fields = rig.emitted[-1][1]
    assert results[-1] == "recycle" and fields["reason"] == "fd"
    assert fields["measured"] == 513 and fields["overrides"] == "min_lifetime"
    assert fields["rate"] == 1 and 0 < fields["ceiling_in_s"] < 60 - fields["age_s"]
    assert "deferred_by" not in fields


def test_a_slow_leak_that_outlives_the_min_lifetime_under_the_ceiling_is_deferred() -> None:
    # GIVEN the same leak at 10 requests a second: 60 s bring it to about 610, not 921
    rig = Timed(0.1, fd_limit="50%", jitter=0, min_lifetime=60)
    results = run_until_recycled(rig, 1, 2000)
    # THEN it is deferred at the limit and recycles once the minimum lifetime has passed
    deferred = [f for a, f in rig.emitted if a == "report"]
    assert deferred and deferred[0]["deferred_by"] == "min_lifetime"
    fields = rig.emitted[-1][1]
    assert results[-1] == "recycle" and "overrides" not in fields
    assert fields["age_s"] >= 60 and 600 <= fields["measured"] <= 620


def test_a_leak_on_every_other_request_also_recycles_at_the_limit() -> None:
    rig = Timed(0.002, fd_limit="50%", jitter=0, min_lifetime=60)
    rig.invoke()
    results = []
    while not results or results[-1] is None:
        results.append(rig.invoke(leak=len(results) % 2 * 2))
    fields = rig.emitted[-1][1]
    assert results[-1] == "recycle" and fields["overrides"] == "min_lifetime"
    assert fields["measured"] == 512 + 1 + 1 and rig.emitted[0][0] == "recycle"


def test_a_baseline_merely_high_is_deferred_by_the_min_lifetime() -> None:
    # GIVEN an environment that goes over the limit once (a warm-up), then stays there
    rig = Timed(0.002, fds=200, fd_limit="50%", jitter=0, min_lifetime=60)
    rig.invoke()
    assert rig.invoke(leak=400) == "report"  # 600 + 400 < 1,024: no projection either
    assert [rig.invoke() for _ in range(200)] == [None] * 200
    # THEN nothing but the deferral: no growth, no reason to cut the minimum lifetime
    assert [f["deferred_by"] for _, f in rig.emitted] == ["min_lifetime"]


@pytest.mark.parametrize(("step", "counted"), [(10, False), (300, True)])
def test_a_cheap_fd_bound_is_not_trusted_when_growth_could_reach_the_maximum(
    step: int, counted: bool
) -> None:
    # GIVEN a limit of 600 and a descriptor table (FDSize) of 1,024, so every count is made
    rig = Rig(fd_limit=600, jitter=0, hard_ceiling=1.0)
    bound = Probe(1024)
    rig.guard._fd_upper_bound = bound
    rig.invoke()
    rig.invoke(leak=step)  # counted: the growth is known
    # WHEN FDSize would prove the count under the limit (512 <= 600)
    bound.value = 512
    calls = rig.fds.calls
    rig.invoke()
    # THEN it is trusted only where 512 plus two steps stays under 1,024
    assert rig.fds.calls == calls + counted


@pytest.mark.parametrize("hard_ceiling", [0.9, 1.0])
def test_a_jump_into_rlimit_is_said_to_be_unreachable_once(
    caplog: pytest.LogCaptureFixture, hard_ceiling: float
) -> None:
    # GIVEN 20 descriptors open, and an invocation that opens all the rest
    rig = Rig(fds=20, fd_limit="50%", jitter=0, hard_ceiling=hard_ceiling)
    rig.invoke()
    with caplog.at_level(logging.WARNING, "lambda_conn"):
        assert rig.invoke(leak=1004) == "recycle"  # at 1,024: the ceiling or the projection
        rig.recycler.armed = False
        rig.invoke(request_id="req-2")
    # THEN one line says the jump needed at least all the room it had
    lines = [json.loads(r.message) for r in caplog.records]
    unreachable = [line for line in lines if line["event"] == "health_limit_unreachable"]
    assert len(unreachable) == 1
    line = unreachable[0]
    assert (line["resource"], line["jump"], line["room_left"]) == ("fd", 1004, 1004)
    assert (line["measured"], line["hard_max"], line["request_id"]) == (1024, 1024, "req-1")
    assert rig.emitted[0][1]["at_ceiling"] == (hard_ceiling < 1)


def test_a_jump_that_leaves_room_is_not_unreachable(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig(fds=20, fd_limit="50%", jitter=0)
    rig.invoke()
    with caplog.at_level(logging.WARNING, "lambda_conn"):
        rig.invoke(leak=1003)  # 1,023: one left
    assert not any("health_limit_unreachable" in r.getMessage() for r in caplog.records)
