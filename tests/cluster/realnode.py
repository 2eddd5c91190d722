"""A real Kubernetes node on this machine: the test bed's control plane (kwokctl, local binaries,
no kwok controller) plus a kubelet, its own containerd, CNI (bridge + firewall + portmap), kube-proxy
and CoreDNS, all as host processes. Pods run as real containers; probes, Services, DNS,
port-forward and graceful termination are the real ones.

``RealNode.start`` brings it up (about ten seconds once the binaries are built); ``stop`` takes
down every process it started and every trace it left: mounts, network namespaces, the bridge,
the iptables chains of kubelet, kube-proxy, the CNI plugins and the node's own. ``leftovers`` says what remains.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from lynx.service.polling import poll, wait_for

from .testbed import Cluster, create_cluster, tool

NODE_NAME = "lynx-node"
POD_SUBNET = "10.88.0.0/16"
BRIDGE = "lynx0"
CNI_BIN_DIR = Path("/usr/lib/cni")
CLUSTER_DOMAIN = "cluster.local"
# The Services' addresses (the API server's default range, stated), and the first of them, where pods
# reach the API server over TLS.
SERVICE_SUBNET = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"
# The firewall plugin's admin chain, filled by the node (see RealNode._refuse_untranslated_service_traffic).
SERVICE_GUARD_CHAIN = "LYNX-SERVICE-GUARD"
# What the kubelet, kube-proxy, the CNI plugins and the node itself add to the host's packet filter.
RULE_PREFIXES = ("KUBE-", "CNI-", "LYNX-")
# Debian's docker client (the one scripts/images.sh builds with).
DOCKER = os.environ.get("LYNX_DOCKER", "/usr/bin/docker")
NODE_PACKAGES = {"containerd": "containerd", "runc": "runc", "conntrack": "conntrack", "socat": "socat",
                 "ethtool": "ethtool", "iptables": "iptables", "ctr": "containerd"}


def node_ip() -> str:
    """The address the host's default route leaves from: the node's InternalIP and CoreDNS's."""
    route = subprocess.run(["ip", "-4", "route", "get", "1.1.1.1"], capture_output=True, text=True, check=True)
    return re.search(r"\bsrc (\S+)", route.stdout).group(1)


def missing_packages() -> list[str]:
    """Debian packages the node needs that are not installed."""
    missing = {package for command, package in NODE_PACKAGES.items() if shutil.which(command) is None}
    if not (CNI_BIN_DIR / "bridge").is_file() or not (CNI_BIN_DIR / "firewall").is_file():
        missing.add("containernetworking-plugins")
    return sorted(missing)


def containerd_config(root: Path, socket: Path, pause_image: str, cni_conf_dir: Path) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{root}/root"
state = "{root}/state"
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[{cri}]
  sandbox_image = "{pause_image}"
  disable_apparmor = true
  # Without it every sandbox fails: this VM cannot lower oom_score_adj (no CAP_SYS_RESOURCE).
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{cni_conf_dir}"
"""


def cni_config(ipam_dir: Path) -> dict:
    """bridge, then firewall (docker sets FORWARD's policy to DROP: without it pod traffic times out)."""
    return {
        "cniVersion": "1.0.0", "name": "lynx-node",
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": True, "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(ipam_dir), "ranges": [[{"subnet": POD_SUBNET}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "firewall", "iptablesAdminChainName": SERVICE_GUARD_CHAIN},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(socket: Path, dns_ip: str, logs_dir: Path) -> dict:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "cgroupDriver": "cgroupfs", "failCgroupV1": False, "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{socket}",
        "clusterDNS": [dns_ip], "clusterDomain": CLUSTER_DOMAIN,
        "podLogsDir": str(logs_dir),
        # Test bed only: the API server reaches the kubelet (logs, exec, port-forward) unauthenticated.
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "readOnlyPort": 0,
        # Absolute floors: on a large, nearly full test disk a percentage taints the node with disk pressure
        # while gigabytes are still free.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "256Mi", "imagefs.available": "256Mi",
                         "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100,
        "serializeImagePulls": False,
        "resolvConf": "/etc/resolv.conf",
    }


def kube_proxy_config(kubeconfig: Path) -> dict:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "mode": "iptables", "hostnameOverride": NODE_NAME, "clusterCIDR": POD_SUBNET,
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        # The VM does not let kube-proxy raise nf_conntrack_max.
        "conntrack": {"maxPerCore": 0},
    }


def corefile(bind: str, kubeconfig: Path) -> str:
    return f""".:53 {{
    bind {bind}
    errors
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    forward . /etc/resolv.conf
    cache 30
}}
"""


def chain_rules(save_output: str) -> list[tuple[str, list[str]]]:
    """From `iptables-save`: (table, rule arguments) of every rule in or jumping to a KUBE-/CNI- chain,
    and ("chain", [table, name]) entries for the chains themselves."""
    found: list[tuple[str, list[str]]] = []
    table = ""
    for line in save_output.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":") and line[1:].split()[0].startswith(RULE_PREFIXES):
            found.append(("chain", [table, line[1:].split()[0]]))
        elif line.startswith("-A "):
            words = shlex.split(line)
            target = words[words.index("-j") + 1] if "-j" in words else ""
            if words[1].startswith(RULE_PREFIXES) or target.startswith(RULE_PREFIXES):
                found.append((table, words[1:]))
    return found


@dataclass
class RealNode:
    workdir: Path
    images: list[str]
    pause_image: str
    cluster: Cluster | None = None
    ip: str = ""
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def socket(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    # -- bring-up --------------------------------------------------------------------------------

    def start(self) -> Cluster:
        self.ip = node_ip()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cluster = create_cluster(
            f"lynx-node-{os.getpid()}", self.workdir / "control-plane", fake_nodes=0,
            extra=["--disable", "kwok-controller",
                   "--extra-args", "kube-apiserver=kubelet-preferred-address-types=InternalIP,Hostname",
                   "--extra-args", f"kube-apiserver=service-cluster-ip-range={SERVICE_SUBNET}"],
            apiserver_sans=[KUBERNETES_SERVICE_IP])
        self._start_containerd()
        self.load_images(self.images + [self.pause_image])
        self._start_dns()
        self._refuse_untranslated_service_traffic()
        self._start_kubelet()
        self._start_kube_proxy()
        self._wait_for("kubelet", self._node_ready, timeout=120)
        return self.cluster

    def host_volume(self, name: str, storage_class: str, size: str, owner: int) -> None:
        """A PersistentVolume of ``storage_class`` on a directory of the node that ``owner`` (a uid, also its gid)
        may write: the node has no provisioner, so a claim of that class binds to this one. Kept until the node
        goes, so a pod scaled away and back finds its data."""
        directory = self.workdir / "volumes" / name
        directory.mkdir(parents=True, exist_ok=True)
        os.chown(directory, owner, owner)
        # The class itself, without a provisioner: the Prometheus operator refuses a claim template of a class that
        # does not exist.
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": storage_class},
            "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "Immediate"}))
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
            "spec": {"storageClassName": storage_class, "capacity": {"storage": size},
                     "accessModes": ["ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Retain",
                     "hostPath": {"path": str(directory), "type": "Directory"},
                     "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                         {"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE_NAME]}]}]}}}}))

    def _node_ready(self) -> bool:
        node = self.cluster.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
        if node.returncode != 0:
            return False
        conditions = json.loads(node.stdout)["status"].get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _write(self, relative: str, text: str) -> Path:
        path = self.workdir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def _start_containerd(self) -> None:
        cni_conf_dir = self.workdir / "cni" / "net.d"
        self._write("cni/net.d/10-lynx.conflist", json.dumps(cni_config(self.workdir / "cni" / "ipam"), indent=2))
        config = self._write("containerd/config.toml", containerd_config(
            self.workdir / "containerd", self.socket, self.pause_image, cni_conf_dir))
        self._spawn("containerd", ["containerd", "--config", str(config)])
        self._wait_for("containerd", lambda: self.ctr("version", check=False).returncode == 0)

    def ctr(self, *args: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args],
                              input=input, capture_output=True, check=check)

    def load_images(self, images: list[str]) -> None:
        """docker save | ctr import: the node never pulls (the chart's pull policy is IfNotPresent)."""
        save = subprocess.Popen([DOCKER, "save", *images], stdout=subprocess.PIPE)
        imported = subprocess.run(["ctr", "--address", str(self.socket), "--namespace", "k8s.io", "images",
                                   "import", "-"], stdin=save.stdout, capture_output=True, text=True)
        save.stdout.close()
        if save.wait() != 0 or imported.returncode != 0:
            raise RuntimeError(f"loading images into the node failed: {imported.stderr}")

    def _refuse_untranslated_service_traffic(self) -> None:
        """A pod's packet to a Service address that kube-proxy did not translate (the Service has no ready
        endpoint) must be refused. kube-proxy's REJECT for such Services sits in FORWARD behind the CNI
        firewall plugin's chain, which accepts whatever a pod sends: the packet would leave by the default
        route, and this VM's egress proxy answers every address with HTTP 404, on a connection the client
        keeps alive long after the Service has endpoints again. The plugin consults its admin chain before
        its accepts: the refusal goes there."""
        rule = ["-d", SERVICE_SUBNET, "-m", "comment", "--comment", "Service address kube-proxy did not translate",
                "-j", "REJECT", "--reject-with", "icmp-port-unreachable"]
        for argv in (["-N", SERVICE_GUARD_CHAIN], ["-A", SERVICE_GUARD_CHAIN, *rule]):
            subprocess.run(["iptables", "-t", "filter", *argv], check=True, capture_output=True)

    def _start_dns(self) -> None:
        corefile_path = self._write("coredns/Corefile", corefile(self.ip, self.cluster.kubeconfig))
        self._spawn("coredns", [tool("coredns"), "-conf", str(corefile_path)])
        self._wait_for("coredns", lambda: subprocess.run(["ss", "-lun", f"src {self.ip}:53"], capture_output=True,
                                                          text=True).stdout.count(":53") > 0)

    def _start_kubelet(self) -> None:
        config = self._write("kubelet/config.json", json.dumps(kubelet_config(
            self.socket, self.ip, self.workdir / "pod-logs")))
        self._spawn("kubelet", [
            tool("kubelet"), "--config", str(config), "--kubeconfig", str(self.cluster.kubeconfig),
            "--hostname-override", NODE_NAME, "--node-ip", self.ip,
            "--root-dir", str(self.workdir / "kubelet" / "root"), "--cert-dir", str(self.workdir / "kubelet" / "pki"),
            "--v", "1"])

    def _start_kube_proxy(self) -> None:
        config = self._write("kube-proxy/config.json", json.dumps(kube_proxy_config(self.cluster.kubeconfig)))
        self._spawn("kube-proxy", [tool("kube-proxy"), "--config", str(config)])

    def _wait_for(self, name: str, ready, timeout: float = 60) -> None:
        def running_and_ready() -> bool:
            process = self.processes[name]
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}: {self.log_tail(name)}")
            return ready()

        wait_for(running_and_ready, timeout, f"{name} to be ready", interval=0.2, explain=lambda: self.log_tail(name),
                 error=RuntimeError)


    def log_tail(self, name: str, size: int = 3000) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-size:] if path.exists() else ""

    # -- teardown --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Everything started, in reverse; safe to call after a partial start."""
        if self.cluster is not None:
            # Cordoned, no controller brings a pod back while the containers are being stopped.
            self.cluster.kubectl("cordon", NODE_NAME, check=False)
        for name in ("kube-proxy", "kubelet", "coredns"):
            self._terminate(name)
        if "containerd" in self.processes:
            self._stop_containers()
            self._terminate("containerd")
            self._kill_shims()
        if "kube-proxy" in self.processes:
            subprocess.run([tool("kube-proxy"), "--cleanup"], capture_output=True)
        self._unmount_all()
        subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True)
        self._remove_rules()
        if self.cluster is not None:
            self.cluster.delete()

    def _terminate(self, name: str, timeout: float = 20) -> None:
        process = self.processes.get(name)
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def _stop_containers(self) -> None:
        tasks = self.ctr("tasks", "list", "--quiet", check=False).stdout.decode().split()
        for task in tasks:
            self.ctr("tasks", "kill", "--signal", "SIGKILL", task, check=False)
        deadline = time.monotonic() + 20
        for task in tasks:
            poll(lambda task=task: self.ctr("tasks", "delete", task, check=False).returncode == 0,
                 max(0.0, deadline - time.monotonic()), interval=0.2)
        for container in self.ctr("containers", "list", "--quiet", check=False).stdout.decode().split():
            self.ctr("containers", "delete", container, check=False)

    def _kill_shims(self) -> None:
        """runc shims started for this containerd (they outlive it by design)."""
        subprocess.run(["pkill", "-KILL", "-f", f"containerd-shim.*-address {self.socket}"], capture_output=True)

    def _mounts(self) -> list[str]:
        points = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(str(self.workdir)):
                points.append(point)
        return points

    def _unmount_all(self) -> None:
        for _ in range(5):
            points = self._mounts()
            if not points:
                return
            for point in sorted(points, key=len, reverse=True):
                subprocess.run(["umount", "--lazy", point], capture_output=True)

    def _remove_rules(self) -> None:
        for command in ("iptables", "ip6tables"):
            for _ in range(5):  # jumps first, then the emptied chains; repeated jumps take several passes
                found = chain_rules(subprocess.run([f"{command}-save"], capture_output=True, text=True).stdout)
                if not found:
                    break
                for table, words in found:
                    if table != "chain":
                        subprocess.run([command, "-t", table, "-D", *words], capture_output=True)
                for table, words in found:
                    if table == "chain":
                        subprocess.run([command, "-t", words[0], "-F", words[1]], capture_output=True)
                        subprocess.run([command, "-t", words[0], "-X", words[1]], capture_output=True)

    def leftovers(self) -> dict[str, list[str]]:
        """What the node left on the host after ``stop``: should be all empty."""
        rules = []
        for command in ("iptables", "ip6tables"):
            save = subprocess.run([f"{command}-save"], capture_output=True, text=True).stdout
            rules += [f"{command} {table} {' '.join(words)}" for table, words in chain_rules(save)]
        running = [name for name, process in self.processes.items() if process.poll() is None]
        shims = subprocess.run(["pgrep", "-f", f"containerd-shim.*-address {self.socket}"],
                               capture_output=True, text=True).stdout.split()
        bridge = subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode == 0
        return {"processes": running + [f"shim {pid}" for pid in shims], "mounts": self._mounts(),
                "rules": rules, "links": [BRIDGE] if bridge else []}
