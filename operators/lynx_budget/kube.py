"""The Kubernetes side of the budgets, beyond what kopf does itself: the TenantBudget spec as lynx's BudgetSpec,
the expired raises taken out of a spec, the published decisions in their ConfigMap, and the spend-lease ledger's
copy in another.

Calls are synchronous (the official `kubernetes` client, shared with the admin CLI); the operator runs them in
a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

import kubernetes
import urllib3
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from lynx.contracts.budgets import (
    BudgetDecisions, BudgetSpec, TemporaryRaise, TenantDecision, UnknownSpend, UnreachableAllowance,
)
from lynx_budget.policy import rfc3339

GROUP, VERSION, PLURAL, KIND = "budgets.lynx.dev", "v1", "tenantbudgets", "TenantBudget"
DECISIONS_KEY = "budgets.json"
LEDGER_KEY = "ledger.json"  # the spend-lease ledger, in its own ConfigMap
# The lease desk's calls (connect, read): a half-open connection must fail a lease request (503), not hang them all.
API_TIMEOUT_SECONDS = (5, 10)
# BudgetSpec field -> the TenantBudget's spec field (the CRD spells money EUR and names in camelCase).
SPEC_FIELDS = {"tenant": "tenant", "daily_cap_eur": "dailyCapEUR", "timezone": "timezone",
               "warning_percent": "warningPercent", "paused": "paused", "per_request_cap_eur": "perRequestCapEUR",
               "cheaper_near_cap": "cheaperNearCap"}
RAISE_FIELDS = {"amount_eur": "amountEUR", "expires_at": "expiresAt", "reason": "reason",
                "requested_by": "requestedBy", "requested_at": "requestedAt"}
ALLOWANCE, ALLOWANCE_FIELDS = "unreachableAllowance", {"per_gateway_eur": "perGatewayEUR"}

logger = logging.getLogger(__name__)


def api_client() -> ApiClient:
    """In a pod, its ServiceAccount (the token is re-read as it rotates); elsewhere, KUBECONFIG's current context."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        # `kubernetes` reads KUBECONFIG once, at import: pass what it says now.
        return kubernetes.config.new_client_from_config(config_file=os.environ.get("KUBECONFIG"))
    return ApiClient(configuration)


def budget_spec(spec: Mapping) -> BudgetSpec:
    """A TenantBudget's spec as lynx's BudgetSpec (raises pydantic's ValidationError on what the CRD let through)."""
    fields = {ours: spec[theirs] for ours, theirs in SPEC_FIELDS.items() if spec.get(theirs) is not None}
    if allowance := spec.get(ALLOWANCE):
        fields["unreachable_allowance"] = UnreachableAllowance(
            **{ours: allowance[theirs] for ours, theirs in ALLOWANCE_FIELDS.items() if theirs in allowance})
    return BudgetSpec(**fields, raises=[budget_raise(r) for r in spec.get("raises") or []])


def budget_raise(r: Mapping) -> TemporaryRaise:
    return TemporaryRaise(**{ours: r[theirs] for ours, theirs in RAISE_FIELDS.items() if theirs in r})


def resource_spec(spec: BudgetSpec) -> dict:
    """The TenantBudget spec for a BudgetSpec."""
    values = spec.model_dump(exclude={"raises", "unreachable_allowance"})
    resource = {theirs: values[ours] for ours, theirs in SPEC_FIELDS.items() if values[ours] is not None}
    if spec.unreachable_allowance is not None:
        allowance = spec.unreachable_allowance.model_dump()
        resource[ALLOWANCE] = {theirs: allowance[ours] for ours, theirs in ALLOWANCE_FIELDS.items()}
    resource["raises"] = [resource_raise(r) for r in spec.raises]
    return resource


def resource_raise(r: TemporaryRaise) -> dict:
    values = {ours: rfc3339(value) if isinstance(value, datetime) else value for ours, value in r.model_dump().items()}
    return {theirs: values[ours] for ours, theirs in RAISE_FIELDS.items()}


def remove_raises(api: ApiClient, namespace: str, name: str, resource_version: str, raises: Sequence[Mapping],
                  expired: Sequence[TemporaryRaise]) -> bool:
    """Takes the expired raises out of the TenantBudget's spec.raises, as read at ``resource_version``, only if the
    object has not changed since: a raise an admin adds meanwhile is never lost. False when it had (the next
    reconciliation tries again)."""
    indexes = [i for i, r in enumerate(raises) if budget_raise(r) in expired]
    if not indexes:
        return True
    # Guarded by the resourceVersion, not by `test`s of the raises: the API server compares numbers as written,
    # and Python and Go write some floats differently (5e-05, 0.00005).
    operations = [{"op": "test", "path": "/metadata/resourceVersion", "value": resource_version}]
    operations += [{"op": "remove", "path": f"/spec/raises/{i}"} for i in reversed(indexes)]  # later ones first
    try:
        CustomObjectsApi(api).patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, operations, _content_type="application/json-patch+json")
    except ApiException as error:
        if error.status == 422:  # the `test` failed: the object changed since it was read
            return False
        raise
    return True


class Publisher:
    """The decisions of every TenantBudget the operator serves, kept in memory and published as one BudgetDecisions
    document in the ConfigMap the gateways mount. One task writes, so two reconciliations never race; it also
    compares with what the ConfigMap holds each interval, and repairs it if anything else changed it."""

    def __init__(self, api: ApiClient, namespace: str, name: str, unknown_tenants: UnknownSpend,
                 clock: Callable[[], datetime]) -> None:
        self.api, self.namespace, self.name, self.clock = api, namespace, name, clock
        self.unknown_tenants = unknown_tenants
        self.decisions: dict[str, TenantDecision] = {}
        self.changed = asyncio.Event()

    def load(self) -> None:
        """Starts from what is published: a restarted operator keeps every tenant's last decision (a Blocked tenant
        stays Blocked) until its budget is reconciled again."""
        published = self.read()
        if published is not None:
            self.decisions = dict(published.tenants)

    def set(self, decision: TenantDecision) -> None:
        if self.decisions.get(decision.tenant) != decision:
            self.decisions[decision.tenant] = decision
            self.changed.set()

    def remove(self, tenant: str) -> None:
        if self.decisions.pop(tenant, None) is not None:
            self.changed.set()

    async def run(self, interval_seconds: float) -> None:
        while True:
            with contextlib.suppress(TimeoutError):  # a change, or the interval's check for repairs
                await asyncio.wait_for(self.changed.wait(), timeout=interval_seconds)
            self.changed.clear()
            try:
                await asyncio.to_thread(self.sync, dict(self.decisions))
            except Exception as error:  # refused, unreachable, anything: this task must live on and try again
                logger.error("publishing the budget decisions to ConfigMap %s/%s failed (retrying in %g s): %r",
                             self.namespace, self.name, interval_seconds, error)

    def sync(self, decisions: dict[str, TenantDecision]) -> None:
        published = self.read()
        if published is not None and published.source == "operator" and published.tenants == decisions \
                and published.unknown_tenants == self.unknown_tenants:
            return
        document = BudgetDecisions(generated_at=self.clock(), source="operator", tenants=decisions,
                                   unknown_tenants=self.unknown_tenants)
        CoreV1Api(self.api).patch_namespaced_config_map(
            self.name, self.namespace, {"data": {DECISIONS_KEY: document.model_dump_json()}},
            _content_type="application/merge-patch+json")

    def read(self) -> BudgetDecisions | None:
        """What the ConfigMap holds; None when its document is missing or unreadable (then it is rewritten)."""
        config_map = CoreV1Api(self.api).read_namespaced_config_map(self.name, self.namespace)
        text = (config_map.data or {}).get(DECISIONS_KEY)
        if not text:
            return None
        try:
            return BudgetDecisions.model_validate_json(text)
        except ValueError:
            logger.warning("ConfigMap %s/%s holds no readable %s; it is rewritten", self.namespace, self.name,
                           DECISIONS_KEY)
            return None


class LedgerConfigMap:
    """The spend-lease ledger's persisted copy in Kubernetes (``lease_desk.LedgerCopy``): one key of a ConfigMap the
    chart creates and the operator alone writes. The API server orders the writes; the operator's single replica is
    their only writer."""

    def __init__(self, api: ApiClient, namespace: str, name: str) -> None:
        self.core = CoreV1Api(api)
        self.namespace, self.name = namespace, name
        self.where = f"ConfigMap {namespace}/{name} (key {LEDGER_KEY})"

    def read(self) -> str | None:
        try:
            config_map = self.core.read_namespaced_config_map(self.name, self.namespace,
                                                              _request_timeout=API_TIMEOUT_SECONDS)
        except (ApiException, urllib3.exceptions.HTTPError) as error:
            raise OSError(f"reading {self.where} failed: {unreachable(error)}") from None
        return (config_map.data or {}).get(LEDGER_KEY)

    def write(self, text: str) -> None:
        try:
            self.core.patch_namespaced_config_map(self.name, self.namespace, {"data": {LEDGER_KEY: text}},
                                                  _content_type="application/merge-patch+json",
                                                  _request_timeout=API_TIMEOUT_SECONDS)
        except (ApiException, urllib3.exceptions.HTTPError) as error:
            raise OSError(f"writing {self.where} failed: {unreachable(error)}") from None

    def set_aside(self, now: datetime) -> str | None:
        return None  # a ConfigMap has no room for a second copy: the log line that says so holds the error


def unreachable(error: Exception) -> str:
    if isinstance(error, ApiException):
        return f"the API server answered {error.status} {error.reason}"
    return f"{type(error).__name__}: {error}"


class BudgetList:
    """The TenantBudgets of one namespace for the lease desk, read with one LIST and reused for ``fresh_seconds``:
    a raise reaches the leases that soon."""

    def __init__(self, api: ApiClient, namespace: str, fresh_seconds: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.objects = CustomObjectsApi(api)
        self.namespace, self.fresh_seconds, self.clock = namespace, fresh_seconds, clock
        self.read_at: float | None = None
        self.specs: list[BudgetSpec] = []
        self.lock = threading.Lock()

    def __call__(self) -> list[BudgetSpec]:
        """Every budget; ValueError when they cannot be read (the desk answers 503)."""
        with self.lock:
            if self.read_at is None or self.clock() - self.read_at >= self.fresh_seconds:
                try:
                    items = self.objects.list_namespaced_custom_object(
                        GROUP, VERSION, self.namespace, PLURAL, _request_timeout=API_TIMEOUT_SECONDS)["items"]
                except (ApiException, urllib3.exceptions.HTTPError) as error:
                    raise ValueError(f"listing the TenantBudgets failed: {unreachable(error)}") from None
                self.specs = [spec for spec in map(readable_spec, items) if spec is not None]
                self.read_at = self.clock()
            return self.specs


    def budget_of(self, tenant: str) -> BudgetSpec | None:
        """The tenant's budget; one not in the last LIST is looked for in a new one (a gateway asks only for tenants
        the operator published a decision for: such a budget was just made)."""
        found = next((spec for spec in self() if spec.tenant == tenant), None)
        if found is None:
            with self.lock:
                self.read_at = None
            found = next((spec for spec in self() if spec.tenant == tenant), None)
        return found


def readable_spec(resource: Mapping) -> BudgetSpec | None:
    """A TenantBudget's BudgetSpec; None for one the operator refuses too (its reconciliation says why)."""
    try:
        return budget_spec(resource["spec"])
    except (KeyError, ValueError):
        return None
