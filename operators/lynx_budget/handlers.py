"""The TenantBudget operator (kopf). Every interval, per budget: read the tenant's spend since its local midnight,
let the policy decide, write the status, post the audit entries as Events, take expired raises out of the spec,
and publish the decision to the gateways. The decisions are lynx_budget.policy's; this module only carries data.
With ``leases`` on (the chart's default), it also grants the gateways spend leases (``lease_server``), and a tenant
whose remainder cannot pay for its smallest request is Blocked.

Run (the chart does): ``kopf run --standalone --namespace NS --module lynx_budget.handlers``. One replica:
kopf's peering only pauses every operator it sees with the same priority, it elects no leader, so the chart
runs a single pod (strategy Recreate) and the gateways keep enforcing the last published decisions while it
restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfoNotFoundError

import kopf
import urllib3
from kubernetes.client.exceptions import ApiException
from prometheus_client import start_http_server
from pydantic import ValidationError

from lynx.telemetry.prometheus_api import PrometheusClient
from lynx_budget import gauges, kube, policy, spend
from lynx_budget.lease_server import LeaseServer, operator_desk
from lynx_budget.settings import OperatorSettings

config = OperatorSettings()  # at import: the timer's decorator needs the interval
TENANT_BUDGETS = {"group": kube.GROUP, "version": kube.VERSION, "plural": kube.PLURAL}


def now() -> datetime:
    """The clock every decision is made by (moved by clock_offset_seconds in tests only)."""
    return datetime.now(UTC) + timedelta(seconds=config.clock_offset_seconds)


@kopf.on.login()
def login(**kwargs) -> kopf.ConnectionInfo | None:
    """In a pod, its ServiceAccount token; elsewhere the KUBECONFIG of this moment (the tests point it at the
    chart's ServiceAccount; the `kubernetes` client kopf would otherwise use reads it once, at import)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_) -> None:
    settings.scanning.disabled = True  # one namespace and one CRD, known at start: no cluster-wide lists needed
    settings.posting.level = logging.WARNING  # Events: the audit (posted below) and failures, not every tick
    settings.persistence.finalizer = f"{kube.GROUP}/operator"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=kube.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=kube.GROUP)
    memo.api = kube.api_client()
    memo.prometheus = PrometheusClient(config.prometheus_url, config.prometheus_timeout_seconds)
    memo.publisher = kube.Publisher(memo.api, config.configmap_namespace, config.configmap_name,
                                    config.unknown_tenants, now)
    try:
        await asyncio.to_thread(memo.publisher.load)
    except ApiException as error:
        if error.status == 404:
            raise kopf.PermanentError(f"ConfigMap {config.configmap_namespace}/{config.configmap_name} does not exist; "
                                      "the chart creates it (operator.enabled)") from None
        raise
    memo.publishing = asyncio.create_task(memo.publisher.run(config.interval_seconds))
    memo.metrics_server, _thread = start_http_server(config.metrics_port)
    memo.desk = memo.leases = None
    if config.leases:
        memo.desk = await asyncio.to_thread(operator_desk, config, now)
        memo.leases = LeaseServer(config, memo.desk)
        try:
            await asyncio.to_thread(memo.leases.start)
        except RuntimeError as error:  # a retry would find its metrics port taken: stop, the pod restarts
            raise kopf.PermanentError(str(error)) from error


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_) -> None:
    if memo.leases is not None:
        await asyncio.to_thread(memo.leases.stop)
    memo.publishing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await memo.publishing
    memo.metrics_server.shutdown()
    memo.metrics_server.server_close()
    memo.prometheus.close()
    memo.api.close()


@kopf.timer(**TENANT_BUDGETS, id="reconcile", interval=config.interval_seconds)
async def reconcile(spec: kopf.Spec, status: kopf.Status, body: kopf.Body, name: str, namespace: str,
                    patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger, **_) -> None:
    moment = now()
    try:
        budget = kube.budget_spec(spec)
        day = policy.day_window(budget.timezone, moment)
    except (ValidationError, ZoneInfoNotFoundError) as error:
        raise kopf.PermanentError(f"the spec cannot be used: {error}") from error
    try:
        last = policy.BudgetStatus.from_dict(dict(status)) if "state" in status else None
    except (KeyError, TypeError, ValueError) as error:
        # Guessing would risk unblocking a Blocked tenant: the published decision stands until someone looks.
        raise kopf.PermanentError(f"the status cannot be read ({error!r}); remove it to start over") from error

    reading = await asyncio.to_thread(spend.read_today, memo.prometheus, budget.tenant, day[0], moment)
    if isinstance(reading, policy.SpendFailure):
        logger.warning(f"spend of tenant {budget.tenant!r} unavailable: {reading.reason}: {reading.detail}")
    read = isinstance(reading, policy.SpendReading)
    reading, unpayable = memo.desk.inform(budget, reading, moment) if memo.desk else (reading, None)
    result = policy.reconcile(budget, reading, day, moment, last, config.unknown_spend, config.history_limit,
                              unpayable)

    patch.status.update(result.status.to_dict())
    for event in result.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    if body.metadata.deletion_timestamp is None:  # the body is live: a budget deleted meanwhile stays forgotten
        memo.publisher.set(result.decision)
        gauges.show(budget.tenant, result.status)
        gauges.count_read(read, moment)
    if result.expired_raises:
        try:
            removed = await asyncio.to_thread(kube.remove_raises, memo.api, namespace, name,
                                              body.metadata["resourceVersion"], spec.get("raises") or [],
                                              result.expired_raises)
        except (ApiException, urllib3.exceptions.HTTPError) as failure:
            removed = False  # the status still goes out (the expiry is audited once); the removal is retried
            logger.warning(f"removing expired raises failed: {failure!r}")
        if not removed:
            logger.info("expired raises stay in the spec until the next reconciliation")


@kopf.on.delete(**TENANT_BUDGETS, optional=True)
def forget(spec: kopf.Spec, memo: kopf.Memo, **_) -> None:
    """The tenant leaves the published decisions: it becomes a tenant without a budget (unknown_tenants)."""
    tenant = spec["tenant"]
    memo.publisher.remove(tenant)
    gauges.withdraw(tenant)
    gauges.withdraw_holdings(tenant)

