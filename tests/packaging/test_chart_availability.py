"""The chart's defaults are highly available and the gateways reach every decoder pod: rendered by `helm template`
(no cluster, no Docker)."""

from __future__ import annotations

import pytest

from lynx.gateway.settings import GatewaySettings

from ..rules.chart import helm_template

RELEASE = "lynx"


@pytest.fixture(scope="module")
def defaults() -> list[dict]:
    return helm_template({}, release=RELEASE)


def named(documents: list[dict], kind: str, name: str) -> dict:
    (found,) = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def environment(deployment: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_two_gateways_with_a_disruption_budget_spread_over_nodes(defaults):
    gateway = named(defaults, "Deployment", f"{RELEASE}-gateway")
    assert gateway["spec"]["replicas"] == 2
    budget = named(defaults, "PodDisruptionBudget", f"{RELEASE}-gateway")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == gateway["spec"]["selector"]["matchLabels"]
    (preferred,) = gateway["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"]
    term = preferred["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == gateway["spec"]["selector"]["matchLabels"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in gateway["spec"]["template"]["spec"]["affinity"][
        "podAntiAffinity"]


def test_anti_affinity_can_be_switched_off():
    gateway = named(helm_template({"podAntiAffinity": {"enabled": False, "topologyKey": "kubernetes.io/hostname"}},
                                  release=RELEASE), "Deployment", f"{RELEASE}-gateway")
    assert "affinity" not in gateway["spec"]["template"]["spec"]


def test_the_gateways_discover_the_decoder_pods_through_a_headless_service(defaults):
    decoder = named(defaults, "Deployment", f"{RELEASE}-decoder")
    headless = named(defaults, "Service", f"{RELEASE}-decoder-instances")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == decoder["spec"]["selector"]["matchLabels"]
    port = headless["spec"]["ports"][0]["port"]
    urls = environment(named(defaults, "Deployment", f"{RELEASE}-gateway"))["LYNX_GATEWAY_DECODER_URLS"]
    assert urls == f"dns+http://{RELEASE}-decoder-instances:{port}"
    addresses = GatewaySettings(decoder_urls=urls).decoder_addresses()  # what the gateway makes of it
    assert (addresses.dns_name, addresses.port) == (f"{RELEASE}-decoder-instances", port)


def test_the_decoder_pods_are_scraped_once_not_through_the_headless_service_too(defaults):
    monitor = named(defaults, "ServiceMonitor", f"{RELEASE}-decoder")
    selector = monitor["spec"]["selector"]
    scraped = [d["metadata"]["name"] for d in defaults if d["kind"] == "Service"
               and all(d["metadata"]["labels"].get(k) == v for k, v in selector["matchLabels"].items())
               and all(e["key"] not in d["metadata"]["labels"] for e in selector.get("matchExpressions", [])
                       if e["operator"] == "DoesNotExist")]
    assert scraped == [f"{RELEASE}-decoder"]


def test_decoder_threads_match_its_cpu_limit_by_default(defaults):
    decoder = named(defaults, "Deployment", f"{RELEASE}-decoder")
    container = decoder["spec"]["template"]["spec"]["containers"][0]
    assert environment(decoder)["LYNX_DECODER_THREADS"] == str(container["resources"]["limits"]["cpu"])
