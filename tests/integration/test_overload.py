"""Queue full, client disconnects and deadlines, on a decoder with one slot and one queue place."""

from __future__ import annotations

import threading
import time

import httpx

from .conftest import MODEL_NAME, Stack, metric_value, wait_for

LONG = {"model": MODEL_NAME, "temperature": 0, "max_tokens": 400, "retrieval_top_k": 0,
        "messages": [{"role": "user", "content": "Write a long story about a lynx in the snow."}]}


def slots_used(stack: Stack) -> float:
    return metric_value(httpx.get(f"{stack.decoder.url}/metrics").text, "lynx_kv_cache_slots_used")


def hold_slot(stack: Stack, started: threading.Event, stop: threading.Event) -> None:
    """A decoder stream that runs until told to stop (end-of-sequence ignored)."""
    with httpx.stream("POST", f"{stack.decoder.url}/v1/generate", timeout=60,
                      json={"input_ids": [1, 9690, 198], "max_tokens": 1500, "ignore_eos": True}) as response:
        for _ in response.iter_lines():
            started.set()
            if stop.is_set():
                return


def test_a_full_queue_is_refused_fast_with_retry_after(tight_stack: Stack):
    stop = threading.Event()
    first, second = threading.Event(), threading.Event()
    holders = [threading.Thread(target=hold_slot, args=(tight_stack, first, stop)),
               threading.Thread(target=hold_slot, args=(tight_stack, second, stop))]
    holders[0].start()
    assert first.wait(30)
    wait_for(lambda: slots_used(tight_stack) == 1, 10, "the first stream to hold the slot", 0.05)
    holders[1].start()  # waits in the single queue place
    wait_for(lambda: metric_value(httpx.get(f"{tight_stack.decoder.url}/metrics").text, "lynx_queue_depth") == 1, 10,
             "the second stream to wait in the queue", 0.05)
    started = time.monotonic()
    response = httpx.post(f"{tight_stack.gateway.url}/v1/chat/completions", headers=tight_stack.headers(),
                          json=LONG, timeout=30)
    elapsed = time.monotonic() - started
    stop.set()
    for holder in holders:
        holder.join(timeout=60)
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "queue_full"
    assert response.json()["lynx"]["trace_id"] == response.headers["x-lynx-trace-id"]
    assert elapsed < 2.0
    wait_for(lambda: slots_used(tight_stack) == 0, 10, "the slot to be free again", 0.05)


def test_a_client_that_disconnects_frees_its_slot_at_once(tight_stack: Stack):
    with httpx.stream("POST", f"{tight_stack.gateway.url}/v1/chat/completions", headers=tight_stack.headers(),
                      json={**LONG, "stream": True}, timeout=60) as response:
        lines = response.iter_lines()
        for _ in range(3):
            next(lines)
        assert slots_used(tight_stack) == 1
        disconnected = time.monotonic()
    wait_for(lambda: slots_used(tight_stack) == 0, 5, "the slot to be freed", 0.05)
    assert time.monotonic() - disconnected < 2.0


def test_the_deadline_ends_generation_with_a_clean_partial_answer(tight_stack: Stack):
    started = time.monotonic()
    response = httpx.post(f"{tight_stack.gateway.url}/v1/chat/completions", headers=tight_stack.headers(),
                          json={**LONG, "max_tokens": 1000}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["finish_reason"] == "deadline"
    assert body["choices"][0]["message"]["content"]
    assert 0 < body["usage"]["completion_tokens"] < 1000
    assert time.monotonic() - started < 8.0
