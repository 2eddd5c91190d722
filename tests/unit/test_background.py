"""lynx.service.background.every: rounds go on after a failure, and end with the block."""

from __future__ import annotations

import asyncio
import logging

from lynx.service.background import every


def test_a_failed_round_is_logged_the_next_ones_run_and_none_after_the_block(caplog):
    rounds: list[int] = []

    async def work() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise RuntimeError("the first round fails")

    async def run() -> int:
        async with every(0.001, work, logging.getLogger("test.background"), "round_failed"):
            while len(rounds) < 3:
                await asyncio.sleep(0.001)
        ended = len(rounds)
        await asyncio.sleep(0.02)
        return ended

    with caplog.at_level(logging.ERROR):
        ended = asyncio.run(run())
    assert len(rounds) == ended >= 3  # nothing ran once the block had ended
    assert [r.message for r in caplog.records] == ["round_failed"] and caplog.records[0].exc_info
