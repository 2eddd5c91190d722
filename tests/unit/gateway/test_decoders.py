"""Choosing a decoder instance by load (lynx.gateway.decoders): pure logic, no instance."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lynx.gateway.decoders import DecoderAddresses, Picker, parse_addresses
from lynx.gateway.settings import GatewaySettings

A, B, C = "http://10.0.0.1:8083", "http://10.0.0.2:8083", "http://10.0.0.3:8083"


def picker_with(*urls: str) -> Picker:
    picker = Picker()
    picker.set_members(urls)
    for url in urls:
        picker.observed(url, ready=True, sequences=0)
    return picker


def test_each_request_goes_to_the_instance_with_the_fewest_in_flight():
    picker = picker_with(A, B, C)
    picks = [picker.pick() for _ in range(9)]
    assert sorted(picks.count(url) for url in (A, B, C)) == [3, 3, 3]
    picker.release(B)
    picker.release(B)
    assert [picker.pick(), picker.pick()] == [B, B]
    assert picker.pick() in (A, B, C)


def test_a_tie_goes_to_the_instance_that_waited_longest_so_sequential_requests_alternate():
    picker = picker_with(A, B)
    order = []
    for _ in range(6):
        url = picker.pick()
        order.append(url)
        picker.release(url)
    assert order in ([A, B] * 3, [B, A] * 3)


def test_what_an_instance_reports_beyond_this_gateways_count_is_load_from_elsewhere():
    picker = picker_with(A, B)
    assert picker.pick() == A  # A: 1 of ours
    picker.observed(B, ready=True, sequences=5)  # B holds 5 sequences of other gateways
    picker.observed(A, ready=True, sequences=1)  # A holds ours only
    assert [picker.pick() for _ in range(4)] == [A, A, A, A]  # A: 5 ours, B: 5 others
    assert picker.pick() in (A, B)
    picker.observed(A, ready=True, sequences=0)  # ours not arrived yet: never a negative correction
    assert picker.instances[A].others == 0


def test_a_failed_instance_takes_nothing_until_a_probe_finds_it_ready_again():
    picker = picker_with(A, B)
    picker.failed(A)
    assert [picker.pick() for _ in range(4)] == [B] * 4
    assert picker.ready_count() == 1
    picker.observed(A, ready=False)  # still down at the next probe
    assert picker.pick() == B
    picker.observed(A, ready=True, sequences=0)  # recovered: it has the least load, it gets the next ones
    assert [picker.pick() for _ in range(5)] == [A] * 5
    assert picker.ready_count() == 2


def test_no_ready_instance_means_no_pick():
    picker = Picker()
    picker.set_members([A])
    assert picker.pick() is None  # not probed yet
    picker.observed(A, ready=False)
    assert picker.pick() is None


def test_an_instance_that_leaves_takes_no_new_request_and_is_forgotten_once_its_requests_end():
    picker = picker_with(A, B)
    held = [picker.pick(), picker.pick()]
    assert sorted(held) == [A, B]
    picker.set_members([A])
    assert [picker.pick() for _ in range(3)] == [A] * 3
    assert B in picker.instances and picker.members() == [A]  # its request still runs: its cancel must reach it
    picker.observed(B, ready=True, sequences=1)  # a late probe answer does not bring it back
    assert picker.pick() == A
    picker.release(B)
    assert B not in picker.instances
    picker.set_members([A, B])  # back in the list: a new instance, waiting for its first probe
    assert picker.instances[B].ready is False


def test_release_never_counts_below_zero_nor_revives_an_unknown_instance():
    picker = picker_with(A)
    picker.release(A)
    picker.release(C)
    assert picker.instances[A].in_flight == 0 and C not in picker.instances


def test_addresses_are_a_list_of_instances_or_one_dns_name():
    assert parse_addresses([A, f" {B}/ "]) == DecoderAddresses(urls=(A, B))
    dns = parse_addresses(["dns+http://lynx-decoder-headless.ns.svc:8083"])
    assert (dns.dns_name, dns.scheme, dns.port) == ("lynx-decoder-headless.ns.svc", "http", 8083)
    assert dns.instance_urls(["10.0.0.2", "10.0.0.1", "10.0.0.2", "fd00::1"]) == (
        "http://10.0.0.1:8083", "http://10.0.0.2:8083", "http://[fd00::1]:8083")


@pytest.mark.parametrize(("given", "complaint"), [
    ([""], "no decoder instance"),
    (["10.0.0.1:8083"], "is not a decoder address"),
    (["http://host:port"], "is not a decoder address"),
    (["http://host:8083/v1"], "is not a decoder address"),
    ([A, A], "listed twice"),
    (["dns+http://decoders:8083", A], "give it alone"),
    (["dns+http://decoders"], "needs the instances' port"),
])
def test_a_wrong_address_is_refused_saying_what_to_write(given, complaint):
    with pytest.raises(ValueError, match=complaint):
        parse_addresses(given)


def test_the_gateway_settings_take_one_url_or_a_list_and_refuse_a_wrong_one_at_start_up():
    assert GatewaySettings(decoder_url=A).decoder_addresses().urls == (A,)
    assert GatewaySettings(decoder_url=A, decoder_urls=f"{B},{C}").decoder_addresses().urls == (B, C)
    with pytest.raises(ValidationError, match="is not a decoder address"):
        GatewaySettings(decoder_urls="10.0.0.1:8083")
    with pytest.raises(ValidationError, match="is not a decoder address"):
        GatewaySettings(cheaper_decoder_url="decoder", cheaper_model_name="cheap", cheaper_decoder_per_hour=0.1)
