"""A real Kubernetes control plane without a kubelet: etcd, kube-apiserver, controller-manager and
scheduler built from source (scripts/build_tools.sh), kwok faking the nodes and pod status."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from lynx.local.stack import find_binary

NODE_COUNT = 3
TOOLS = ("kwokctl", "kwok", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "helm", "kubectl")


def tool(name: str) -> str:
    binary = find_binary(name)
    if binary is None:
        raise RuntimeError(f"`{name}` is missing: run scripts/build_tools.sh (kubectl: install it)")
    return str(binary)


def fake_node(name: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                     "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                "kubernetes.io/arch": "amd64", "type": "kwok"}},
        "spec": {},
        "status": {"allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                   "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"}},
    }


@dataclass
class Cluster:
    name: str
    workdir: Path
    kubeconfig: Path
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *argv: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(list(argv), input=input, capture_output=True, text=True, env=self.env)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(tool("kubectl"), "--kubeconfig", str(self.kubeconfig), *args, input=input, check=check)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(tool("helm"), "--kubeconfig", str(self.kubeconfig), *args, check=check)

    def get(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def delete(self) -> None:
        self.run(tool("kwokctl"), "delete", "cluster", "--name", self.name, check=False)


def create_cluster(name: str, workdir: Path, fake_nodes: int = NODE_COUNT, extra: list[str] | None = None,
                   apiserver_sans: list[str] | None = None) -> Cluster:
    """A control plane from the local binaries with ``fake_nodes`` kwok nodes; ``extra``: more kwokctl flags;
    ``apiserver_sans``: more names in the API server's certificate (pods reach it on the `kubernetes` Service)."""
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig = workdir / "kubeconfig"
    env = {**os.environ, "KWOK_WORKDIR": str(workdir / "kwok"), "KUBECONFIG": str(kubeconfig)}
    cluster = Cluster(name, workdir, kubeconfig, env)
    if apiserver_sans:
        config = workdir / "kwokctl.yaml"
        config.write_text(json.dumps({"apiVersion": "config.kwok.x-k8s.io/v1alpha1", "kind": "KwokctlConfiguration",
                                      "options": {"kubeApiserverCertSANs": apiserver_sans}}))
        extra = ["--config", str(config), *(extra or [])]
    cluster.run(
        tool("kwokctl"), "create", "cluster", "--name", name, "--runtime", "binary", "--kubeconfig", str(kubeconfig),
        "--etcd-binary", tool("etcd"), "--kube-apiserver-binary", tool("kube-apiserver"),
        "--kube-controller-manager-binary", tool("kube-controller-manager"),
        "--kube-scheduler-binary", tool("kube-scheduler"), "--kwok-controller-binary", tool("kwok"),
        "--wait", "3m", "--timeout", "5m", *(extra or []))
    if fake_nodes:
        nodes = {"apiVersion": "v1", "kind": "List", "items": [fake_node(f"kwok-node-{i}") for i in range(fake_nodes)]}
        cluster.kubectl("apply", "-f", "-", input=json.dumps(nodes))
        cluster.kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=120s")
    return cluster


def missing_tools() -> list[str]:
    return [name for name in TOOLS if find_binary(name) is None and shutil.which(name) is None]
