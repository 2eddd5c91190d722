"""A streamed body's lines end at line feeds alone, wherever the chunks happen to be cut."""

from __future__ import annotations

import asyncio

import httpx

from lynx.contracts.decoder import TokenDelta, encode_events, parse_event
from lynx.service.lines import body_lines

# Text a model may generate: JSON leaves these unescaped, str.splitlines ends a line at each of them.
UNESCAPED_SEPARATORS = "a\u2028b\u2029c\x85d"


def lines_of(chunks: list[bytes]) -> list[str]:
    async def stream():
        for chunk in chunks:
            yield chunk

    async def read() -> list[str]:
        return [line async for line in body_lines(httpx.Response(200, content=stream()))]

    return asyncio.run(read())


def test_events_whose_text_holds_unicode_line_separators_stay_whole():
    events = [TokenDelta(ids=[7], text=UNESCAPED_SEPARATORS, prefill_seconds=0.1, decode_seconds=0.2),
              TokenDelta(ids=[8, 9], text="é€", prefill_seconds=0.1, decode_seconds=0.3)]
    body = encode_events(events)
    assert len(body.decode().splitlines()) > len(events)  # what httpx's aiter_lines would have cut
    # Cut into 3-byte chunks: through the separators' and the accented letters' UTF-8 bytes.
    lines = lines_of([body[i:i + 3] for i in range(0, len(body), 3)])
    assert [parse_event(line) for line in lines] == events


def test_crlf_endings_and_a_last_line_without_one():
    assert lines_of([b"data: 1\r", b"\ndata: 2\n\n", b"data: 3"]) == ["data: 1", "data: 2", "", "data: 3"]


def test_bytes_that_are_not_utf8_read_as_replacement_characters():
    assert lines_of([b"ok \xff\n"]) == ["ok \ufffd"]
