from lynx.gateway.orchestrator import last_user_text, with_passages

PASSAGES = [{"source": "a.html", "text": "alpha"}, {"source": "b.html", "text": "beta"}]


def test_passages_go_into_a_new_system_message():
    messages = with_passages([{"role": "user", "content": "q"}], PASSAGES)
    assert messages[0]["role"] == "system"
    assert "[a.html] alpha" in messages[0]["content"] and "[b.html] beta" in messages[0]["content"]
    assert messages[1] == {"role": "user", "content": "q"}


def test_passages_extend_an_existing_system_message():
    messages = with_passages([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q"}],
                             PASSAGES)
    assert len(messages) == 2 and messages[0]["content"].startswith("Be brief.")


def test_no_passages_leaves_the_messages_alone():
    original = [{"role": "user", "content": "q"}]
    assert with_passages(original, []) is original


def test_the_query_is_the_last_user_message():
    assert last_user_text([{"role": "user", "content": "first"}, {"role": "assistant", "content": "a"},
                           {"role": "user", "content": "second"}]) == "second"
