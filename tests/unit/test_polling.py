"""The poll helper: the first truthy answer, or an error that says what was awaited and how things stood."""

from __future__ import annotations

import pytest

from lynx.service.polling import poll, wait_for


class Countdown:
    """Falsy answers until its ``ready_after``-th question, then the number of questions asked."""

    def __init__(self, ready_after: int) -> None:
        self.ready_after, self.asked = ready_after, 0

    def __call__(self) -> int:
        self.asked += 1
        return self.asked if self.asked >= self.ready_after else 0


def test_the_first_truthy_answer_is_returned_and_nothing_is_asked_after_it():
    countdown = Countdown(ready_after=3)
    assert wait_for(countdown, timeout=30, what="the third question", interval=0) == 3
    assert countdown.asked == 3


def test_a_predicate_that_never_holds_fails_naming_what_was_awaited_and_the_state_then():
    never = Countdown(ready_after=10**9)
    with pytest.raises(TimeoutError) as raised:
        wait_for(never, timeout=0.05, what="the moon", interval=0.01, explain=lambda: f"asked {never.asked} times")
    message = str(raised.value)
    assert message.startswith("timed out after 0.05 s waiting for the moon\n")
    assert message.endswith(f"asked {never.asked} times")
    assert never.asked >= 2  # asked again when the time was up, not only at the start


def test_the_caller_chooses_the_error():
    class NotReady(Exception):
        pass

    with pytest.raises(NotReady, match="waiting for nothing"):
        wait_for(lambda: None, timeout=0, what="nothing", error=NotReady)


def test_poll_answers_none_when_the_time_is_up():
    assert poll(lambda: [], timeout=0, interval=0) is None
    assert poll(Countdown(ready_after=1), timeout=0) == 1  # a zero timeout still asks once
