"""The decoder instances one gateway sends to: found from a list or DNS, probed, chosen by load (lynx.gateway.decoders).

Every ``probe_interval`` the addresses are resolved again (a headless Service's records follow its ready pods) and
each instance is asked ``/readyz`` and ``/v1/load``; an instance that fails a call is left out until a probe finds it
ready again. Requests go to an instance's own address, so pooled keep-alive connections cannot pin them to one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import httpx
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.sdk.trace import TracerProvider
from pydantic import ValidationError

from lynx.contracts.decoder import DecoderLoad
from lynx.service.errors import LynxError
from lynx.gateway.decoders import DecoderAddresses, Picker
from lynx.telemetry.metrics import decoder_instances_collector
from lynx.telemetry.tracing import instrumented_client

log = logging.getLogger("lynx.gateway")
PROBE_TIMEOUT = httpx.Timeout(2.0)


class DecoderPool:
    def __init__(self, addresses: DecoderAddresses, client: httpx.AsyncClient, probe_interval: float) -> None:
        self.addresses = addresses
        self.client = client
        self.probe_interval = probe_interval
        self.picker = Picker()
        self._task: asyncio.Task | None = None
        self._collector = decoder_instances_collector()
        self._collector.sources.append(self.instance_states)

    @classmethod
    def connect(cls, addresses: DecoderAddresses, provider: TracerProvider, timeout: httpx.Timeout,
                probe_interval: float) -> DecoderPool:
        return cls(addresses, instrumented_client(provider, "", timeout), probe_interval)

    @property
    def single(self) -> bool:
        """One fixed instance (LYNX_GATEWAY_DECODER_URL, the local run's and the tests' default): there is no other to
        choose, so it is never probed nor dropped, and every request goes to it as before instances were chosen. A
        probe of a decoder slowed by load would otherwise mark the only instance unready and refuse work it could do."""
        return self.addresses.dns_name is None and len(self.addresses.urls) == 1

    def start(self) -> None:
        """Probes now and every ``probe_interval`` until closed; a single instance is taken as ready, unprobed."""
        if self.single:
            (url,) = self.addresses.urls
            self.picker.set_members([url])
            self.picker.observed(url, ready=True)
            return
        self._task = asyncio.create_task(self._probe_forever(), name="lynx-decoder-probes")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(ValueError):
            self._collector.sources.remove(self.instance_states)
        await self.client.aclose()

    # --- choosing -----------------------------------------------------------------------------------------------
    def acquire(self) -> str:
        """The instance the next request goes to, counted in flight until ``release``; 503 when none is ready."""
        url = self.picker.pick()
        if url is None:
            raise LynxError(503, "No decoder instance is ready; retry shortly.", "upstream_unavailable",
                            "server_error", headers={"Retry-After": "1"})
        return url

    def release(self, url: str) -> None:
        self.picker.release(url)

    def failed(self, url: str, why: str) -> None:
        if self.single:
            return  # nothing else to send to: the next request tries it again, as before
        state = self.picker.instances.get(url)
        if state is not None and state.ready:
            log.warning("decoder_instance_dropped", extra={"fields": {"decoder": url, "why": why}})
        self.picker.failed(url)

    @staticmethod
    def url(instance: str, path: str) -> str:
        """``path`` on ``instance``; an absolute URL (a cancel link the instance advertised) stays as it is."""
        return str(httpx.URL(instance).join(path))

    def ready(self) -> bool:
        return self.picker.ready_count() > 0

    def instance_states(self) -> dict[str, tuple[int, bool]]:
        return {url: (state.in_flight, state.ready) for url, state in self.picker.instances.items()}

    # --- probing ------------------------------------------------------------------------------------------------
    async def _probe_forever(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # noqa: BLE001 (a probe round that failed must not end the probing)
                log.exception("decoder_probe_failed")
            await asyncio.sleep(self.probe_interval)

    async def refresh(self) -> None:
        """Resolve the addresses again, then probe every instance they name."""
        self.picker.set_members(await self._resolve())
        await asyncio.gather(*(self._probe(url) for url in self.picker.members()))

    async def _resolve(self) -> tuple[str, ...]:
        addresses = self.addresses
        if addresses.dns_name is None:
            return addresses.urls
        try:
            records = await asyncio.get_running_loop().getaddrinfo(addresses.dns_name, addresses.port,
                                                                   type=socket.SOCK_STREAM)
        except socket.gaierror as error:
            if error.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
                return ()  # the name has no instance behind it (no ready pod)
            log.warning("decoder_dns_failed", extra={"fields": {"name": addresses.dns_name, "error": str(error)}})
            return tuple(self.picker.members())  # a resolver hiccup: keep the instances known, probes judge them
        return addresses.instance_urls(record[4][0] for record in records)

    async def _probe(self, url: str) -> None:
        """Probes make no spans: they would be one stray trace each."""
        try:
            with suppress_http_instrumentation():
                readyz = await self.client.get(self.url(url, "/readyz"), timeout=PROBE_TIMEOUT)
                if readyz.status_code != 200:
                    self.picker.observed(url, ready=False)
                    return
                answer = await self.client.get(self.url(url, "/v1/load"), timeout=PROBE_TIMEOUT)
            # A decoder of an older version has no /v1/load: it is ready, its load is this gateway's count alone.
            load = DecoderLoad.model_validate_json(answer.content) if answer.status_code == 200 else None
        except (httpx.HTTPError, ValidationError):
            self.picker.observed(url, ready=False)
            return
        self.picker.observed(url, ready=True, sequences=load.sequences if load else None)
