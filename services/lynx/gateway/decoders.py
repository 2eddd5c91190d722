"""Which decoder instance takes a request: the ready one with the fewest requests in flight.

Pure logic, no I/O (lynx.gateway.decoder_pool probes the instances and sends the requests). An instance's load is
the gateway's own count of requests it sent there and that have not ended, plus what the instance reported holding
beyond that count at its last probe: the requests of other gateways, which this one cannot count. Its own count moves
at once with every request; the correction only as often as the instances are probed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

DNS_SCHEME_PREFIX = "dns+"


@dataclass(frozen=True)
class DecoderAddresses:
    """Where the decoder instances are: a fixed list of base URLs, or a DNS name whose A/AAAA records are the
    instances (a Kubernetes headless Service), reached with ``scheme`` on ``port``."""

    urls: tuple[str, ...] = ()
    dns_name: str | None = None
    scheme: str = "http"
    port: int = 0

    def instance_urls(self, addresses: Iterable[str]) -> tuple[str, ...]:
        """The base URL of each resolved address of ``dns_name``."""
        return tuple(f"{self.scheme}://{f'[{a}]' if ':' in a else a}:{self.port}" for a in sorted(set(addresses)))


def parse_addresses(urls: list[str]) -> DecoderAddresses:
    """``http://host:port`` entries (one per instance), or a single ``dns+http://name:port``; ValueError says what
    is wrong with anything else."""
    entries = [u.strip().rstrip("/") for u in urls if u.strip()]
    if not entries:
        raise ValueError("no decoder instance given: set LYNX_GATEWAY_DECODER_URL or LYNX_GATEWAY_DECODER_URLS")
    discovered = [e for e in entries if e.startswith(DNS_SCHEME_PREFIX)]
    if discovered:
        if len(entries) > 1:
            raise ValueError(f"{discovered[0]} names every instance through DNS: give it alone, not in a list")
        scheme, name, port = split_url(discovered[0].removeprefix(DNS_SCHEME_PREFIX), discovered[0])
        if port is None:
            raise ValueError(f"{discovered[0]}: a DNS address needs the instances' port, e.g. dns+http://name:8083")
        return DecoderAddresses(dns_name=name, scheme=scheme, port=port)
    for entry in entries:
        split_url(entry, entry)
    if len(set(entries)) != len(entries):
        raise ValueError(f"a decoder instance is listed twice in {', '.join(entries)}")
    return DecoderAddresses(urls=tuple(entries))


def split_url(url: str, given: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1 or parts.path not in ("", "/"):
        raise ValueError(f"{given!r} is not a decoder address: write http://host:port (or dns+http://name:port)")
    return parts.scheme, parts.hostname, port


@dataclass
class InstanceState:
    in_flight: int = 0  # requests this gateway sent there that have not ended
    others: int = 0  # what the instance held beyond in_flight at its last probe (other gateways' requests)
    ready: bool = False  # until its first probe answers, an instance takes nothing
    last_pick: int = -1  # when it was last picked (a tie goes to the one that waited longest)
    leaving: bool = False  # gone from the address list, kept only until its requests end

    @property
    def load(self) -> int:
        return self.in_flight + self.others


class Picker:
    """The instances and their load; ``pick`` chooses, ``release`` ends a request, ``failed`` and ``observed``
    record what calls and probes found."""

    def __init__(self) -> None:
        self.instances: dict[str, InstanceState] = {}
        self._picks = itertools.count()

    def set_members(self, urls: Iterable[str]) -> None:
        """The instances the addresses name now: new ones wait for their first probe; one that left takes no new
        request and is forgotten once its requests end (a cancel still reaches it meanwhile)."""
        current = set(urls)
        for url in current:
            state = self.instances.setdefault(url, InstanceState())
            state.leaving = False
        for url, state in list(self.instances.items()):
            if url not in current:
                state.leaving, state.ready = True, False
                self._forget_if_idle(url)

    def members(self) -> list[str]:
        return [url for url, state in self.instances.items() if not state.leaving]

    def pick(self) -> str | None:
        """The ready instance with the least load, counted as in flight from now; None when none is ready."""
        ready = [(state.load, state.last_pick, url) for url, state in self.instances.items() if state.ready]
        if not ready:
            return None
        _, _, url = min(ready)
        state = self.instances[url]
        state.in_flight += 1
        state.last_pick = next(self._picks)
        return url

    def release(self, url: str) -> None:
        """A request sent to ``url`` ended, however."""
        state = self.instances.get(url)
        if state is None:
            return
        state.in_flight = max(0, state.in_flight - 1)
        self._forget_if_idle(url)

    def failed(self, url: str) -> None:
        """A call to ``url`` failed the way a broken instance fails: it takes nothing until a probe finds it ready."""
        if url in self.instances:
            self.instances[url].ready = False

    def observed(self, url: str, ready: bool, sequences: int | None = None) -> None:
        """What a probe of ``url`` found: whether it is ready and, when it said, the sequences it holds."""
        state = self.instances.get(url)
        if state is None or state.leaving:
            return
        state.ready = ready
        if sequences is not None:
            state.others = max(0, sequences - state.in_flight)

    def ready_count(self) -> int:
        return sum(state.ready for state in self.instances.values())

    def _forget_if_idle(self, url: str) -> None:
        if self.instances[url].leaving and self.instances[url].in_flight == 0:
            del self.instances[url]
