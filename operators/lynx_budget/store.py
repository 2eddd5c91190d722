"""Where budgets live, as the admin commands and the local loop see them: the local budgets file
(``local.FileStore``) or TenantBudget resources in Kubernetes (``kubestore.KubeStore``)."""

from __future__ import annotations

from typing import Protocol

from lynx.contracts.budgets import BudgetSpec
from lynx_budget.policy import BudgetStatus


class BudgetChanged(RuntimeError):
    """The budget changed between reading and writing it (another admin, or an expired raise taken out by the
    controller): nothing was written."""


class BudgetStore(Protocol):
    def get(self, tenant: str) -> BudgetSpec | None: ...

    def put(self, spec: BudgetSpec) -> None:
        """Writes the budget; BudgetChanged when a store that checks (Kubernetes) finds it changed since get()."""

    def remove(self, tenant: str) -> bool:
        """Deletes the tenant's budget (it becomes a tenant without one); False when it had none."""

    def list(self) -> list[BudgetSpec]: ...

    def status(self, tenant: str) -> BudgetStatus | None:
        """The tenant's last decision; None before the first one."""

    def statuses(self) -> dict[str, BudgetStatus]:
        """Every tenant's last decision, read at once (an export asks for all of them)."""
