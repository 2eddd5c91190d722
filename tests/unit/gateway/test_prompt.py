from lynx.contracts.decoder import DecoderTimings, StreamFinished, Usage
from lynx.contracts.retriever import RetrievedPassage
from lynx.contracts.tokenizer import ChatMessage
from lynx.errors import LynxError
from lynx.gateway.orchestrator import retrieval_query, outcome_of, with_passages

PASSAGES = [RetrievedPassage(id="1", source="a.html", text="alpha", score=0.9),
            RetrievedPassage(id="2", source="b.html", text="beta", score=0.8)]


def message(role: str, content: str) -> ChatMessage:
    return ChatMessage(role=role, content=content)


def test_passages_go_into_a_new_system_message():
    messages = with_passages([message("user", "q")], PASSAGES)
    assert messages[0].role == "system"
    assert "[a.html] alpha" in messages[0].content and "[b.html] beta" in messages[0].content
    assert messages[1] == message("user", "q")


def test_passages_extend_an_existing_system_message():
    messages = with_passages([message("system", "Be brief."), message("user", "q")], PASSAGES)
    assert len(messages) == 2 and messages[0].content.startswith("Be brief.")


def test_no_passages_leaves_the_messages_alone():
    original = [message("user", "q")]
    assert with_passages(original, []) is original


def test_the_query_is_the_last_user_message():
    assert retrieval_query([message("user", "first"), message("assistant", "a"), message("user", "second")]) == "second"


def test_outcomes_follow_how_the_request_ended():
    def finished(reason: str) -> StreamFinished:
        return StreamFinished(finish_reason=reason, usage=Usage(prompt_tokens=1, completion_tokens=1),
                              timings=DecoderTimings(queue_seconds=0, prefill_seconds=0, decode_seconds=0,
                                                     decode_steps=0, resident_seconds=0, engine_busy_seconds=0))
    assert outcome_of(None, None, finished("stop")) == "completed"
    assert outcome_of(None, None, finished("length")) == "completed"
    assert outcome_of(None, None, finished("deadline")) == "deadline"
    assert outcome_of(None, None, finished("error")) == "failed"
    assert outcome_of(None, None, None) == "failed"
    assert outcome_of(None, LynxError(502, "m", "c"), finished("stop")) == "failed"
    assert outcome_of("client_closed", None, finished("cancelled")) == "client_closed"
