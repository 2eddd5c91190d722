from lynx.decoder.stopping import StopMatcher


def feed_all(matcher: StopMatcher, deltas: list[str]) -> str:
    return "".join(matcher.feed(d) for d in deltas) + matcher.flush()


def test_text_before_a_stop_string_is_emitted_and_the_stop_is_dropped():
    matcher = StopMatcher(["END"])
    assert feed_all(matcher, ["Hello E", "N", "D and more"]) == "Hello "
    assert matcher.stopped


def test_a_partial_match_is_held_back_then_released():
    matcher = StopMatcher(["STOP"])
    assert matcher.feed("abc ST") == "abc "
    assert matcher.feed("ory") == "STory"
    assert not matcher.stopped


def test_held_text_is_flushed_at_the_end():
    matcher = StopMatcher(["\n\n"])
    assert matcher.feed("line\n") == "line"
    assert matcher.flush() == "\n"


def test_the_earliest_of_several_stops_wins():
    assert feed_all(StopMatcher(["b", "a"]), ["xxab"]) == "xx"


def test_no_stops_passes_everything_through():
    assert feed_all(StopMatcher([]), ["a", "b"]) == "ab"
