"""One streaming chat completion as a client sees it: what it was told, whether it got a whole answer, what it cost.

Shared by the tests that count decoder instances' work locally (test_decoder_instances.py) and on the real node
(tests/cluster/test_real_node.py).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import httpx

from .conftest import MODEL_NAME


@dataclass
class Told:
    """What one streaming client was told: its trace, whether it got a whole answer, what it cost and the error
    code (in the error body, or in the stream's last event once it had started); ``streamed``: the stream had begun
    (status 200) before it ended, whole or not."""

    trace_id: str
    completed: bool
    cost: float
    error_code: str | None
    streamed: bool


def stream_completion(base_url: str, key: str, content: str, max_tokens: int) -> Told:
    body = {"model": MODEL_NAME, "temperature": 0, "max_tokens": max_tokens, "stream": True, "retrieval_top_k": 0,
            "messages": [{"role": "user", "content": content}]}
    headers = {"Authorization": f"Bearer {key}", "X-Request-ID": f"stream-{uuid.uuid4().hex[:12]}"}
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, headers=headers,
                      timeout=120) as response:
        trace_id = response.headers["x-lynx-trace-id"]
        if response.status_code != 200:  # it failed before its first token: told in the error body, with its cost
            body = json.loads(response.read())
            return Told(trace_id, False, body["lynx"]["cost"]["total"], body["error"]["code"], False)
        events = [json.loads(line[len("data: "):]) for line in response.iter_lines() if line.startswith("data: {")]
    costed = [e for e in events if e.get("lynx")]
    assert costed, f"no cost in the stream of {trace_id}: {events[-3:]}"
    error = events[-1].get("error")
    return Told(trace_id, error is None, costed[-1]["lynx"]["cost"]["total"], error and error["code"], True)
