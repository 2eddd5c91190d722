"""Each service's resident memory, as its own /metrics says (prometheus-client's process collector)."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families

RSS_METRIC = "process_resident_memory_bytes"


def resident_memory(metrics_text: str) -> float | None:
    """The RSS in a Prometheus exposition, or None when it has none (not Linux, another registry)."""
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == RSS_METRIC:
                return sample.value
    return None


async def read_resident_memory(client: httpx.AsyncClient, base_url: str) -> float | None:
    """None when the service cannot be read: a report says n/a rather than failing the run."""
    try:
        response = await client.get(f"{base_url.rstrip('/')}/metrics")
    except httpx.HTTPError:
        return None
    return resident_memory(response.text) if response.status_code == 200 else None


async def sample_memory(services: dict[str, str]) -> dict[str, float | None]:
    """{service name: RSS bytes} of every service, read at once."""
    async with httpx.AsyncClient(timeout=10) as client:
        values = await asyncio.gather(*(read_resident_memory(client, url) for url in services.values()))
    return dict(zip(services, values, strict=True))
