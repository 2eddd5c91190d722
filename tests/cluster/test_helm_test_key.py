"""The `helm test` API key on a real API server: a new random key per release, kept by upgrades, a
user's own key honoured, none of them fixed in what the chart renders or printed by it, and the
gateway's tenants file holding only the key's SHA-256."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from lynx.accounting.tenants import Tenant, parse_tenants

from .conftest import CHART, render
from .testbed import Cluster

NAMESPACE = "helm-test-key"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
# The key the chart shipped before it generated one; anyone could call a gateway installed with it.
FORMER_FIXED_KEY = "lynx-helm-test-key"
# Only the lynx services: nothing else is needed to see where the key goes, and installs stay fast.
LYNX_ONLY = {"kube-prometheus-stack": {"enabled": False}, "jaeger": {"enabled": False}}


@dataclass(frozen=True)
class ReleaseKey:
    """What one release's objects say about its test key, found the way the pods find it."""

    secret: str  # the Secret the test pod's LYNX_TEST_KEY refers to
    key: str  # the key in it
    tenants: dict  # the tenants file in the Secret the gateway mounts
    tenants_checksum: str  # the gateway pod template's checksum/tenants annotation


def write_values(directory: Path, name: str, values: dict) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def decoded(secret: dict, key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


def read_test_key(cluster: Cluster, release: str) -> ReleaseKey:
    hooks = yaml.safe_load_all(cluster.helm("get", "hooks", release, "--namespace", NAMESPACE).stdout)
    pod = next(d for d in hooks if d and d["kind"] == "Pod")
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    reference = env["LYNX_TEST_KEY"]["valueFrom"]["secretKeyRef"]
    key = decoded(cluster.get("secret", reference["name"], "--namespace", NAMESPACE), reference["key"])
    gateway = cluster.get("deployment", "--namespace", NAMESPACE, "-l",
                          f"app.kubernetes.io/instance={release},app.kubernetes.io/component=gateway")["items"][0]
    template = gateway["spec"]["template"]
    volume = next(v for v in template["spec"]["volumes"] if v["name"] == "tenants")
    tenants = json.loads(decoded(cluster.get("secret", volume["secret"]["secretName"], "--namespace", NAMESPACE),
                                 "tenants.json"))
    return ReleaseKey(reference["name"], key, tenants, template["metadata"]["annotations"]["checksum/tenants"])


def spellings(key: str) -> set[str]:
    """The forms a key takes in a manifest: as is, or base64 in a Secret's data."""
    return {key, base64.b64encode(key.encode()).decode()}


def install(cluster: Cluster, chart: Path, release: str, *values: Path) -> str:
    """helm install without --wait (nothing here needs a pod running); returns what helm printed."""
    files = [arg for path in values for arg in ("-f", str(path))]
    return cluster.helm("install", release, str(chart), "--namespace", NAMESPACE, "--create-namespace",
                        *files).stdout


@pytest.fixture(scope="module")
def lynx_only(tmp_path_factory) -> Path:
    return write_values(tmp_path_factory.mktemp("values"), "lynx-only", LYNX_ONLY)


@pytest.fixture(scope="module")
def two_releases(cluster: Cluster, chart, lynx_only: Path) -> Iterator[dict[str, str]]:
    """Two releases of the defaults side by side: {release: what `helm install` printed}."""
    printed = {release: install(cluster, chart, release, lynx_only) for release in ("keys-a", "keys-b")}
    yield printed
    for release in printed:
        cluster.helm("uninstall", release, "--namespace", NAMESPACE, check=False)


def test_each_release_gets_its_own_random_key(cluster: Cluster, two_releases):
    first, second = (read_test_key(cluster, release).key for release in two_releases)
    assert first != second
    assert min(len(first), len(second)) >= 32 and FORMER_FIXED_KEY not in {first, second}


def test_the_tenants_secret_holds_only_the_sha256_of_the_test_key(cluster: Cluster, two_releases):
    for release in two_releases:
        found = read_test_key(cluster, release)
        # The gateway's own parser, against a hash computed here rather than taken from the chart.
        assert parse_tenants(found.tenants) == {hashlib.sha256(found.key.encode()).hexdigest(): Tenant("helm-test")}
        assert all(s not in json.dumps(found.tenants) for s in spellings(found.key))


def test_an_upgrade_keeps_the_key(cluster: Cluster, chart, two_releases, lynx_only: Path, tmp_path):
    before = read_test_key(cluster, "keys-a")
    dearer = write_values(tmp_path, "dearer", {"costRates": {"gatewayPerHour": 0.05}})
    printed = cluster.helm("upgrade", "keys-a", str(chart), "--namespace", NAMESPACE,
                           "-f", str(lynx_only), "-f", str(dearer)).stdout
    gateway = cluster.get("deployment", "--namespace", NAMESPACE, "-l",
                          "app.kubernetes.io/instance=keys-a,app.kubernetes.io/component=gateway")["items"][0]
    env = {e["name"]: e.get("value") for e in gateway["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["LYNX_COST_GATEWAY_PER_HOUR"] == "0.05", "the upgrade did not reach the cluster"
    after = read_test_key(cluster, "keys-a")
    # Same key, same tenants file, and the gateway's pods are not rolled for a key that did not change.
    assert after == before
    assert all(s not in printed for s in spellings(after.key))


def test_a_fresh_install_gets_a_new_key(cluster: Cluster, chart, lynx_only: Path):
    install(cluster, chart, "keys-fresh", lynx_only)
    first = read_test_key(cluster, "keys-fresh").key
    cluster.helm("uninstall", "keys-fresh", "--namespace", NAMESPACE, "--wait")
    try:
        install(cluster, chart, "keys-fresh", lynx_only)
        assert read_test_key(cluster, "keys-fresh").key != first
    finally:
        cluster.helm("uninstall", "keys-fresh", "--namespace", NAMESPACE, check=False)


def test_helm_never_prints_the_key(cluster: Cluster, two_releases):
    for release, install_output in two_releases.items():
        key = read_test_key(cluster, release).key
        notes = cluster.helm("get", "notes", release, "--namespace", NAMESPACE).stdout
        assert "helm test" in notes
        for text in (install_output, notes, cluster.helm("status", release, "--namespace", NAMESPACE).stdout):
            assert all(s not in text for s in spellings(key))


def test_only_the_key_secret_holds_the_key(cluster: Cluster, two_releases):
    for release in two_releases:
        found = read_test_key(cluster, release)
        manifests = cluster.helm("get", "manifest", release, "--namespace", NAMESPACE).stdout
        hooks = cluster.helm("get", "hooks", release, "--namespace", NAMESPACE).stdout
        holders = [f"{d['kind']}/{d['metadata']['name']}" for d in yaml.safe_load_all(manifests + "\n---\n" + hooks)
                   if d and any(s in yaml.safe_dump(d) for s in spellings(found.key))]
        assert holders == [f"Secret/{found.secret}"]


def test_a_key_given_in_values_is_used(cluster: Cluster, chart, lynx_only: Path, tmp_path):
    own, replaced = (f"own-{secrets.token_urlsafe(24)}" for _ in range(2))
    printed = install(cluster, chart, "keys-own", lynx_only, write_values(tmp_path, "own", {"helmTest": {"apiKey": own}}))
    try:
        found = read_test_key(cluster, "keys-own")
        assert found.key == own
        assert parse_tenants(found.tenants) == {hashlib.sha256(own.encode()).hexdigest(): Tenant("helm-test")}
        assert all(s not in printed for s in spellings(own))
        # A key given later wins over the one the release's Secret holds.
        printed = cluster.helm("upgrade", "keys-own", str(chart), "--namespace", NAMESPACE, "-f", str(lynx_only),
                               "-f", str(write_values(tmp_path, "replaced", {"helmTest": {"apiKey": replaced}}))).stdout
        assert read_test_key(cluster, "keys-own").key == replaced
        assert all(s not in printed for s in spellings(replaced))
    finally:
        cluster.helm("uninstall", "keys-own", "--namespace", NAMESPACE, check=False)


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.stem)
def test_no_rendered_manifest_holds_a_fixed_key(cluster: Cluster, chart, values: Path):
    renders = [render(cluster, values) for _ in range(2)]
    keys = [decoded(next(d for d in documents if d["metadata"]["name"] == "lynx-helm-test"), "api-key")
            for documents in renders]
    assert keys[0] != keys[1]
    for documents, other_key in zip(renders, reversed(keys), strict=True):
        text = yaml.safe_dump_all(documents)
        assert all(s not in text for s in spellings(other_key) | spellings(FORMER_FIXED_KEY))


def test_switched_off_the_test_renders_no_key(cluster: Cluster, chart, tmp_path):
    documents = [d for d in render(cluster, write_values(tmp_path, "off", {"helmTest": {"enabled": False}}))
                 if d["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "lynx"]
    assert not [d for d in documents if "helm-test" in d["metadata"]["name"] or d["kind"] == "Pod"]
    tenants = next(d for d in documents if d["metadata"]["name"] == "lynx-tenants")
    assert parse_tenants(json.loads(tenants["stringData"]["tenants.json"])) == {}
