"""Every lynx service image, run by Docker with exactly the security settings the chart gives its pod,
answers /readyz: non-root user 10001, read-only root filesystem, no capabilities, no privilege
escalation, the default seccomp profile, the chart's memory limit and only /tmp writable.

The containers share one network namespace, as a pod's containers do, so the services find each
other on 127.0.0.1 with their default settings; Jaeger (the image built from the Go module, with its
built-in in-memory configuration) owns it, so the auditor's readiness, which asks the trace store, is
real too. The operator image needs an API server: its /readyz is checked on the real node
(test_real_node.py).
"""

from __future__ import annotations

import functools
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from ..integration.conftest import wait_for
from .conftest import CHART
from .realnode import DOCKER

SERVICES = ("tokenizer", "retriever", "decoder", "auditor", "gateway")
READY_TIMEOUT_SECONDS = 180


def security_flags(values: dict, component: str) -> list[str]:
    """`docker run` flags for the chart's podSecurityContext, containerSecurityContext and the
    component's memory limit; fails on a setting it does not know how to apply."""
    pod, container = values["podSecurityContext"], values["containerSecurityContext"]
    known_pod = {"runAsNonRoot", "runAsUser", "runAsGroup", "fsGroup", "seccompProfile"}
    known_container = {"allowPrivilegeEscalation", "readOnlyRootFilesystem", "capabilities"}
    assert set(pod) <= known_pod and set(container) <= known_container, "a new security setting: apply it here"
    assert pod["runAsNonRoot"] and pod["seccompProfile"] == {"type": "RuntimeDefault"}
    flags = ["--user", f"{pod['runAsUser']}:{pod['runAsGroup']}", "--group-add", str(pod["fsGroup"])]
    if container["readOnlyRootFilesystem"]:
        flags += ["--read-only", "--tmpfs", f"/tmp:uid={pod['runAsUser']},gid={pod['fsGroup']}"]
    if not container["allowPrivilegeEscalation"]:
        flags += ["--security-opt", "no-new-privileges"]
    flags += [f"--cap-drop={cap}" for cap in container["capabilities"]["drop"]]
    limit = values["components"][component]["resources"].get("limits", {}).get("memory")
    if limit:
        flags += ["--memory", limit.replace("Mi", "m").replace("Gi", "g")]
    return flags


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([DOCKER, *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])}… failed: {result.stderr}")
    return result


@pytest.fixture(scope="module")
def pod_of_images(images) -> Iterator[dict[str, str]]:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    tag = next(ref for ref in images["lynx"] if ref.startswith("lynx-gateway:")).split(":", 1)[1]
    jaeger = next(ref for ref in images["upstream"] if "/jaeger:" in ref)
    prefix = f"lynx-images-{uuid.uuid4().hex[:6]}"
    names = {"jaeger": f"{prefix}-jaeger"}
    try:
        docker("run", "--detach", "--name", names["jaeger"], "--read-only", "--tmpfs", "/tmp:uid=10001", jaeger)
        for service in SERVICES:
            names[service] = f"{prefix}-{service}"
            docker("run", "--detach", "--name", names[service], "--network", f"container:{names['jaeger']}",
                   *security_flags(values, service), f"lynx-{service}:{tag}")
        yield names
    finally:
        for name in names.values():
            docker("rm", "--force", name, check=False)


def test_every_service_image_answers_readyz_under_the_charts_security_context(pod_of_images):
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    address = docker("inspect", "--format", "{{.NetworkSettings.IPAddress}}", pod_of_images["jaeger"]).stdout.strip()

    def ready(service: str) -> bool:
        state = docker("inspect", "--format", "{{.State.Running}}", pod_of_images[service]).stdout.strip()
        if state != "true":
            pytest.fail(f"the {service} container stopped:\n{docker('logs', pod_of_images[service]).stderr[-3000:]}")
        try:
            port = values["components"][service]["port"]
            return httpx.get(f"http://{address}:{port}/readyz", timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    for service in SERVICES:
        wait_for(functools.partial(ready, service), READY_TIMEOUT_SECONDS, f"{service} /readyz", interval=1)
        # The kernel's view of the service's process, from the host: who it runs as and what it may do.
        pid = docker("inspect", "--format", "{{.State.Pid}}", pod_of_images[service]).stdout.strip()
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        assert status["Uid"].split()[:2] == ["10001", "10001"], (service, status["Uid"])
        assert int(status["CapEff"], 16) == 0 and status["NoNewPrivs"].strip() == "1", service
