"""TenantBudget resources as the admin CLI's budget store (`lynx budget ... --kube`): the same BudgetStore as the
local budgets file, so pause, resume, raise, remove, why and export act the same on both."""

from __future__ import annotations

import hashlib
import json
import os
import re

import kubernetes
from kubernetes.client import ApiClient, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from lynx.contracts.budgets import BudgetSpec
from lynx.option_errors import CommandRefused
from lynx_budget import kube
from lynx_budget.policy import BudgetStatus
from lynx_budget.store import BudgetChanged


class NoCluster(CommandRefused):
    """No kubeconfig context to reach the API server with."""


def current_namespace() -> str:
    """The namespace of the kubeconfig's current context, as kubectl picks it ("default" when it names none)."""
    try:
        _, active = kubernetes.config.list_kube_config_contexts(config_file=os.environ.get("KUBECONFIG"))
    except kubernetes.config.ConfigException:
        return "default"
    return active.get("context", {}).get("namespace") or "default"


def resource_name(tenant: str) -> str:
    """A TenantBudget's name for a new budget: the tenant id if it is a valid object name, else a name made from it
    and a hash of it (tenant ids may hold characters object names may not)."""
    name = re.sub(r"[^a-z0-9-]+", "-", tenant.lower()).strip("-")[:50]
    if name == tenant:
        return name
    return f"{name or 'tenant'}-{hashlib.sha256(tenant.encode()).hexdigest()[:8]}"


class KubeStore:
    def __init__(self, namespace: str | None = None, api: ApiClient | None = None) -> None:
        try:
            self.api = api or kube.api_client()
        except kubernetes.config.ConfigException as error:
            raise NoCluster(f"--kube found no cluster to reach ({error}): set KUBECONFIG or the current context "
                            "(kubectl config use-context)") from None
        self.namespace = namespace or current_namespace()
        self.objects = CustomObjectsApi(self.api)
        self.read: dict[str, BudgetSpec | None] = {}  # what get() returned: put() writes only over that

    def resources(self) -> list[dict]:
        return self.objects.list_namespaced_custom_object(kube.GROUP, kube.VERSION, self.namespace, kube.PLURAL)["items"]

    def resource(self, tenant: str) -> dict | None:
        return next((r for r in self.resources() if r["spec"]["tenant"] == tenant), None)

    def list(self) -> list[BudgetSpec]:
        return [kube.budget_spec(r["spec"]) for r in self.resources()]

    def get(self, tenant: str) -> BudgetSpec | None:
        found = self.resource(tenant)
        self.read[tenant] = kube.budget_spec(found["spec"]) if found else None
        return self.read[tenant]

    def status(self, tenant: str) -> BudgetStatus | None:
        return self.statuses().get(tenant)

    def statuses(self) -> dict[str, BudgetStatus]:
        """Every TenantBudget's status the operator wrote, from one LIST."""
        return {r["spec"]["tenant"]: BudgetStatus.from_dict(r["status"]) for r in self.resources()
                if "state" in (r.get("status") or {})}

    def put(self, spec: BudgetSpec) -> None:
        """Creates the tenant's TenantBudget, or replaces its spec, provided it is still the one get() returned: an
        edit made meanwhile (another admin, an expired raise the operator took out) is never lost: BudgetChanged, and
        the admin runs the command again. The operator's status writes meanwhile do not count."""
        for _ in range(5):
            found = self.resource(spec.tenant)
            current = kube.budget_spec(found["spec"]) if found else None
            if spec.tenant in self.read and current != self.read[spec.tenant]:
                raise BudgetChanged(f"the TenantBudget of {spec.tenant!r} changed meanwhile; nothing was written, "
                                    "run the command again")
            try:
                self.write(found, spec)
                return
            except ApiException as error:
                status = refusal(error)
                if error.status == 422 and status.get("details", {}).get("causes"):  # the CRD's validation refused it
                    raise ValueError(status.get("message", error.body)) from None
                if error.status not in (409, 422):
                    raise
                # Created meanwhile (409), or a failed `test` (422 naming no field): the object changed, its status
                # most often; look again.
        raise BudgetChanged(f"the TenantBudget of {spec.tenant!r} keeps changing; nothing was written")

    def remove(self, tenant: str) -> bool:
        """Deletes the tenant's TenantBudget; the operator's delete handler takes the tenant out of the published
        decisions. False when it had none (or it was deleted meanwhile)."""
        found = self.resource(tenant)
        if found is None:
            return False
        try:
            self.objects.delete_namespaced_custom_object(kube.GROUP, kube.VERSION, self.namespace, kube.PLURAL,
                                                         found["metadata"]["name"])
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    def write(self, found: dict | None, spec: BudgetSpec) -> None:
        if found is None:
            body = {"apiVersion": f"{kube.GROUP}/{kube.VERSION}", "kind": kube.KIND,
                    "metadata": {"name": resource_name(spec.tenant), "namespace": self.namespace},
                    "spec": kube.resource_spec(spec)}
            self.objects.create_namespaced_custom_object(kube.GROUP, kube.VERSION, self.namespace, kube.PLURAL, body)
            return
        # Guarded by the resourceVersion: the API server compares `test` values as written, and Python and Go write
        # some numbers differently (5e-05, 0.00005), so the spec itself is compared here, as a BudgetSpec.
        operations = [{"op": "test", "path": "/metadata/resourceVersion", "value": found["metadata"]["resourceVersion"]},
                      {"op": "replace", "path": "/spec", "value": kube.resource_spec(spec)}]
        self.objects.patch_namespaced_custom_object(
            kube.GROUP, kube.VERSION, self.namespace, kube.PLURAL, found["metadata"]["name"], operations,
            _content_type="application/json-patch+json")


def refusal(error: ApiException) -> dict:
    """The API server's Status for a refused request ("details.causes" names the fields validation refused)."""
    try:
        return json.loads(error.body or "{}")
    except ValueError:
        return {}
