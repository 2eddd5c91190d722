"""Where the chaos happens, behind one interface: the local processes `lynx up` started, or a Kubernetes namespace
running the chart.

Every action blocks until the target is whole again (a killed or restarted service serves again, a stopped
backend is gone or back) and returns a ``Disruption`` saying what was done and how long each step took.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import httpx

from lynx.contracts.faults import FaultPlan
from lynx.accounting.tenants import read_tenants
from lynx.local.registry import pids_file, record, recorded_pids
from lynx.local.topology import SERVICES
from lynx.service.polling import wait_for

if TYPE_CHECKING:
    from lynx.local.processes import ServiceProcess

Backend = Literal["trace-store", "prometheus"]
READY_TIMEOUT_SECONDS = 600.0
POLL_SECONDS = 0.5
FAULTS_PATH = "/admin/faults"


class TargetError(RuntimeError):
    """The target cannot do what was asked; the message says why and what to do."""


@dataclass(frozen=True)
class Disruption:
    """One action on the target: what, when, and how long until the old instance was gone and a new one ready."""

    action: str  # "kill", "restart", "stop", "start"
    subject: str  # the service or backend
    instance: str  # "pid 1234", "pod lynx-decoder-5c9f…"
    at: float  # unix seconds when the signal or deletion was sent
    gone_after_s: float | None = None  # until the old instance had exited: for a graceful stop, its drain
    ready_after_s: float | None = None  # until a new instance was ready
    within_grace: bool = True  # a graceful stop ended by itself, not by the SIGKILL after its grace

    def describe(self) -> str:
        steps = [f"{self.action} {self.subject} ({self.instance})"]
        if self.gone_after_s is not None:
            steps.append(f"gone after {self.gone_after_s:.1f} s" + ("" if self.within_grace else " (SIGKILL at grace)"))
        if self.ready_after_s is not None:
            steps.append(f"ready after {self.ready_after_s:.1f} s")
        return ", ".join(steps)


class Target(Protocol):
    """What the scenarios do to a deployment."""

    def describe(self) -> str: ...

    def kill(self, service: str) -> Disruption:
        """SIGKILL one instance of ``service`` (no grace); returns once a new one is ready."""

    def restart(self, service: str) -> list[Disruption]:
        """Stop every instance of ``service`` gracefully (SIGTERM, its own grace) and wait for a ready replacement."""

    def stop_backend(self, backend: Backend) -> Disruption:
        """Take the trace store or Prometheus away; returns once it is gone."""

    def start_backend(self, backend: Backend) -> Disruption:
        """Bring it back; returns once it is ready."""

    def faults_enabled(self, service: str) -> bool:
        """Whether every instance of ``service`` serves PUT /admin/faults (LYNX_<SERVICE>_FAULTS_ENABLED=true)."""

    def set_faults(self, service: str, plan: FaultPlan) -> None:
        """Apply ``plan`` to every instance of ``service``."""

    def tenants(self) -> dict[str, str]:
        """The gateway's tenants: SHA-256 of a key -> tenant id (the cost counter's tenant label)."""


# -- local processes ------------------------------------------------------------------------------------------------

# The backends' processes as `lynx up` names them, and the path that answers 200 at a backend's URL (the one the
# chaos command is given) once it serves again: for the trace store, its query API reading storage. Services: /readyz.
LOCAL_BACKEND_PROCESSES: dict[Backend, str] = {"trace-store": "jaeger", "prometheus": "prometheus"}
LOCAL_READY_PATHS = {"jaeger": "/api/v3/services", "prometheus": "/-/ready"}
UNROUTABLE_HOSTS = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class Recipe:
    """How a running process was started, read back from /proc, so that it can be started again exactly so:
    the same command line, hence the same port and configuration, the same environment, the same log."""

    argv: tuple[str, ...]
    env: dict[str, str]
    log: Path

    @classmethod
    def of(cls, pid: int, default_log: Path) -> Recipe:
        proc = Path("/proc") / str(pid)
        argv = tuple(part.decode() for part in (proc / "cmdline").read_bytes().split(b"\0") if part)
        env = dict(item.decode(errors="surrogateescape").split("=", 1)
                   for item in (proc / "environ").read_bytes().split(b"\0") if b"=" in item)
        try:
            log = Path(os.readlink(proc / "fd" / "1"))
        except OSError:
            log = default_log
        return cls(argv, env, log if log.is_file() else default_log)


def service_url(name: str, env: dict[str, str]) -> str:
    """Where a lynx service started with ``env`` listens (`lynx serve NAME` reads LYNX_<NAME>_HOST and _PORT)."""
    prefix = f"LYNX_{name.upper()}_"
    host = env.get(f"{prefix}HOST", "127.0.0.1")
    return f"http://{'127.0.0.1' if host in UNROUTABLE_HOSTS else host}:{env[f'{prefix}PORT']}"


class LocalTarget:
    """The processes `lynx up` started, as recorded in ``<run dir>/pids.json`` (name -> pid, each process leading
    its own process group). A restarted process gets the command line and environment it had, and its new pid is
    written back to pids.json, so that `lynx down` stops it."""

    def __init__(self, run_dir: Path, backend_urls: dict[str, str],
                 ready_timeout: float = READY_TIMEOUT_SECONDS) -> None:
        self.run_dir = run_dir
        self.pids_file = pids_file(run_dir)
        if not self.pids_file.is_file():
            raise TargetError(f"{self.pids_file} not found: start lynx with `lynx up` first (or pass --run-dir)")
        self.pids: dict[str, int] = recorded_pids(run_dir)
        missing = [s for s in SERVICES if s not in self.pids]
        if missing:
            raise TargetError(f"{self.pids_file} names no {', '.join(missing)}: was lynx started with `lynx up`?")
        self.backend_urls = backend_urls
        self.ready_timeout = ready_timeout
        self.recipes = {name: self._recipe(name) for name in self.pids}
        self.children: dict[str, ServiceProcess] = {}  # what this target started: reaped once stopped

    def describe(self) -> str:
        return f"local processes of {self.pids_file}"

    def _recipe(self, name: str) -> Recipe:
        pid = self.pids[name]
        try:
            if os.getpgid(pid) != pid:
                raise TargetError(f"{name} (pid {pid}) does not lead its own process group, as `lynx up` starts "
                                  "every process: it cannot be stopped as a group")
            return Recipe.of(pid, self.run_dir / f"{name}.log")
        except (ProcessLookupError, FileNotFoundError):
            raise TargetError(f"{name} (pid {pid} in {self.pids_file}) is not running: start lynx again with "
                              "`lynx up`") from None

    def _url(self, name: str) -> tuple[str, str]:
        if name in LOCAL_READY_PATHS:
            backend = next(b for b, process in LOCAL_BACKEND_PROCESSES.items() if process == name)
            if backend not in self.backend_urls:
                raise TargetError(f"no URL known for the {backend} ({name})")
            return self.backend_urls[backend], LOCAL_READY_PATHS[name]
        return service_url(name, self.recipes[name].env), "/readyz"

    def _require(self, name: str) -> int:
        if name not in self.pids:
            raise TargetError(f"`lynx up` started no {name} here ({self.pids_file}): was it skipped (no binary) or "
                              "--no-observability given?")
        return self.pids[name]

    # -- the actions
    def kill(self, service: str) -> Disruption:
        from lynx.local.processes import KILL_WAIT_SECONDS, signal_group

        pid = self._require(service)
        at, started = time.time(), time.monotonic()
        signal_group(pid, signal.SIGKILL)
        gone = self._await_gone(service, pid, KILL_WAIT_SECONDS)
        ready = self._start(service)
        return Disruption("kill", service, f"pid {pid}", at, gone - started, ready - started)

    def restart(self, service: str) -> list[Disruption]:
        started = time.monotonic()
        stopped = self._stop(service, "restart")
        return [replace(stopped, ready_after_s=self._start(service) - started)]

    def stop_backend(self, backend: Backend) -> Disruption:
        return self._stop(LOCAL_BACKEND_PROCESSES[backend], "stop")

    def start_backend(self, backend: Backend) -> Disruption:
        name = LOCAL_BACKEND_PROCESSES[backend]
        at, started = time.time(), time.monotonic()
        ready = self._start(name)
        return Disruption("start", name, f"pid {self.pids[name]}", at, ready_after_s=ready - started)

    def faults_enabled(self, service: str) -> bool:
        url, _ = self._url(service)
        return httpx.get(f"{url}{FAULTS_PATH}", timeout=10).status_code == 200

    def set_faults(self, service: str, plan: FaultPlan) -> None:
        url, _ = self._url(service)
        httpx.put(f"{url}{FAULTS_PATH}", json=plan.model_dump(), timeout=10).raise_for_status()

    @property
    def tenants_file(self) -> Path:
        """The tenants file the running gateway reads."""
        from lynx.gateway.settings import GatewaySettings

        default = GatewaySettings.model_fields["tenants_file"].default
        return Path(self.recipes["gateway"].env.get("LYNX_GATEWAY_TENANTS_FILE", default))

    def tenants(self) -> dict[str, str]:
        if not self.tenants_file.is_file():
            return {}
        return {digest: t.id for digest, t in read_tenants(self.tenants_file.read_bytes()).items()}

    # -- how
    def _stop(self, name: str, action: str) -> Disruption:
        """SIGTERM, then SIGKILL after the grace `lynx down` gives it."""
        from lynx.local.stopping import stop_grace
        from lynx.local.processes import stop_groups

        pid = self._require(name)
        grace = stop_grace(name)
        at, started = time.time(), time.monotonic()
        endings = dict(stop_groups([pid], grace))
        self._reap(name)
        return Disruption(action, name, f"pid {pid}", at, time.monotonic() - started,
                          within_grace=endings.get(pid) != "killed")

    def _await_gone(self, name: str, pid: int, timeout: float) -> float:
        from lynx.local.processes import await_exit

        if not list(await_exit({pid}, timeout)):
            raise TargetError(f"{name} (pid {pid}) still running {timeout:g} s after SIGKILL")
        self._reap(name)
        return time.monotonic()

    def _reap(self, name: str) -> None:
        child = self.children.pop(name, None)
        if child is not None:
            child.process.wait()

    def _start(self, name: str) -> float:
        """Starts ``name`` as it was, records its pid, and returns (monotonic) when it is ready."""
        from lynx.local.processes import start_process, wait_ready

        recipe = self.recipes[name]
        url, ready_path = self._url(name)
        process = start_process(name, list(recipe.argv), recipe.env, recipe.log, url, ready_path, detached=True)
        self.children[name] = process
        self.pids[name] = process.process.pid
        record({name: process.process.pid}, self.run_dir)
        try:
            wait_ready([process], self.ready_timeout)
        except RuntimeError as error:
            raise TargetError(f"{name} did not come back: {error}") from None
        return time.monotonic()


# -- Kubernetes -----------------------------------------------------------------------------------------------------

NAME_LABEL, COMPONENT_LABEL, INSTANCE_LABEL = "app.kubernetes.io/name", "app.kubernetes.io/component", \
    "app.kubernetes.io/instance"
PROMETHEUS_CRD = ("monitoring.coreos.com", "v1", "prometheuses")
TENANTS_FILE = "tenants.json"  # the key of the chart's tenants Secret
PROMETHEUS_POD_LABEL = "operator.prometheus.io/name"  # what the Prometheus operator puts on the pods of a Prometheus
# The workloads of a backend, when no Prometheus resource runs it: (name label, component label) tried in order. The
# trace store is the chart's own Jaeger, else a Tempo of the user's (the opt-in subchart).
BACKEND_LABELS: dict[Backend, tuple[tuple[str, str | None], ...]] = {
    "trace-store": (("lynx", "jaeger"), ("tempo", None)), "prometheus": (("prometheus", None),)}


def pod_ready(pod) -> bool:
    if pod.metadata.deletion_timestamp is not None or pod.status is None or pod.status.phase != "Running":
        return False
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


class KubernetesTarget:
    """A namespace where the chart runs: lynx's pods are found by the chart's labels (app.kubernetes.io/name=lynx,
    app.kubernetes.io/component=<service>, and app.kubernetes.io/instance=<release> when given), the trace store as
    the chart's Jaeger (component jaeger) or a Tempo subchart (name label tempo), Prometheus by its Prometheus
    resource; everything through the Kubernetes API."""

    def __init__(self, namespace: str, kubeconfig: str | None = None, release: str | None = None,
                 ready_timeout: float = READY_TIMEOUT_SECONDS) -> None:
        from kubernetes import client, config

        try:
            api = config.new_client_from_config(config_file=kubeconfig)
        except config.ConfigException as error:
            raise TargetError(f"no usable kubeconfig ({error}): pass --kubeconfig or set KUBECONFIG") from None
        self.api = api
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.release = release
        self.ready_timeout = ready_timeout
        self.scaled: dict[str, list[tuple[str, str, int]]] = {}  # backend -> (kind, name, replicas before)

    def describe(self) -> str:
        release = f", release {self.release}" if self.release else ""
        return f"Kubernetes namespace {self.namespace}{release} ({self.api.configuration.host})"

    def _selector(self, name: str, component: str | None = None) -> str:
        labels = [f"{NAME_LABEL}={name}"]
        if component:
            labels.append(f"{COMPONENT_LABEL}={component}")
        if self.release:
            labels.append(f"{INSTANCE_LABEL}={self.release}")
        return ",".join(labels)

    def _pods(self, selector: str) -> list:
        return self.core.list_namespaced_pod(self.namespace, label_selector=selector).items

    def _service_pods(self, service: str) -> list:
        pods = [p for p in self._pods(self._selector("lynx", service)) if pod_ready(p)]
        if not pods:
            raise TargetError(f"no ready pod of the {service} in namespace {self.namespace} "
                              f"(label selector {self._selector('lynx', service)})")
        return sorted(pods, key=lambda p: p.metadata.name)

    def _pod_states(self, selector: str) -> str:
        return ", ".join(f"{p.metadata.name}={'terminating' if p.metadata.deletion_timestamp else p.status.phase}"
                         f"{' ready' if pod_ready(p) else ''}" for p in self._pods(selector)) or "no pods"

    def _replace(self, service: str, pod, grace_seconds: int | None, action: str) -> Disruption:
        """Deletes ``pod``; returns once it is gone and its ReplicaSet's replacement is ready."""
        selector = self._selector("lynx", service)
        before = len(self._service_pods(service))
        at, started = time.time(), time.monotonic()
        self.core.delete_namespaced_pod(pod.metadata.name, self.namespace, grace_period_seconds=grace_seconds)
        uid, gone, ready = pod.metadata.uid, None, None

        def settled() -> bool:
            nonlocal gone, ready
            pods = self._pods(selector)
            now = time.monotonic()
            if gone is None and all(p.metadata.uid != uid for p in pods):
                gone = now
            if ready is None and sum(1 for p in pods if p.metadata.uid != uid and pod_ready(p)) >= before:
                ready = now
            return gone is not None and ready is not None

        wait_for(settled, self.ready_timeout, f"{pod.metadata.name} replaced by a ready pod", POLL_SECONDS,
                 explain=lambda: self._pod_states(selector), error=TargetError)
        grace = pod.spec.termination_grace_period_seconds
        return Disruption(action, service, f"pod {pod.metadata.name}", at, gone - started, ready - started,
                          within_grace=grace_seconds == 0 or grace is None or gone - started <= grace + 1)

    def kill(self, service: str) -> Disruption:
        return self._replace(service, self._service_pods(service)[0], 0, "kill")

    def restart(self, service: str) -> list[Disruption]:
        return [self._replace(service, pod, None, "restart") for pod in self._service_pods(service)]

    # -- backends
    def _workloads(self, backend: Backend) -> list[tuple[str, str, int]]:
        """(kind, name, replicas) of what runs the backend: the Prometheus operator's Prometheus resources, else the
        StatefulSets and Deployments with the first of the backend's BACKEND_LABELS that any has."""
        from kubernetes.client.exceptions import ApiException

        workloads = []
        if backend == "prometheus":
            group, version, plural = PROMETHEUS_CRD
            try:
                found = self.custom.list_namespaced_custom_object(group, version, self.namespace, plural)["items"]
            except ApiException as error:
                if error.status != 404:  # 404: no Prometheus operator's resources in this cluster
                    raise
                found = []
            workloads = [("Prometheus", p["metadata"]["name"], p["spec"].get("replicas", 1)) for p in found]
        selectors = [self._selector(name, component) for name, component in BACKEND_LABELS[backend]]
        for selector in selectors:
            if workloads:
                break
            workloads = [(kind, w.metadata.name, w.spec.replicas)
                         for kind, listing in (("StatefulSet", self.apps.list_namespaced_stateful_set),
                                               ("Deployment", self.apps.list_namespaced_deployment))
                         for w in listing(self.namespace, label_selector=selector).items]
        if not workloads:
            raise TargetError(f"no {backend} found in namespace {self.namespace} (a Prometheus resource, or "
                              f"StatefulSets and Deployments labelled {' or '.join(selectors)})")
        return workloads

    def _backend_pods(self, kind: str, name: str) -> list:
        if kind == "Prometheus":
            return self._pods(f"{PROMETHEUS_POD_LABEL}={name}")
        read = self.apps.read_namespaced_stateful_set if kind == "StatefulSet" else self.apps.read_namespaced_deployment
        labels = read(name, self.namespace).spec.selector.match_labels
        return self._pods(",".join(f"{k}={v}" for k, v in labels.items()))

    def _scale(self, kind: str, name: str, replicas: int) -> None:
        if kind == "Prometheus":
            group, version, plural = PROMETHEUS_CRD
            self.custom.patch_namespaced_custom_object(group, version, self.namespace, plural, name,
                                                       {"spec": {"replicas": replicas}})
        elif kind == "StatefulSet":
            self.apps.patch_namespaced_stateful_set_scale(name, self.namespace, {"spec": {"replicas": replicas}})
        else:
            self.apps.patch_namespaced_deployment_scale(name, self.namespace, {"spec": {"replicas": replicas}})

    def stop_backend(self, backend: Backend) -> Disruption:
        workloads = self._workloads(backend)
        at, started = time.time(), time.monotonic()
        for kind, name, _ in workloads:
            self._scale(kind, name, 0)
        self.scaled[backend] = workloads
        wait_for(lambda: not any(self._backend_pods(k, n) for k, n, _ in workloads), self.ready_timeout,
                 f"every {backend} pod gone", POLL_SECONDS, error=TargetError)
        names = ", ".join(f"{k.lower()} {n}" for k, n, _ in workloads)
        return Disruption("stop", backend, f"{names} scaled to 0", at, gone_after_s=time.monotonic() - started)

    def start_backend(self, backend: Backend) -> Disruption:
        workloads = self.scaled.pop(backend, None) or self._workloads(backend)
        at, started = time.time(), time.monotonic()
        for kind, name, replicas in workloads:
            self._scale(kind, name, max(replicas, 1))

        def all_ready() -> bool:
            return all(sum(1 for p in self._backend_pods(k, n) if pod_ready(p)) >= max(r, 1) for k, n, r in workloads)

        wait_for(all_ready, self.ready_timeout, f"{backend} ready again", POLL_SECONDS, error=TargetError)
        names = ", ".join(f"{k.lower()} {n}" for k, n, _ in workloads)
        return Disruption("start", backend, f"{names} scaled back", at, ready_after_s=time.monotonic() - started)

    def tenants(self) -> dict[str, str]:
        """From the Secret the gateway pods mount as their tenants file."""
        import base64

        pod = self._service_pods("gateway")[0]
        volume = next((v for v in pod.spec.volumes or [] if v.name == "tenants" and v.secret), None)
        if volume is None:
            raise TargetError(f"gateway pod {pod.metadata.name} mounts no tenants Secret")
        data = self.core.read_namespaced_secret(volume.secret.secret_name, self.namespace).data or {}
        if TENANTS_FILE not in data:
            raise TargetError(f"Secret {volume.secret.secret_name} has no {TENANTS_FILE}")
        return {digest: t.id for digest, t in read_tenants(base64.b64decode(data[TENANTS_FILE])).items()}

    # -- faults, through the API server's proxy to each pod
    def _proxy(self, pod, method: str, body: dict | None = None):
        port = pod.spec.containers[0].ports[0].container_port
        path = f"/api/v1/namespaces/{self.namespace}/pods/{pod.metadata.name}:{port}/proxy{FAULTS_PATH}"
        method, url, headers, payload, _ = self.api.param_serialize(
            method=method, resource_path=path, body=body, auth_settings=["BearerToken"],
            header_params={"Accept": "application/json", **({"Content-Type": "application/json"} if body else {})})
        response = self.api.call_api(method, url, headers, payload, _request_timeout=30)
        response.read()
        return response

    def faults_enabled(self, service: str) -> bool:
        statuses = {}
        for pod in self._service_pods(service):
            response = self._proxy(pod, "GET")
            statuses[pod.metadata.name] = response.status
            if response.status not in (200, 404):  # 404: the route does not exist, fault injection is off
                raise TargetError(f"GET {FAULTS_PATH} of pod {pod.metadata.name} through the API server's proxy "
                                  f"answered {response.status}: {response.data[:300]!r}")
        return all(status == 200 for status in statuses.values())

    def set_faults(self, service: str, plan: FaultPlan) -> None:
        for pod in self._service_pods(service):
            response = self._proxy(pod, "PUT", plan.model_dump())
            if response.status != 200:
                raise TargetError(f"PUT {FAULTS_PATH} on pod {pod.metadata.name} answered {response.status}: "
                                  f"{response.data[:300]!r}")
