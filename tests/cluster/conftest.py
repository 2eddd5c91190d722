from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .realnode import RealNode, missing_packages
from .testbed import Cluster, create_cluster, missing_tools

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "lynx"
KUBE_VERSION = "1.36.3"
# Tempo is an opt-in dependency (off by default): its archive is there for rendering, never run.
UPSTREAM_ARCHIVES = ("kube-prometheus-stack-88.5.3.tgz", "tempo-2.2.4.tgz")


def render(cluster: Cluster, values: Path, release: str = "lynx", namespace: str = "lynx") -> list[dict]:
    """The chart's objects as `helm template` renders them: no cluster to look anything up in."""
    output = cluster.helm("template", release, str(CHART), "--namespace", namespace, "-f", str(values),
                          "--kube-version", KUBE_VERSION, "--api-versions", "monitoring.coreos.com/v1").stdout
    return [doc for doc in yaml.safe_load_all(output) if doc]


def shared_charts() -> Path:
    """The offline copies of the upstream charts (../shared/charts beside the checkout)."""
    return Path(os.environ.get("LYNX_SHARED_CHARTS", REPO.parent / "shared" / "charts"))


@pytest.fixture(scope="session")
def chart() -> Path:
    """charts/lynx with its two dependencies copied in from the offline archives (never committed)."""
    source = shared_charts()
    (CHART / "charts").mkdir(exist_ok=True)
    for archive in UPSTREAM_ARCHIVES:
        if not (source / archive).is_file():
            pytest.fail(f"{source / archive} is missing: the upstream chart archives are needed offline")
        shutil.copy2(source / archive, CHART / "charts" / archive)
    return CHART


@pytest.fixture(scope="session")
def crds(tmp_path_factory) -> list[Path]:
    """The Prometheus operator's CRDs, as kube-prometheus-stack ships them."""
    out = tmp_path_factory.mktemp("crds")
    with tarfile.open(shared_charts() / UPSTREAM_ARCHIVES[0]) as archive:
        members = [m for m in archive.getmembers() if "/charts/crds/crds/" in m.name and m.name.endswith(".yaml")]
        for member in members:
            member.name = Path(member.name).name
            archive.extract(member, out, filter="data")
    return sorted(out.glob("*.yaml"))


@pytest.fixture(scope="session")
def cluster(tmp_path_factory, crds) -> Iterator[Cluster]:
    if missing := missing_tools():
        pytest.fail(f"test bed tools missing: {missing} (scripts/build_tools.sh builds them)")
    running = create_cluster(f"lynx-{uuid.uuid4().hex[:6]}", tmp_path_factory.mktemp("cluster"))
    try:
        for crd in crds:
            running.kubectl("apply", "--server-side", "-f", str(crd))
        running.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        yield running
    finally:
        running.delete()


# -- the real node ---------------------------------------------------------------------------------

NODE_VALUES = Path(__file__).with_name("node-values.yaml")
NODE_NAMESPACE, NODE_RELEASE = "lynx", "lynx"


@pytest.fixture(scope="session")
def images() -> dict[str, list[str]]:
    """Every lynx image (docker/*.Dockerfile on a Debian base made from Debian's packages) and every
    upstream image the chart and the node need (from the Go builds), built by scripts/images.sh."""
    built = {}
    for kind in ("lynx", "upstream"):
        result = subprocess.run(["bash", str(REPO / "scripts" / "images.sh"), kind], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail(f"scripts/images.sh {kind} failed:\n{result.stderr[-5000:]}")
        built[kind] = result.stdout.split()
    return built


# Module scope: the node and its release go away after test_real_node.py, before the integration tests,
# whose timings must not share the two cores with Prometheus, Jaeger and a dozen idle pods.
@pytest.fixture(scope="module")
def real_node(images) -> Iterator[RealNode]:
    if missing := missing_packages():
        pytest.fail(f"the real node needs these Debian packages: {missing} (scripts/test.sh installs them)")
    pause = next(ref for ref in images["upstream"] if "/pause:" in ref)
    node = RealNode(Path(f"/tmp/lynx-node-{os.getpid()}"), images=images["lynx"] + images["upstream"],
                    pause_image=pause)
    try:
        node.start()
        yield node
    finally:
        node.stop()
        left = node.leftovers()
        shutil.rmtree(node.workdir, ignore_errors=True)
        assert not any(left.values()), f"the real node left things behind: {left}"


@pytest.fixture(scope="module")
def release_on_node(real_node: RealNode, chart: Path) -> Cluster:
    """The umbrella chart installed on the real node with `helm install --wait`."""
    cluster = real_node.cluster
    # Jaeger keeps its traces on a volume (node-values.yaml): a new pod finds them again.
    real_node.host_volume("lynx-jaeger", "lynx-node-local", "2Gi", owner=10001)
    # So does the long-term Prometheus its daily aggregates (it runs as uid 1000).
    real_node.host_volume("lynx-longterm", "lynx-node-longterm", "1Gi", owner=1000)
    started = time.monotonic()
    cluster.helm("install", NODE_RELEASE, str(chart), "--namespace", NODE_NAMESPACE, "--create-namespace",
                 "-f", str(NODE_VALUES), "--wait", "--timeout", "15m")
    print(f"helm install --wait on the real node: {time.monotonic() - started:.0f} s")
    return cluster
