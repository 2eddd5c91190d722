import pytest

from lynx.retriever.corpus import chunk_words, html_to_text, iter_passages


def test_html_keeps_text_and_drops_scripts_and_navigation():
    html = "<html><head><title>t</title></head><body><nav>menu</nav><p>Hello <b>world</b></p>" \
           "<script>var x;</script><p>Second</p></body></html>"
    assert html_to_text(html) == "Hello world\n\nSecond"


def test_chunks_overlap_and_cover_every_word():
    words = [f"w{i}" for i in range(25)]
    chunks = chunk_words(" ".join(words), size=10, overlap=2)
    assert chunks[0].split() == words[:10]
    assert chunks[1].split()[0] == "w8"
    assert set(" ".join(chunks).split()) == set(words)


def test_a_short_text_is_one_chunk_and_an_empty_one_none():
    assert chunk_words("just a few words", size=10, overlap=2) == ["just a few words"]
    assert chunk_words("", size=10, overlap=2) == []


def test_overlap_must_be_smaller_than_the_chunk():
    with pytest.raises(ValueError):
        chunk_words("a b c", size=2, overlap=2)


def test_passages_come_from_supported_files_with_stable_ids(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n\nSome markdown text.")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.html").write_text("<p>Some html text.</p>")
    (tmp_path / "c.bin").write_bytes(b"\x00\x01")
    passages = list(iter_passages(tmp_path))
    assert [p.id for p in passages] == ["a.md#0", "sub/b.html#0"]
    assert passages[1].text == "Some html text."


def test_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(iter_passages(tmp_path / "nope"))
