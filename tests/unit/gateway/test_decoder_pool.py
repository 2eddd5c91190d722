"""The decoder pool's own work that needs no decoder: resolving a DNS address, and where a call to an instance goes."""

from __future__ import annotations

import asyncio

import httpx

from lynx.gateway.decoder_pool import DecoderPool
from lynx.gateway.decoders import parse_addresses


def resolved(*addresses: str) -> tuple[str, ...]:
    async def resolve() -> tuple[str, ...]:
        pool = DecoderPool(parse_addresses(list(addresses)), httpx.AsyncClient(), probe_interval=1.0)
        try:
            return await pool._resolve()
        finally:
            await pool.aclose()
    return asyncio.run(resolve())


def test_a_dns_address_names_one_instance_per_record_of_the_name():
    assert "http://127.0.0.1:8083" in resolved("dns+http://localhost:8083")


def test_a_name_without_records_has_no_instance():
    assert resolved("dns+http://no-such-decoder.invalid:8083") == ()


def test_a_list_is_the_instances_as_given():
    assert resolved("http://127.0.0.1:9", "http://127.0.0.2:9") == ("http://127.0.0.1:9", "http://127.0.0.2:9")


def test_a_call_goes_to_the_instance_unless_the_instance_advertised_an_absolute_link():
    instance = "http://10.0.0.7:8083"
    assert DecoderPool.url(instance, "/v1/generate") == "http://10.0.0.7:8083/v1/generate"
    assert DecoderPool.url(instance, "/v1/generate/abc/cancel") == "http://10.0.0.7:8083/v1/generate/abc/cancel"
    assert DecoderPool.url(instance, "http://10.0.0.9:8083/v1/generate/abc/cancel") == (
        "http://10.0.0.9:8083/v1/generate/abc/cancel")
