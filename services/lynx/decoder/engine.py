"""Iteration-level continuous batching over a fixed pool of KV-cache slots.

One engine thread owns the model. Each iteration it (1) ends the sequences that were cancelled
or ran out of time, (2) admits waiting sequences into free slots, (3) does at most
``prefill_token_budget`` tokens of prompt work: every short prompt not yet started, batched in
one call, or else the next chunk of a long one, and (4) runs one decode step for every running
sequence at once. A prompt joins the running batch once its last chunk is in. So a long prompt
delays the running streams by at most one chunk per step, never by its whole prefill. Chunks
are cut at fixed offsets of each prompt (multiples of the budget), so what a sequence generates
does not depend on what else the engine holds. Requests beyond the slots wait in a bounded
queue; beyond that they are refused at once, and so is a request that would wait for a slot longer than its deadline
allows (``admission.py``).

The KV cache is one preallocated pool with a row per slot (``kv.KVPool``), which the model reads
and writes in place: the running sequences hold its first rows, in order; a batch of short prompts
is prefilled into the rows after them, a long prompt's chunks into the last row; a sequence that
ends leaves a gap that the last running row moves into. Nothing else is copied between steps.

Accounting: one clock cuts the engine thread's time into contiguous laps. A lap that ends
with prompt work is charged to the sequences of that call (by their share of its tokens), a lap
that ends with a decode step is split between the rows of that step (``lynx.accounting.shares``), and every
other lap (waiting for work) is idle; so attributed + idle = the thread's wall time. Every
sequence the engine accepts ends with exactly one ``Finish`` carrying what it consumed, however
it ends (stop, length, deadline, cancelled, error), so no path leaves a consumed second uncharged.
What a step produces reaches the requests' event loops at the end of the iteration, in one
hand-over per loop (``outbox.py``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lynx.accounting.shares import StepCostModel, step_shares
from lynx.decoder import kv
from lynx.decoder.admission import Backlog, Refusal, admission_refusal, prior_sequence_seconds, weighted_mean
from lynx.decoder.model import DecoderModel
from lynx.decoder.outbox import Outbox
from lynx.decoder.sampling import SamplingParams, sample
from lynx.decoder.stopping import StopMatcher
from lynx.service.faults import FaultState
from lynx.telemetry.metrics import engine_metrics
from lynx.tokenization.detok import IncrementalDetokenizer

log = logging.getLogger("lynx.decoder.engine")
SHUTDOWN_MESSAGE = "the decoder is shutting down"
WARM_UP_TOKENS = 128  # the longest prompt work the warm-up runs (at most the step's prefill budget)


class QueueFull(Exception):
    """Every slot is taken and the wait queue is at capacity."""


class WaitExceedsDeadline(Exception):
    """Every slot is taken and the request would not finish before its deadline (``admission.py``)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal)
        self.refusal = refusal


class InjectedFault(RuntimeError):
    """A step failure asked for by the fault plan (chaos testing only)."""


@dataclass(frozen=True)
class GenerationRequest:
    prompt_ids: list[int]
    max_tokens: int
    sampling: SamplingParams = SamplingParams()
    stop: tuple[str, ...] = ()
    deadline: float | None = None  # time.monotonic() value after which generation ends
    seed: int | None = None
    ignore_eos: bool = False  # benchmarks: always generate max_tokens
    tenant: str = ""
    request_id: str = ""


@dataclass(frozen=True)
class Delta:
    """Tokens generated, their text, and what the sequence had consumed when they were."""

    token_ids: list[int]
    text: str
    prefill_seconds: float
    decode_seconds: float


@dataclass(frozen=True)
class Timings:
    """What one sequence cost the decoder; epoch nanoseconds delimit its spans."""

    queue_seconds: float
    prefill_seconds: float
    decode_seconds: float
    decode_steps: int
    resident_seconds: float
    engine_busy_seconds: float
    submitted_ns: int
    admitted_ns: int  # 0: never admitted (ended while waiting)
    first_token_ns: int
    finished_ns: int


@dataclass(frozen=True)
class Finish:
    reason: str  # stop | length | deadline | cancelled | error
    prompt_tokens: int
    completion_tokens: int
    timings: Timings
    error: str | None = None


@dataclass(eq=False)
class Sequence:
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    detokenizer: IncrementalDetokenizer
    busy_at_submit: float
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False
    detached: bool = False  # nobody reads its events any more
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
    pending_ids: list[int] = field(default_factory=list)
    pending_text: str = ""
    prefilled: int = 0  # prompt tokens in its cache so far

    @property
    def prompt_left(self) -> int:
        return len(self.request.prompt_ids) - self.prefilled

    def __post_init__(self) -> None:
        self.stopper = StopMatcher(list(self.request.stop))
        self.rng = np.random.default_rng(self.request.seed)

    def take_delta(self) -> Delta | None:
        """The tokens accepted since the last delta, with the consumption charged so far (None: nothing new)."""
        if not (self.pending_ids or self.pending_text):
            return None
        delta = Delta(self.pending_ids, self.pending_text, self.prefill_seconds, self.decode_seconds)
        self.pending_ids, self.pending_text = [], ""
        return delta


def choose_tokens(sequences: list[Sequence], logits: np.ndarray) -> list[tuple[int, str | None]]:
    """Each sequence's next token from its row of ``logits``: the greedy rows with one argmax over the batch, the
    others sampled one by one. With an error instead of a token where sampling failed (NaN logits, say): that ends
    its own sequence, not the batch it shares."""
    greedy = logits.argmax(axis=-1).tolist() if any(s.request.sampling.greedy for s in sequences) else None
    chosen: list[tuple[int, str | None]] = []
    for row, sequence in enumerate(sequences):
        if greedy is not None and sequence.request.sampling.greedy:
            chosen.append((greedy[row], None))
            continue
        try:
            chosen.append((sample(logits[row], sequence.request.sampling, sequence.rng), None))
        except Exception as error:
            log.exception("sampling_failed")
            chosen.append((-1, f"sampling failed: {type(error).__name__}: {error}"))
    return chosen


class EngineClock:
    """Cuts the engine thread's time into contiguous laps, each one busy or idle."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.restart()

    def restart(self) -> None:
        """Start counting from now, from zero (the engine's time begins when it starts serving)."""
        with self._lock:
            self._mark = time.perf_counter()
            self._waiting = False
            self.busy_seconds = 0.0
            self._idle_seconds = 0.0

    def _lap(self) -> float:
        now = time.perf_counter()
        elapsed, self._mark = now - self._mark, now
        return elapsed

    def busy_lap(self) -> float:
        with self._lock:
            elapsed = self._lap()
            self.busy_seconds += elapsed
            return elapsed

    def start_waiting(self) -> None:
        with self._lock:
            self._idle_seconds += self._lap()
            self._waiting = True

    def stop_waiting(self) -> None:
        with self._lock:
            self._idle_seconds += self._lap()
            self._waiting = False

    def idle_seconds(self) -> float:
        """Idle so far, including a wait still in progress."""
        with self._lock:
            return self._idle_seconds + (time.perf_counter() - self._mark if self._waiting else 0.0)


class BatchingEngine:
    def __init__(self, model: DecoderModel, *, slots: int, queue_capacity: int, max_context: int,
                 prefill_token_budget: int, static_batching: bool, step_cost: StepCostModel,
                 detokenizer_factory: Callable[[], IncrementalDetokenizer], admit_by_deadline: bool = True) -> None:
        self.model = model
        self.slots = slots
        self.queue_capacity = queue_capacity
        self.max_context = max_context
        self.prefill_token_budget = prefill_token_budget
        self.static_batching = static_batching
        self.step_cost = step_cost
        self.detokenizer_factory = detokenizer_factory
        self.admit_by_deadline = admit_by_deadline
        self.seconds_per_sequence: float | None = None  # measured slot time (admission.py); None until measured
        self.faults = FaultState()  # the app replaces it with the one its /admin/faults route sets
        self.clock = EngineClock()
        self._fault_rng = random.Random()
        self._waiting: deque[Sequence] = deque()
        self._prefilling: list[Sequence] = []  # in a slot, prompt not yet whole in the cache
        self._in_call: tuple[str, list[Sequence]] = ("decode", [])  # what the model is running, for _fail_all
        self._running: list[Sequence] = []
        self._by_id: dict[str, Sequence] = {}
        # One row per slot; the running sequences hold rows [0, n) in the order of _running (kv.KVPool).
        self._pool = model.kv_pool(slots, max_context)
        self._outbox = Outbox()  # sent at the end of every iteration
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="lynx-engine", daemon=True)
        self._warm_up_first = False
        self.serving = threading.Event()
        self.metrics = engine_metrics()
        self.metrics.slots_total.set(slots)
        self.metrics.idle_seconds.source = self.clock.idle_seconds
        for phase in ("prefill", "decode"):  # series exist from the start: "none unread" reads 0, not "no data"
            self.metrics.busy_seconds.labels(phase)
            self.metrics.unread_seconds.labels(phase)
        for reason in ("queue_full", "deadline"):
            self.metrics.rejected.labels(reason)
        self._publish_occupancy()

    # --- called from the event loop -------------------------------------------------------
    def start(self, warm_up: bool = False) -> None:
        """Start the engine thread; with ``warm_up``, it first runs each kind of model call once (``serving`` is set
        when it is done)."""
        self._warm_up_first = warm_up
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=30)

    def submit(self, request: GenerationRequest) -> Sequence:
        sequence = Sequence(request=request, loop=asyncio.get_running_loop(),
                            detokenizer=self.detokenizer_factory(), busy_at_submit=self.clock.busy_seconds)
        with self._wake:
            free_slots = self.slots - len(self._running) - len(self._prefilling)
            if self._stopping or len(self._waiting) >= self.queue_capacity + max(free_slots, 0):
                self.metrics.rejected.labels("queue_full").inc()
                raise QueueFull
            refusal = self._refusal(request, Backlog(len(self._waiting), free_slots, self.slots))
            if refusal is not None:
                self.metrics.rejected.labels("deadline").inc()
                raise WaitExceedsDeadline(refusal)
            self._waiting.append(sequence)
            self._by_id[sequence.id] = sequence
            self._wake.notify()
        self._publish_occupancy()
        return sequence

    def _refusal(self, request: GenerationRequest, backlog: Backlog) -> Refusal | None:
        if not self.admit_by_deadline or request.deadline is None:
            return None
        seconds = self.seconds_per_sequence
        if seconds is None:
            seconds = prior_sequence_seconds(self.step_cost, self.slots, len(request.prompt_ids), request.max_tokens)
        return admission_refusal(backlog, seconds, request.deadline - time.monotonic())

    def cancel(self, sequence: Sequence) -> None:
        """End the sequence at the next step boundary (a few milliseconds); it still gets its Finish."""
        sequence.cancelled = True
        with self._wake:
            self._wake.notify()

    def cancel_by_id(self, sequence_id: str) -> bool:
        """False when no such sequence is held (it has already finished)."""
        with self._wake:
            sequence = self._by_id.get(sequence_id)
        if sequence is None:
            return False
        self.cancel(sequence)
        return True

    def detach(self, sequence: Sequence) -> None:
        """Its reader is gone: stop it, and log what it consumed since nobody will charge it."""
        sequence.detached = True
        self.cancel(sequence)

    @property
    def slots_used(self) -> int:
        return len(self._running) + len(self._prefilling)

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    # --- the engine thread ----------------------------------------------------------------
    def _has_work(self) -> bool:
        return self._stopping or bool(self._waiting) or bool(self._prefilling) or bool(self._running)

    def _warm_up(self) -> None:
        """Each kind of model call once, greedy, at the largest prompt work of one step: a long prompt's first two
        chunks and a decode step after them, then short prompts in every row and a decode step of all rows.
        onnxruntime's first calls grow its buffers, some of them the calling thread's own, so this runs on the engine
        thread. Without it, the first requests after a start wait longer for their first token than later ones; how
        much longer, with and without it, is measured in docs/BENCHMARKS.md ("The first requests after a decoder
        starts", scripts/bench_cold_start.py). Nothing it leaves in the cache is read: each sequence prefills its own
        row."""
        model, pool, pad = self.model, self._pool, self.model.pad_token_id
        tokens = max(1, min(self.prefill_token_budget, WARM_UP_TOKENS, (self.max_context - 1) // 2))
        model.prefill_rows(pool, 0, [[pad] * tokens])
        token = int(model.extend_row(pool, 0, tokens, [pad] * tokens).argmax())
        model.decode_rows(pool, [token], [2 * tokens])
        short = max(1, tokens // pool.rows)
        firsts = model.prefill_rows(pool, 0, [[pad] * short] * pool.rows).argmax(axis=-1).tolist()
        model.decode_rows(pool, firsts, [short] * pool.rows)
        np.random.default_rng()  # a process's first generator takes ~12 ms to set up; each sequence makes one

    def _run(self) -> None:
        if self._warm_up_first:
            try:
                self._warm_up()
            except Exception:  # serving still starts: a broken model fails its first request with a clear error
                log.exception("warm_up_failed")
        self.clock.restart()  # the engine's time (busy + idle) starts when it serves
        self.serving.set()
        while True:
            with self._wake:
                if not self._has_work():
                    self.clock.start_waiting()
                    while not self._has_work():
                        self._wake.wait()
                    self.clock.stop_waiting()
                if self._stopping:
                    break
            try:
                self._end_cancelled_and_expired()
                self._admit()
                self._prefill_step()
                if self._running:
                    self._decode_step()
            except Exception as error:  # never leave waiting clients hanging on a dead engine
                log.exception("engine_step_failed")
                self._fail_all(f"{type(error).__name__}: {error}")
            self._outbox.send(self._undeliverable)
        self._fail_all(SHUTDOWN_MESSAGE)
        self._outbox.send(self._undeliverable)

    def _end_cancelled_and_expired(self) -> None:
        with self._wake:
            ended = [s for s in self._waiting if s.cancelled or self._past_deadline(s)]
            for sequence in ended:
                self._waiting.remove(sequence)
        for sequence in ended:
            self._finish(sequence, "cancelled" if sequence.cancelled else "deadline")
        dropped = [s for s in self._prefilling if s.cancelled or self._past_deadline(s)]
        for sequence in dropped:
            self._prefilling.remove(sequence)
            self._finish(sequence, "cancelled" if sequence.cancelled else "deadline")
        gone = [s for s in self._running if s.cancelled]
        if gone:
            self._keep_running_except({id(s) for s in gone})
            for sequence in gone:
                self._finish(sequence, "cancelled")
        if ended or dropped or gone:
            self._publish_occupancy()

    def _admit(self) -> None:
        """Waiting sequences into free slots (static batching: only once the whole last batch is done)."""
        if self.static_batching and (self._running or self._prefilling):
            return
        with self._wake:
            while self._waiting and len(self._running) + len(self._prefilling) < self.slots:
                sequence = self._waiting.popleft()
                sequence.admitted_at, sequence.admitted_ns = time.perf_counter(), time.time_ns()
                self._prefilling.append(sequence)
        self._publish_occupancy()

    def _prefill_step(self) -> None:
        """This step's prompt work (static batching: all of it, the batch decodes together)."""
        while self._prefilling:
            fresh = self._short_unstarted()
            if fresh:
                self._prefill_whole(fresh)
            else:
                self._prefill_chunk(self._prefilling[0])
            if not self.static_batching:
                break
        self._publish_occupancy()

    def _short_unstarted(self) -> list[Sequence]:
        """Prompts not yet started that fit the budget whole, oldest first, as many as fit together."""
        chosen, budget = [], self.prefill_token_budget
        for sequence in self._prefilling:
            tokens = len(sequence.request.prompt_ids)
            if sequence.prefilled == 0 and tokens <= budget:
                chosen.append(sequence)
                budget -= tokens
        return chosen

    def _prefill_whole(self, sequences: list[Sequence]) -> None:
        """Whole prompts in one right-padded call, into the rows after the running ones; each then samples its first
        token and joins the batch."""
        self._in_call = ("prefill", sequences)
        self._maybe_inject_fault()
        logits = self.model.prefill_rows(self._pool, len(self._running), [s.request.prompt_ids for s in sequences])
        for sequence in sequences:
            sequence.prefilled = len(sequence.request.prompt_ids)
        self._start_generating(sequences, logits)

    def _prefill_chunk(self, sequence: Sequence) -> None:
        """The next chunk of one long prompt, in the pool's last row (no other sequence uses it while this one holds a
        slot: running and prefilling sequences together hold at most every row); at its last chunk the row moves next
        to the running ones and the sequence starts generating."""
        self._in_call = ("prefill", [sequence])
        self._maybe_inject_fault()
        start = sequence.prefilled
        chunk = sequence.request.prompt_ids[start:start + self.prefill_token_budget]
        staging = self._pool.rows - 1
        if start == 0:
            logits = self.model.prefill_rows(self._pool, staging, [chunk])[0]
        else:
            logits = self.model.extend_row(self._pool, staging, start, chunk)
        sequence.prefilled += len(chunk)
        if sequence.prompt_left:
            sequence.prefill_seconds += self._busy_lap("prefill")
            return
        self._pool.move(staging, len(self._running), sequence.prefilled)
        self._start_generating([sequence], logits[None, :])

    def _start_generating(self, sequences: list[Sequence], logits: np.ndarray) -> None:
        """Sequences whose prompts are whole in the rows after the running ones (in this order): their first tokens;
        they join the running batch, and those that end at once leave it again. The lap, call and join included, is
        charged by each one's share of the prompt tokens."""
        ended: list[tuple[Sequence, str, str | None]] = []
        for sequence, (token, error) in zip(sequences, choose_tokens(sequences, logits), strict=True):
            sequence.length = len(sequence.request.prompt_ids)
            reason = self._accept(sequence, token) if error is None else "error"
            sequence.first_token_ns = time.time_ns()
            if reason is not None:
                ended.append((sequence, reason, error))
        self._running.extend(sequences)
        self._prefilling = [s for s in self._prefilling if s not in sequences]
        if ended:
            self._keep_running_except({id(s) for s, _, _ in ended})
        elapsed = self._busy_lap("prefill")
        tokens = sum(len(s.request.prompt_ids) for s in sequences)
        for sequence in sequences:
            sequence.prefill_seconds += elapsed * len(sequence.request.prompt_ids) / tokens
            self._send_delta(sequence)
        for sequence, reason, error in ended:
            self._finish(sequence, reason, error)

    def _decode_step(self) -> None:
        running = self._running
        lengths = [s.length for s in running]
        self._in_call = ("decode", running)
        self._maybe_inject_fault()
        logits = self.model.decode_rows(self._pool, [s.last_token for s in running], lengths)
        finished: list[tuple[Sequence, str, str | None]] = []
        for sequence, (token, error) in zip(running, choose_tokens(running, logits), strict=True):
            sequence.length += 1
            reason = self._accept(sequence, token) if error is None else "error"
            if reason is not None:
                finished.append((sequence, reason, error))
        elapsed = self._busy_lap("decode")
        for sequence, share in zip(running, step_shares(elapsed, lengths, self.step_cost), strict=True):
            sequence.decode_seconds += share
            sequence.decode_steps += 1
            self._send_delta(sequence)
        if finished:
            self._keep_running_except({id(s) for s, _, _ in finished})
            for sequence, reason, error in finished:
                self._finish(sequence, reason, error)
            self._publish_occupancy()

    def _accept(self, sequence: Sequence, token: int) -> str | None:
        """Record one generated token and its text; the finish reason if it ends the sequence."""
        sequence.last_token = token
        sequence.generated += 1
        sequence.pending_ids.append(token)
        request = sequence.request
        if token == self.model.eos_token_id and not request.ignore_eos:
            return "stop"
        sequence.pending_text += sequence.stopper.feed(sequence.detokenizer.push(token))
        if sequence.stopper.stopped:
            return "stop"
        if sequence.generated >= request.max_tokens or sequence.length + 1 >= self.max_context:
            return "length"
        if self._past_deadline(sequence):
            return "deadline"
        return None

    def _send_delta(self, sequence: Sequence) -> None:
        delta = sequence.take_delta()
        if delta is not None:
            self._outbox.post(sequence, delta)

    def _undeliverable(self, sequence: Sequence, event: Delta | Finish) -> None:
        """The request's event loop is gone: nobody reads this sequence any more, so it stops at the next step, and
        its end (now, or when it comes) goes to the decoder's unread record instead."""
        if isinstance(event, Finish) and not sequence.detached:
            self._report_unread(sequence, event)
        sequence.detached = sequence.cancelled = True

    def _finish(self, sequence: Sequence, reason: str, error: str | None = None) -> None:
        sequence.pending_text += sequence.stopper.flush()
        self._send_delta(sequence)
        finished_ns, finished_at = time.time_ns(), time.perf_counter()
        finish = Finish(
            reason=reason,
            prompt_tokens=len(sequence.request.prompt_ids),
            completion_tokens=sequence.generated,
            timings=Timings(
                queue_seconds=(sequence.admitted_at or finished_at) - sequence.submitted_at,
                prefill_seconds=sequence.prefill_seconds,
                decode_seconds=sequence.decode_seconds,
                decode_steps=sequence.decode_steps,
                resident_seconds=finished_at - sequence.submitted_at,
                engine_busy_seconds=self.clock.busy_seconds - sequence.busy_at_submit,
                submitted_ns=sequence.submitted_ns,
                admitted_ns=sequence.admitted_ns,
                first_token_ns=sequence.first_token_ns or finished_ns,
                finished_ns=finished_ns,
            ),
            error=error,
        )
        with self._wake:
            self._by_id.pop(sequence.id, None)
            if sequence.admitted_at and self._waiting:  # it held a slot others waited for: what admission reads
                self.seconds_per_sequence = weighted_mean(self.seconds_per_sequence, finished_at - sequence.admitted_at)
        self._outbox.post(sequence, finish)
        self.metrics.sequences.labels(reason).inc()
        if sequence.detached:
            self._report_unread(sequence, finish)

    def _report_unread(self, sequence: Sequence, finish: Finish) -> None:
        """The caller left without reading the end: the decoder's own record of what it consumed."""
        t = finish.timings
        self.metrics.unread_seconds.labels("prefill").inc(t.prefill_seconds)
        self.metrics.unread_seconds.labels("decode").inc(t.decode_seconds)
        log.warning("sequence_unread", extra={"fields": {
            "sequence_id": sequence.id, "request_id": sequence.request.request_id, "tenant": sequence.request.tenant,
            "finish_reason": finish.reason, "prefill_seconds": t.prefill_seconds, "decode_seconds": t.decode_seconds,
            "completion_tokens": finish.completion_tokens}})

    def _keep_running_except(self, leaving: set[int]) -> None:
        """Drop the running sequences whose ids are in ``leaving``; the rows of the others close the gaps."""
        order, moves = kv.compaction([id(s) not in leaving for s in self._running])
        for source, target in moves:
            self._pool.move(source, target, self._running[source].length)
        self._running = [self._running[row] for row in order]

    def _fail_all(self, error: str) -> None:
        """End every sequence held: those in the failed step are charged its time so far."""
        with self._wake:
            waiting = list(self._waiting)
            self._waiting.clear()
        held = [*self._running, *self._prefilling]
        phase, in_step = self._in_call
        in_step = [s for s in in_step if any(s is h for h in held)]
        if in_step:
            share = self._busy_lap(phase) / len(in_step)
            for sequence in in_step:
                if phase == "decode":
                    sequence.decode_seconds += share
                else:
                    sequence.prefill_seconds += share
        self._running, self._prefilling, self._in_call = [], [], ("decode", [])
        for sequence in [*held, *waiting]:
            self._finish(sequence, "error", error)
        self._publish_occupancy()

    def _maybe_inject_fault(self) -> None:
        rate = self.faults.plan.step_error_rate
        if rate and self._fault_rng.random() < rate:
            raise InjectedFault("injected step failure (fault plan)")

    @staticmethod
    def _past_deadline(sequence: Sequence) -> bool:
        deadline = sequence.request.deadline
        return deadline is not None and time.monotonic() >= deadline

    def _busy_lap(self, phase: str) -> float:
        seconds = self.clock.busy_lap()
        self.metrics.busy_seconds.labels(phase).inc(seconds)
        self.metrics.step_duration.labels(phase).observe(seconds)
        return seconds

    def _publish_occupancy(self) -> None:
        self.metrics.slots_used.set(len(self._running) + len(self._prefilling))
        self.metrics.queue_depth.set(len(self._waiting))
