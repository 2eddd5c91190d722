"""Iteration-level continuous batching over a fixed pool of KV-cache slots.

One engine thread owns the model. Each iteration it (1) drops cancelled or expired
sequences, (2) admits waiting sequences into free slots and prefills them, within a token
budget so running streams are not starved, and (3) runs one decode step for every running
sequence at once. Requests beyond the slots wait in a bounded queue; beyond that they are
refused at once. Time is attributed as it is spent: a prefill call to the sequence it
prefilled, a decode step's wall time split evenly across the sequences in that step, so the
attributed seconds of all requests add up to the engine's busy time.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lynx.decoder import kv
from lynx.decoder.model import DecoderModel
from lynx.decoder.sampling import SamplingParams, sample
from lynx.decoder.stopping import StopMatcher
from lynx.telemetry.metrics import engine_metrics
from lynx.tokenizer.detok import IncrementalDetokenizer

log = logging.getLogger("lynx.decoder.engine")


class QueueFull(Exception):
    """Every slot is taken and the wait queue is at capacity."""


@dataclass(frozen=True)
class GenerationRequest:
    prompt_ids: list[int]
    max_tokens: int
    sampling: SamplingParams = SamplingParams()
    stop: tuple[str, ...] = ()
    deadline: float | None = None  # time.monotonic() value after which generation ends
    seed: int | None = None
    ignore_eos: bool = False  # benchmarks: always generate max_tokens


@dataclass(frozen=True)
class Delta:
    token_ids: list[int]
    text: str


@dataclass(frozen=True)
class Timings:
    """What one sequence cost the decoder; epoch nanoseconds delimit its spans."""

    queue_seconds: float
    prefill_seconds: float
    decode_seconds: float
    decode_steps: int
    submitted_ns: int
    admitted_ns: int
    first_token_ns: int
    finished_ns: int


@dataclass(frozen=True)
class Finish:
    reason: str  # stop | length | deadline
    prompt_tokens: int
    completion_tokens: int
    timings: Timings


@dataclass(eq=False)
class Sequence:
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    detokenizer: IncrementalDetokenizer
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False
    length: int = 0
    last_token: int = -1
    generated: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    decode_steps: int = 0
    submitted_ns: int = field(default_factory=time.time_ns)
    submitted_at: float = field(default_factory=time.perf_counter)
    admitted_ns: int = 0
    admitted_at: float = 0.0
    first_token_ns: int = 0

    def __post_init__(self) -> None:
        self.stopper = StopMatcher(list(self.request.stop))
        self.rng = np.random.default_rng(self.request.seed)

    def emit(self, event: Delta | Finish) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the request's event loop is gone; nobody is listening
            self.cancelled = True


class BatchingEngine:
    def __init__(self, model: DecoderModel, *, slots: int, queue_capacity: int, max_context: int,
                 prefill_token_budget: int, static_batching: bool,
                 detokenizer_factory: Callable[[], IncrementalDetokenizer]) -> None:
        self.model = model
        self.slots = slots
        self.queue_capacity = queue_capacity
        self.max_context = max_context
        self.prefill_token_budget = prefill_token_budget
        self.static_batching = static_batching
        self.detokenizer_factory = detokenizer_factory
        self._waiting: deque[Sequence] = deque()
        self._running: list[Sequence] = []
        self._cache: list[np.ndarray] | None = None
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="lynx-engine", daemon=True)
        self.metrics = engine_metrics()
        self.metrics.slots_total.set(slots)
        self._publish_occupancy()

    # --- called from the event loop -------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=30)

    def submit(self, request: GenerationRequest) -> Sequence:
        sequence = Sequence(request=request, loop=asyncio.get_running_loop(),
                            detokenizer=self.detokenizer_factory())
        with self._wake:
            free_slots = self.slots - len(self._running)
            if len(self._waiting) >= self.queue_capacity + max(free_slots, 0):
                self.metrics.rejected.inc()
                raise QueueFull
            self._waiting.append(sequence)
            self._wake.notify()
        self._publish_occupancy()
        return sequence

    def cancel(self, sequence: Sequence) -> None:
        """Free the sequence's slot at the next step boundary (a few milliseconds)."""
        sequence.cancelled = True
        with self._wake:
            self._wake.notify()

    @property
    def slots_used(self) -> int:
        return len(self._running)

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    # --- the engine thread ----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._wake:
                while not (self._stopping or self._waiting or self._running):
                    self._wake.wait()
                if self._stopping:
                    return
            try:
                self._drop_cancelled()
                self._admit()
                if self._running:
                    self._decode_step()
            except Exception:  # never leave waiting clients hanging on a dead engine
                log.exception("engine_step_failed")
                self._fail_all()

    def _drop_cancelled(self) -> None:
        with self._wake:
            expired = [s for s in self._waiting if s.cancelled or self._past_deadline(s)]
            for sequence in expired:
                self._waiting.remove(sequence)
        for sequence in expired:
            if not sequence.cancelled:
                sequence.admitted_ns = sequence.first_token_ns = time.time_ns()
                sequence.admitted_at = time.perf_counter()
                self._finish(sequence, "deadline")
        gone = [s for s in self._running if s.cancelled]
        if gone:
            self._keep([s for s in self._running if not s.cancelled])
        if expired or gone:
            self._publish_occupancy()

    def _admit(self) -> None:
        if self.static_batching and self._running:
            return
        admitted: list[Sequence] = []
        budget = self.prefill_token_budget
        with self._wake:
            while self._waiting and len(self._running) + len(admitted) < self.slots:
                prompt_tokens = len(self._waiting[0].request.prompt_ids)
                if admitted and not self.static_batching and prompt_tokens > budget:
                    break
                admitted.append(self._waiting.popleft())
                budget -= prompt_tokens
        if not admitted:
            return
        joining: list[np.ndarray] | None = None
        joined: list[Sequence] = []
        for sequence in admitted:
            started = time.perf_counter()
            sequence.admitted_at, sequence.admitted_ns = started, time.time_ns()
            logits, cache = self.model.prefill([sequence.request.prompt_ids])
            sequence.length = len(sequence.request.prompt_ids)
            reason = self._accept(sequence, sample(logits[0], sequence.request.sampling, sequence.rng))
            sequence.first_token_ns = time.time_ns()
            if reason is None:
                joining = kv.join(joining, cache)
                joined.append(sequence)
            elapsed = time.perf_counter() - started
            sequence.prefill_seconds += elapsed
            self._record_busy("prefill", elapsed)
            if reason is not None:
                self._finish(sequence, reason)
        if joined:
            started = time.perf_counter()
            self._cache = kv.join(self._cache, joining)
            self._running.extend(joined)
            elapsed = time.perf_counter() - started
            for sequence in joined:  # joining the batch is part of getting these sequences going
                sequence.prefill_seconds += elapsed / len(joined)
            self._record_busy("prefill", elapsed)
        self._publish_occupancy()

    def _decode_step(self) -> None:
        started = time.perf_counter()
        running = self._running
        lengths = [s.length for s in running]
        input_ids = np.array([[s.last_token] for s in running], dtype=np.int64)
        mask = kv.decode_attention_mask(lengths, self._cache[0].shape[kv.SEQ_AXIS])
        logits, self._cache = self.model.run(input_ids, mask, self._cache)
        finished: list[tuple[Sequence, str]] = []
        for row, sequence in enumerate(running):
            sequence.length += 1
            reason = self._accept(sequence, sample(logits[row, -1], sequence.request.sampling, sequence.rng))
            if reason is not None:
                finished.append((sequence, reason))
        if finished:
            done = {id(s) for s, _ in finished}
            self._keep([s for s in running if id(s) not in done])
        elapsed = time.perf_counter() - started
        share = elapsed / len(running)
        for sequence in running:
            sequence.decode_seconds += share
            sequence.decode_steps += 1
        self._record_busy("decode", elapsed)
        for sequence, reason in finished:
            self._finish(sequence, reason)
        if finished:
            self._publish_occupancy()

    def _accept(self, sequence: Sequence, token: int) -> str | None:
        """Record one generated token, stream its text; the finish reason if it ends the sequence."""
        sequence.last_token = token
        sequence.generated += 1
        request = sequence.request
        if token == self.model.eos_token_id and not request.ignore_eos:
            sequence.emit(Delta([token], ""))
            return "stop"
        text = sequence.stopper.feed(sequence.detokenizer.push(token))
        sequence.emit(Delta([token], text))
        if sequence.stopper.stopped:
            return "stop"
        if sequence.generated >= request.max_tokens or sequence.length + 1 >= self.max_context:
            return "length"
        if self._past_deadline(sequence):
            return "deadline"
        return None

    def _finish(self, sequence: Sequence, reason: str) -> None:
        tail = sequence.stopper.flush()
        if tail:
            sequence.emit(Delta([], tail))
        finished_ns = time.time_ns()
        sequence.emit(Finish(
            reason=reason,
            prompt_tokens=len(sequence.request.prompt_ids),
            completion_tokens=sequence.generated,
            timings=Timings(
                queue_seconds=sequence.admitted_at - sequence.submitted_at,
                prefill_seconds=sequence.prefill_seconds,
                decode_seconds=sequence.decode_seconds,
                decode_steps=sequence.decode_steps,
                submitted_ns=sequence.submitted_ns,
                admitted_ns=sequence.admitted_ns,
                first_token_ns=sequence.first_token_ns or finished_ns,
                finished_ns=finished_ns,
            ),
        ))

    def _keep(self, survivors: list[Sequence]) -> None:
        rows = [i for i, s in enumerate(self._running) if any(s is kept for kept in survivors)]
        self._cache = kv.keep_rows(self._cache, rows, [self._running[i].length for i in rows])
        self._running = [self._running[i] for i in rows]

    def _fail_all(self) -> None:
        with self._wake:
            victims = [*self._running, *self._waiting]
            self._waiting.clear()
        self._running, self._cache = [], None
        for sequence in victims:
            sequence.emit(Finish("error", len(sequence.request.prompt_ids), sequence.generated, Timings(
                0.0, sequence.prefill_seconds, sequence.decode_seconds, sequence.decode_steps,
                sequence.submitted_ns, sequence.admitted_ns, sequence.first_token_ns, time.time_ns())))
        self._publish_occupancy()

    @staticmethod
    def _past_deadline(sequence: Sequence) -> bool:
        deadline = sequence.request.deadline
        return deadline is not None and time.monotonic() >= deadline

    def _record_busy(self, phase: str, seconds: float) -> None:
        self.metrics.busy_seconds.labels(phase).inc(seconds)
        self.metrics.step_duration.labels(phase).observe(seconds)

    def _publish_occupancy(self) -> None:
        self.metrics.slots_used.set(len(self._running))
        self.metrics.queue_depth.set(len(self._waiting))
