"""The budget controller: per-tenant daily cost caps, read from Prometheus, published to the gateways.

``policy`` decides (pure functions), ``spend`` reads what a tenant spent today from Prometheus,
``handlers`` is the kopf operator for ``TenantBudget`` resources, ``local`` runs the same policy
for the embedded default (``lynx up``) from a local budgets file.
"""
