from __future__ import annotations

import os
import shutil
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .testbed import Cluster, create_cluster, missing_tools

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "lynx"
KUBE_VERSION = "1.36.3"
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
