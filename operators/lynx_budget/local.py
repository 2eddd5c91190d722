"""The embedded default's budget controller (`lynx serve budgets`, started by `lynx up`): no Kubernetes.

The same pure policy as the operator (``policy.reconcile``), on a timer: each budget in a local
file (``~/.cache/lynx/budgets.yaml``, a list of ``BudgetSpec`` that `lynx budget set` writes), each
tenant's spend read from the local Prometheus (``spend.read_today``), each tenant's last status in a
local state file, and the decisions published (source ``local``) to the file the gateway reads,
written atomically. Expired raises are removed from the budgets file; every audit entry is logged
as a ``budget_event`` (what the operator makes a Kubernetes Event). ``/metrics`` exports
``budget_metrics()`` for Prometheus (job ``lynx-budgets``) and the alerts. ``POST /v1/leases`` grants the
gateways spend leases (``lease_desk``); a tenant the lease ledger finds unable to pay for its smallest request
is published Blocked.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import yaml
from fastapi import FastAPI
from pydantic import Field, ValidationError
from pydantic_settings import SettingsConfigDict

from lynx.contracts.budgets import BudgetDecisions, BudgetSpec, UnknownSpend
from lynx.service.files import locked, shared_token, write_atomically
from lynx.option_errors import CommandRefused, refused_options
from lynx.service.app import create_service_app
from lynx.service.background import every
from lynx.service.settings import ServiceSettings, default_cache_dir
from lynx.telemetry.prometheus_api import PrometheusClient
from lynx_budget import gauges
from lynx_budget.console.mount import console_open, with_console
from lynx_budget.lease_desk import LeaseDesk, LedgerFile
from lynx_budget.lease_routes import leases_router
from lynx_budget.policy import BudgetStatus, SpendFailure, SpendReading, day_window, reconcile
from lynx_budget.settings import LeaseTermsSettings
from lynx_budget.spend import read_today

log = logging.getLogger("lynx.budgets")


class LocalBudgetSettings(ServiceSettings, LeaseTermsSettings):
    model_config = SettingsConfigDict(env_prefix="LYNX_BUDGETS_", extra="ignore", frozen=True)

    port: int = Field(default=8085, ge=1, le=65535)
    budgets_file: Path = Field(default=default_cache_dir() / "budgets.yaml",
                               description="The budgets: a YAML list of BudgetSpec (`lynx budget set` writes it).")
    state_file: Path = Field(default=default_cache_dir() / "budget-state.json",
                             description="Each tenant's last BudgetStatus (JSON), kept between runs.")
    decisions_file: Path = Field(
        default=default_cache_dir() / "budget-decisions.json",
        description="Where the decisions are published: the gateway's LYNX_GATEWAY_BUDGETS_FILE.")
    prometheus_url: str = Field(default="http://127.0.0.1:9090", pattern=r"^https?://.+",
                                description="The Prometheus that scrapes the gateway.")
    prometheus_timeout_seconds: float = Field(default=5.0, gt=0, description="One spend query's time limit.")
    interval_seconds: float = Field(default=15.0, gt=0, description="Time between two reconciliations.")
    unknown_spend: UnknownSpend = Field(
        default="open", description="A tenant whose spend cannot be read and has no figure today: served (open) or "
                                    "refused (closed). A Blocked tenant stays Blocked either way.")
    unknown_tenants: UnknownSpend = Field(
        default="open", description="Tenants without a budget: served (open) or refused (closed) by the gateway.")
    history_limit: int = Field(default=20, ge=1, le=200, description="Audit entries kept in each tenant's status.")
    leases_file: Path = Field(
        default=default_cache_dir() / "budget-leases.json",
        description="The spend-lease ledger (JSON), written before each grant is answered: a restart continues it.")
    lease_token_file: Path = Field(
        default=default_cache_dir() / "lease-token",
        description="The token gateways present (Authorization: Bearer) to ask for leases; made, private and random, "
                    "by the first process that needs it. The gateways read the same file.")


class BudgetsFileInvalid(CommandRefused, ValueError):
    """The budgets file cannot be read as a list of budgets."""


class FileStore:
    """The budgets file (a YAML list of BudgetSpec) and the controller's state file beside it."""

    def __init__(self, budgets_file: Path, state_file: Path) -> None:
        self.path = budgets_file
        self.state_file = state_file

    def list(self) -> list[BudgetSpec]:
        if not self.path.exists():
            return []
        try:
            entries = yaml.safe_load(self.path.read_text()) or []
        except yaml.YAMLError as error:
            raise BudgetsFileInvalid(f"{self.path} is not YAML ({error.problem or error}): fix it or remove it") from None
        if not isinstance(entries, list):
            raise BudgetsFileInvalid(f"{self.path} holds a {type(entries).__name__}, not a list of budgets: fix it or "
                                     "remove it")
        return [self._budget(number, entry) for number, entry in enumerate(entries, 1)]

    def _budget(self, number: int, entry: object) -> BudgetSpec:
        try:
            return BudgetSpec.model_validate(entry)
        except ValidationError as error:
            raise BudgetsFileInvalid(f"budget {number} of {self.path} is refused: {refused_options(error, {})}; fix it "
                                     "(`lynx budget set`) or remove it") from None

    def get(self, tenant: str) -> BudgetSpec | None:
        return next((spec for spec in self.list() if spec.tenant == tenant), None)

    def put(self, spec: BudgetSpec) -> None:
        self.update(spec.tenant, lambda _: spec)

    def update(self, tenant: str, change: Callable[[BudgetSpec | None], BudgetSpec | None]) -> BudgetSpec | None:
        """Read, change and write one tenant's budget under a lock (the CLI and the loop both write the file); a
        change that returns None leaves the file as it is."""
        with locked(self.path):
            specs = {spec.tenant: spec for spec in self.list()}
            changed = change(specs.get(tenant))
            if changed is not None:
                specs[tenant] = changed
                self._write(list(specs.values()))
            return changed

    def remove(self, tenant: str) -> bool:
        """The loop drops its status and its decision at its next run."""
        with locked(self.path):
            specs = self.list()
            kept = [spec for spec in specs if spec.tenant != tenant]
            if len(kept) < len(specs):
                self._write(kept)
            return len(kept) < len(specs)

    def _write(self, specs: list[BudgetSpec]) -> None:
        write_atomically(self.path, yaml.safe_dump([s.model_dump(mode="json", exclude_defaults=True) for s in specs],
                                                   sort_keys=False))

    def status(self, tenant: str) -> BudgetStatus | None:
        return self.statuses().get(tenant)

    def last_spent(self, tenant: str, day_started_at: datetime) -> float:
        """The tenant's spend on that day as last read and kept; 0 when none was read that day."""
        status = self.status(tenant)
        kept = status is not None and status.day_started_at == day_started_at
        return (status.spent_eur or 0.0) if kept else 0.0

    def statuses(self) -> dict[str, BudgetStatus]:
        if not self.state_file.exists():
            return {}
        return {tenant: BudgetStatus.from_dict(data) for tenant, data in json.loads(self.state_file.read_text()).items()}

    def save_statuses(self, statuses: dict[str, BudgetStatus]) -> None:
        write_atomically(self.state_file, json.dumps({t: s.to_dict() for t, s in statuses.items()}, indent=2) + "\n")



def local_store(settings: LocalBudgetSettings | None = None) -> FileStore:
    """The embedded default's budgets: the files `lynx serve budgets` reads and writes."""
    settings = settings or LocalBudgetSettings()
    return FileStore(settings.budgets_file, settings.state_file)


def budget_or_default(store: FileStore, tenant: str, daily_cap_eur: float) -> BudgetSpec:
    """The tenant's budget, one of ``daily_cap_eur`` a day set first if it has none (`lynx up`'s demo tenant); a
    budget an admin set or changed stays as it is."""
    store.update(tenant, lambda spec: None if spec else BudgetSpec(tenant=tenant, daily_cap_eur=daily_cap_eur))
    return store.get(tenant)


def lease_desk(settings: LocalBudgetSettings, store: FileStore) -> LeaseDesk:
    # Leases were granted from these files before if the controller kept state and the gateways' token existed: a
    # cache dir from before leases (or a first run) has no ledger to lose.
    granted_before = settings.state_file.exists() and settings.lease_token_file.exists()
    return LeaseDesk.open(LedgerFile(settings.leases_file), granted_before, shared_token(settings.lease_token_file),
                          settings.lease_terms(),
                          store.get, store.list,
                          last_spent=store.last_spent if settings.unknown_spend == "open" else None)


class LocalController:
    """One reconciliation of every local budget: read spend, decide (policy), publish, remember."""

    def __init__(self, settings: LocalBudgetSettings, store: FileStore, prometheus: PrometheusClient,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC), desk: LeaseDesk | None = None) -> None:
        self.settings = settings
        self.store = store
        self.prometheus = prometheus
        self.now = now
        self.desk = desk  # the spend leases, when served: Blocked also when the remainder cannot pay a request
        self.published: set[str] = set()

    def run_once(self) -> BudgetDecisions:
        now = self.now()
        last = self.store.statuses()
        statuses: dict[str, BudgetStatus] = {}
        decisions = BudgetDecisions(generated_at=now, source="local", unknown_tenants=self.settings.unknown_tenants)
        for spec in self.store.list():
            day = day_window(spec.timezone, now)
            spend = read_today(self.prometheus, spec.tenant, day[0], now)
            if isinstance(spend, SpendFailure):
                log.warning("spend_unavailable", extra={"fields": {"tenant": spec.tenant,
                                                                   "error": f"{spend.reason}: {spend.detail}"}})
            gauges.count_read(isinstance(spend, SpendReading), now)
            spend, unpayable = self.desk.inform(spec, spend, now) if self.desk else (spend, None)
            result = reconcile(spec, spend, day, now, last.get(spec.tenant), self.settings.unknown_spend,
                               self.settings.history_limit, unpayable)
            if result.expired_raises:
                # None: an admin removed the budget meanwhile, and it stays removed.
                self.store.update(spec.tenant, lambda current, gone=result.expired_raises: current and current.model_copy(
                    update={"raises": [r for r in current.raises if r not in gone]}))
            for event in result.events:
                log.info("budget_event", extra={"fields": {"tenant": spec.tenant, "type": event.type,
                                                           "reason": event.reason, "message": event.message}})
            statuses[spec.tenant] = result.status
            decisions.tenants[spec.tenant] = result.decision
        self.store.save_statuses(statuses)
        write_atomically(self.settings.decisions_file, decisions.model_dump_json(indent=2) + "\n")
        self._export(statuses)
        return decisions

    def _export(self, statuses: dict[str, BudgetStatus]) -> None:
        for tenant in self.published - statuses.keys():  # a budget removed from the file
            gauges.withdraw(tenant)
            gauges.withdraw_holdings(tenant)
        for tenant, status in statuses.items():
            gauges.show(tenant, status)
        self.published = set(statuses)


def create_app(settings: LocalBudgetSettings | None = None) -> FastAPI:
    settings = settings or LocalBudgetSettings()

    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        prometheus = PrometheusClient(settings.prometheus_url, settings.prometheus_timeout_seconds)
        store = local_store(settings)
        desk = app.state.desk = lease_desk(settings, store)
        controller = app.state.controller = LocalController(settings, store, prometheus, desk=desk)

        async def reconcile() -> None:  # a broken budgets file fails a round: logged, tried again the next
            await asyncio.to_thread(controller.run_once)

        try:
            # Two tasks: a failing lease upkeep (a proof Prometheus cannot give) never holds the decisions back.
            with console_open(app, prometheus, lambda: local_store(settings)):
                async with every(settings.interval_seconds, lambda: desk.upkeep(prometheus), log,
                                 "lease_upkeep_failed"), \
                        every(settings.interval_seconds, reconcile, log, "budget_reconcile_failed"):
                    yield
        finally:
            prometheus.close()

    return create_service_app(name="budgets", settings=settings, lifespan=lifespan,
                              router=with_console(leases_router()))
