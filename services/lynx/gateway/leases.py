"""Spend leases, the gateway's side: admit a tenant's request only within what the budget controller granted this
gateway, so a cap holds exactly however many gateways serve the tenant.

The protocol (``lynx.contracts.leases``) and the controller's ledger (``lynx_budget.leases``) are described there.
Here, per tenant-day:

- ``TenantLease`` is this gateway's books: its cumulative charge, the worst cases reserved in flight, and the lease
  it acts on (a ceiling on charged + reserved, valid until ``lifetime`` after the renewal was *sent*).
- A request whose worst case fits the lease is admitted at once: it never waits on the controller. One that does not
  fit waits for one renewal (asking for what it needs plus a few more requests' worth) and is refused (429) when
  the grant still leaves no room, or (503) when the controller cannot be reached and the lease is spent.
- ``LeaseKeeper.tick`` renews in the background: before a lease in use runs out, and to give back the headroom of
  a lease nobody uses (want 0), so idle gateways do not sit on budget other gateways need.
- A tenant whose budget opts into an ``UnreachableAllowance`` may spend that much beyond the lease while the
  controller cannot be reached: the cap may then be passed by up to (gateways) x allowance, said in the 503's
  absence and in docs/COSTS.md.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from pydantic import ValidationError

from lynx.contracts.leases import LeaseGrant, LeaseRequest, UnreachableAllowance
from lynx.gateway.refusals import ADMISSION, RESERVATION, refused
from lynx.service.errors import LynxError
from lynx.service.files import shared_token
from lynx.telemetry.metrics import GATEWAY_ID_LABEL, gateway_lease_metrics

log = logging.getLogger("lynx.gateway.leases")
QUOTA = "insufficient_quota"  # the code and type of every budget refusal (gateway/budgets.py too)
UNREACHABLE = "budget_controller_unreachable"
# A renewal is due when less than this share of the lease's lifetime is left.
RENEW_WHEN_LEFT = 0.5
# A request that does not fit waits for the renewal in flight, then asks itself, at most this many renewals in all.
RENEWALS_PER_ADMISSION = 2
# Until the first grant says how long leases last, the ticker's period.
FIRST_TICK_SECONDS = 5.0


def gateway_id() -> str:
    """This process, for life: a restarted gateway is a new id whose charges start from 0 (the protocol's rule)."""
    return f"{socket.gethostname()}-{os.getpid()}-{time.time_ns() // 1_000_000}"


@dataclass
class TenantLease:
    """This gateway's books for one tenant-day, and the lease it acts on."""

    tenant: str
    day_started_at: datetime
    cap_eur: float = math.inf  # the tenant's cap as last published: a renewal asks for a share of it at most
    charged_eur: float = 0.0
    reserved_eur: float = 0.0
    in_flight: int = 0
    sequence: int = 0
    lease_id: str | None = None
    ceiling_eur: float = 0.0
    expires_at: float = 0.0  # monotonic; 0: no lease
    lifetime_seconds: float = 0.0
    last_grant: LeaseGrant | None = None
    allowance: UnreachableAllowance | None = None
    unreachable: str | None = None  # why the last renewal failed; None once one succeeds
    largest_worst_case_eur: float = 0.0  # since the last renewal: what a few more requests' worth means
    waiting_eur: float = 0.0  # the worst cases of the requests waiting for a renewal
    admitted_since_renewal: int = 0
    renewing: asyncio.Future | None = field(default=None, repr=False)

    @property
    def keep_eur(self) -> float:
        return self.charged_eur + self.reserved_eur

    def live(self, now: float) -> bool:
        return self.lease_id is not None and now < self.expires_at

    def ceiling(self, now: float) -> float:
        """What charged + reserved may reach now: the lease's ceiling while it is valid, else 0 (nothing more may be
        admitted); plus the tenant's allowance while the controller cannot be reached."""
        ceiling = self.ceiling_eur if self.live(now) else 0.0
        if self.unreachable is not None and self.allowance is not None:
            ceiling += self.allowance.per_gateway_eur
        return ceiling

    def fits(self, eur: float, now: float, replacing: float = 0.0) -> bool:
        """Whether a reservation of ``eur`` (in place of one of ``replacing`` already counted) fits the lease."""
        return self.keep_eur - replacing + eur <= self.ceiling(now)

    def headroom(self, now: float) -> float:
        return max(self.ceiling(now) - self.keep_eur, 0.0)

    def renewal_due(self, now: float) -> bool:
        """Before a lease in use runs out; or to give back the headroom of one that nobody uses."""
        if self.lease_id is None or self.renewing is not None:
            return False
        running_out = self.expires_at - now < self.lifetime_seconds * RENEW_WHEN_LEFT
        return running_out and (self.in_use or self.ceiling_eur > self.keep_eur)

    @property
    def in_use(self) -> bool:
        return self.in_flight > 0 or self.admitted_since_renewal > 0

    def request(self, gateway: str, want_eur: float, now: float, sent_at: datetime,
                smallest_request_eur: float) -> LeaseRequest:
        self.sequence += 1
        live = self.live(now)
        return LeaseRequest(
            gateway=gateway, tenant=self.tenant, day_started_at=self.day_started_at, sequence=self.sequence,
            sent_at=sent_at, charged_eur=self.charged_eur, keep_eur=self.keep_eur, want_eur=want_eur,
            acting_lease_id=self.lease_id if live else None,
            acting_ceiling_eur=self.ceiling_eur if live else 0.0,
            smallest_request_eur=smallest_request_eur)

    def accept(self, grant: LeaseGrant, sent: float) -> bool:
        """The controller's answer to the request sent at monotonic ``sent``; False (ignored) unless it answers the
        latest request."""
        if grant.sequence != self.sequence or grant.outcome == "stale":
            return False
        self.lease_id, self.ceiling_eur = grant.lease_id, grant.ceiling_eur
        self.lifetime_seconds = grant.lifetime_seconds
        self.expires_at = sent + grant.lifetime_seconds
        self.last_grant, self.allowance, self.unreachable = grant, grant.unreachable_allowance, None
        self.largest_worst_case_eur, self.admitted_since_renewal = 0.0, 0
        return True


class LeaseKeeper:
    """Every tenant-day's lease of this gateway, and the channel to the budget controller."""

    def __init__(self, controller_url: str, token_file: Path, smallest_request_eur: float, chunk_requests: int,
                 most_of_cap: float, timeout_seconds: float, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.controller_url = controller_url.rstrip("/")
        self.token_file = token_file
        self._token: str | None = None  # read at the first renewal, again after the controller refuses it
        self.smallest_request_eur = smallest_request_eur
        self.chunk_requests = chunk_requests
        self.most_of_cap = most_of_cap
        self.gateway = gateway_id()
        self.clock, self.wall = clock, wall
        self.client = httpx.AsyncClient(timeout=timeout_seconds)
        self.leases: dict[tuple[str, datetime], TenantLease] = {}
        self.metrics = gateway_lease_metrics()
        self.metrics.identity.info({GATEWAY_ID_LABEL: self.gateway})  # for the controller's proofs of its charges

    def lease(self, tenant: str, day_started_at: datetime, cap_eur: float) -> TenantLease:
        """The tenant-day's books (``cap_eur``: its cap as last published)."""
        key = (tenant, day_started_at)
        if key not in self.leases:
            for old in [k for k, v in self.leases.items() if k[0] == tenant and not v.in_flight]:
                del self.leases[old]  # an earlier day of the tenant's, settled: nothing more to report
            self.leases[key] = TenantLease(tenant, day_started_at)
        self.leases[key].cap_eur = cap_eur
        return self.leases[key]

    async def admit(self, lease: TenantLease, eur: float, describe: str, replacing: float | None = None) -> None:
        """Reserves ``eur`` within the lease (in place of the request's earlier reservation ``replacing``, if any),
        renewing the lease if it does not fit; raises the refusal otherwise.

        A renewal already in flight is waited for first; if what it brought does not fit this request either, this
        request asks once itself (for every waiting request's worst case plus a few more requests' worth)."""
        earlier = replacing or 0.0
        lease.largest_worst_case_eur = max(lease.largest_worst_case_eur, eur)
        lease.waiting_eur += eur
        try:
            for _ in range(RENEWALS_PER_ADMISSION):
                if lease.fits(eur, self.clock(), earlier):
                    break
                await self.renew(lease, self._chunk(lease, eur))
            else:
                if not lease.fits(eur, self.clock(), earlier):
                    # What this gateway holds is too little for this request: give it back at once, so that with what
                    # the other gateways hold it can pay for one elsewhere (fragments that each pay for nothing).
                    self._in_background(lease, lambda: self.give_back(lease))
                    raise self._refusal(lease, eur, describe, ADMISSION if replacing is None else RESERVATION)
        finally:
            lease.waiting_eur -= eur
        lease.reserved_eur += eur - earlier
        if replacing is None:
            lease.in_flight += 1
            lease.admitted_since_renewal += 1
        self._show(lease)
        if lease.headroom(self.clock()) < 2 * lease.largest_worst_case_eur:
            self._in_background(lease, lambda: self.renew(lease, self._chunk(lease, 0.0)))

    def settle(self, lease: TenantLease, reserved_eur: float | None, charged_eur: float | None) -> None:
        """A request of the tenant-day settled: its reservation goes, its charge counts (even one never reserved:
        the stages used before a refusal)."""
        if reserved_eur is not None:
            lease.in_flight -= 1
            lease.reserved_eur = lease.reserved_eur - reserved_eur if lease.in_flight else 0.0
        if charged_eur is not None:
            lease.charged_eur += charged_eur
        self._show(lease)

    async def renew(self, lease: TenantLease, want_eur: float) -> None:
        """Asks for the worst cases of the requests waiting + ``want_eur``. One renewal in flight per tenant-day: a
        second caller waits for the first one's answer."""
        if lease.renewing is not None:
            await asyncio.shield(lease.renewing)
            return
        lease.renewing = asyncio.get_running_loop().create_future()
        try:
            await self._renew(lease, want_eur)
        finally:
            lease.renewing.set_result(None)
            lease.renewing = None

    async def tick(self) -> None:
        """Renews what is due; run every ``period()`` seconds."""
        now = self.clock()
        for lease in list(self.leases.values()):
            if lease.renewal_due(now):
                await (self.renew(lease, self._chunk(lease, 0.0)) if lease.in_use else self.give_back(lease))

    def period(self) -> float:
        lifetimes = [lease.lifetime_seconds for lease in self.leases.values() if lease.lifetime_seconds]
        return min(lifetimes, default=FIRST_TICK_SECONDS * 4) / 4

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.period())
            try:
                await self.tick()
            except Exception:  # one failed tick must not stop the renewals for good
                log.exception("lease_tick_failed")

    async def aclose(self) -> None:
        await self.client.aclose()

    # --- internals -------------------------------------------------------------------------
    def _chunk(self, lease: TenantLease, eur: float) -> float:
        """A few more requests' worth, so that a busy tenant renews once per few requests, not per request; but
        never more than a share of the cap, so that the first gateway to ask does not hold what the others need."""
        largest = max(lease.largest_worst_case_eur, eur, self.smallest_request_eur)
        return min(self.chunk_requests * largest, self.most_of_cap * lease.cap_eur)

    async def give_back(self, lease: TenantLease) -> None:
        """Returns the headroom this gateway holds beyond what it keeps. Twice: the ledger holds a gateway's older
        lease until the gateway names the newer one in a later request, so a single give-back frees nothing until this
        gateway's next renewal (two gateways each giving back crumbs then kept missing each other's)."""
        await self.renew(lease, 0.0)
        await self.renew(lease, 0.0)

    def _in_background(self, lease: TenantLease, renewal: Callable[[], Awaitable[None]]) -> None:
        """A renewal nobody waits for; skipped while one is under way already (the requests waiting are asked for)."""
        if lease.renewing is None:
            task = asyncio.create_task(renewal())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _renew(self, lease: TenantLease, want_eur: float) -> None:
        sent = self.clock()
        request = lease.request(self.gateway, lease.waiting_eur + want_eur, sent, self.wall(),
                                self.smallest_request_eur)
        try:
            self._token = self._token or shared_token(self.token_file)
            response = await self.client.post(f"{self.controller_url}/v1/leases", content=request.model_dump_json(),
                                              headers={"authorization": f"Bearer {self._token}",
                                                       "content-type": "application/json"})
            if response.status_code == 401:
                self._token = None  # a rotated Secret: the file is read again at the next renewal
            if response.status_code != 200:
                raise LeaseChannelError(f"the controller answered {response.status_code}: "
                                        f"{_message(response)}")
            grant = LeaseGrant.model_validate_json(response.content)
        except (httpx.HTTPError, OSError, ValueError, ValidationError, LeaseChannelError) as error:
            lease.unreachable = str(error) if isinstance(error, LeaseChannelError) else type(error).__name__
            self.metrics.renewals.labels("unreachable").inc()
            log.warning("lease_renewal_failed", extra={"fields": {"tenant": lease.tenant, "error": lease.unreachable}})
            return
        finally:
            self.metrics.renewal_seconds.observe(self.clock() - sent)
        self.metrics.renewals.labels(grant.outcome).inc()
        lease.accept(grant, sent)
        self._show(lease)

    def _show(self, lease: TenantLease) -> None:
        self.metrics.headroom.labels(lease.tenant).set(lease.headroom(self.clock()))

    def _refusal(self, lease: TenantLease, eur: float, describe: str, phase: str) -> LynxError:
        grant = lease.last_grant
        if lease.unreachable is not None:
            return refused(lease.tenant, "controller_unreachable", phase, LynxError(
                503, f"This gateway cannot reach the budget controller at {self.controller_url} "
                f"({lease.unreachable}) and has spent the budget it held for tenant '{lease.tenant}'. Requests are "
                "refused, not served unaccounted, until it can renew; retry shortly.", UNREACHABLE, "server_error",
                headers={"Retry-After": "5"}))
        if grant is not None and grant.outcome == "rebuilding":
            return refused(lease.tenant, "rebuilding", phase, LynxError(
                503, grant.reason, "budget_controller_rebuilding", "server_error",
                headers={"Retry-After": str(math.ceil(grant.lifetime_seconds))}))
        if grant is None:
            why = "the budget controller granted nothing yet."
        elif grant.outcome == "granted":
            why = (f"the budget controller could grant only {grant.granted_eur:.4g} EUR more; the rest of the cap is "
                   "spent or held by other gateways for their requests in flight.")
        else:
            why = grant.reason
        return refused(lease.tenant, "no_lease_room", phase, LynxError(
            429, f"This request could cost up to {eur:.4g} EUR ({describe} at worst case), more than this gateway may "
            f"still spend for tenant '{lease.tenant}' today ({lease.headroom(self.clock()):.4g} EUR): {why} Lower "
            "max_tokens (or lynx_max_cost_eur), retry later, or ask an admin for a raise.", QUOTA, QUOTA,
            headers={"Retry-After": str(math.ceil(lease.lifetime_seconds or FIRST_TICK_SECONDS))}))


class LeaseChannelError(Exception):
    """The controller answered, but not with a grant (wrong token, no budget, a failure of its own)."""


def _message(response: httpx.Response) -> str:
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return response.text[:200]
