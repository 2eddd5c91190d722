"""The identity check: each request's stage figures against quantities measured independently.

Each check compares a figure a stage's cost rests on (the stage timers, the busy seconds a service
reports, the decoder seconds attributed to a sequence) with an independent measurement (the request's
own stopwatch, the wall time the gateway saw the call take, the engine's busy counter). They may differ
by the tolerance: 0.1 % of the request's cost (``CostSettings.identity_tolerance``), turned into
seconds at the rate of the tier the stage runs on, but never less than what the clocks can resolve
(the floor). For a short request the floor is the larger; docs/COSTS.md says when each applies.
"""

from __future__ import annotations

from dataclasses import dataclass

from lynx.accounting.pricing import STAGE_TIER, CostSettings, RequestTimes, attribute_costs

VIOLATION_REASONS = ("stage_counted_twice", "stage_missing_timer", "busy_exceeds_wall", "decoder_exceeds_busy",
                     "negative_stage")
CLOCK_SLACK_SECONDS = 1e-3  # clock granularity, and the bytes still in flight when a call's timer stops
DECODER_STAGES = "prefill+decode"  # the decoder's checks cover both its stages at once


@dataclass(frozen=True)
class Violation:
    """One failed check: ``accounted_seconds`` (what the stage's cost rests on) and ``measured_seconds`` (the
    independent measurement) differ by more than ``tolerance_seconds``."""

    reason: str  # one of VIOLATION_REASONS
    stage: str  # a stage of pricing.STAGES, or DECODER_STAGES
    accounted_seconds: float
    measured_seconds: float
    tolerance_seconds: float


def tolerance_seconds(floor_seconds: float, request_eur: float, eur_per_second: float, relative: float) -> float:
    """The seconds at ``eur_per_second`` that cost ``relative`` of the request, or the floor if that is more: 0.1 % of
    a 10 ms request is far below what a timer resolves. A tier charged nothing has no relative tolerance."""
    if eur_per_second <= 0:
        return floor_seconds
    return max(floor_seconds, relative * request_eur / eur_per_second)


def identity_violations(times: RequestTimes, rates: CostSettings) -> list[Violation]:
    """Where this request's stages disagree with an independent measurement; empty when they agree."""
    request_eur = attribute_costs(times, rates).total

    def tolerance(floor: float, stage: str) -> float:
        tier = "decoder" if stage == DECODER_STAGES else STAGE_TIER[stage]
        return tolerance_seconds(floor, request_eur, rates.per_second(tier), rates.identity_tolerance)

    found = []
    # The request's stopwatch against every stage timer: a stretch outside them all, or inside two, is the gateway's
    # own time (``other``). Untimed seconds while the loop was preempted or collecting garbage are accounted for.
    accounted = times.timed_seconds + times.interrupted_seconds
    if times.timed_seconds - times.wall_seconds > (slack := tolerance(CLOCK_SLACK_SECONDS, "other")):
        found.append(Violation("stage_counted_twice", "other", times.timed_seconds, times.wall_seconds, slack))
    if times.wall_seconds - accounted > (bound := tolerance(rates.untimed_bound_seconds, "other")):
        found.append(Violation("stage_missing_timer", "other", accounted, times.wall_seconds, bound))
    decoder = times.decoder
    for stage, busy, wall in (("tokenize", times.tokenize.busy_seconds, times.tokenize.wall_seconds),
                              ("retrieve", times.retrieve.busy_seconds, times.retrieve.wall_seconds),
                              (DECODER_STAGES, decoder.resident_seconds, decoder.wall_seconds)):
        if busy - wall > (slack := tolerance(CLOCK_SLACK_SECONDS, stage)):
            found.append(Violation("busy_exceeds_wall", stage, busy, wall, slack))
    attributed = decoder.prefill_seconds + decoder.decode_seconds
    if decoder.engine_busy_seconds is not None and \
            attributed - decoder.engine_busy_seconds > (slack := tolerance(CLOCK_SLACK_SECONDS, DECODER_STAGES)):
        found.append(Violation("decoder_exceeds_busy", DECODER_STAGES, attributed, decoder.engine_busy_seconds, slack))
    found.extend(Violation("negative_stage", stage, seconds, 0.0, 0.0)
                 for stage, seconds in times.stage_seconds().items() if seconds < 0)
    return found


def reasons(violations: list[Violation]) -> list[str]:
    """The distinct checks that failed, sorted: what the violation counter and the request's events name."""
    return sorted({v.reason for v in violations})
