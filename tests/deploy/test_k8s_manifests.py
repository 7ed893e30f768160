"""Offline checks of deploy/: the Kubernetes manifests, the Prometheus alerts and the SLO table.

No kubectl or kustomize binary is needed: a small renderer below implements the
subset of kustomize the overlays use (resources, patches by path, images,
replicas, labels, namespace) and refuses any other kustomization field, so what
is checked here is what `kubectl apply -k` would apply. Every rendered document
is validated strictly against the Kubernetes JSON schemas that
kubernetes-validate ships.
"""

from __future__ import annotations

import ast
import copy
import importlib
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML (a dependency of kubernetes-validate) is not installed")
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed"
)

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
BASE = K8S / "base"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yaml"
DOCS = REPO / "docs"
RUNBOOK = DOCS / "runbook.md"
SLO = DOCS / "slo.md"

TARGETS = {"base": BASE, "dev": K8S / "overlays" / "dev", "prod": K8S / "overlays" / "prod"}
# The oldest cluster we support (native gRPC probes and CronJob timeZone are GA
# since 1.27) and the newest schema kubernetes-validate ships.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())

SERVED_PROCESSES = {"ingest", "compactor", "query", "gateway", "worker"}
HPA_TARGETS = {"canal-query", "canal-gateway"}
SECRET_NAME = "canal-secrets"

SUPPORTED_KUSTOMIZATION_FIELDS = {
    "apiVersion",
    "kind",
    "namespace",
    "resources",
    "patches",
    "images",
    "replicas",
    "labels",
}
POD_OWNERS = {"Deployment", "Job", "CronJob"}
CLUSTER_SCOPED = {"Namespace"}


# --------------------------------------------------------------------------- what each process serves
#
# Read from the code, not listed here: `canal serve <process>` (tools/cli/main.py) names the module
# whose `serve` runs the process; in it, `create_server(settings.X_addr, ...)` binds gRPC,
# `settings.metrics_port(N)` an HTTP metrics (and, for the worker, probe) server, and
# `uvicorn.Config(..., port=settings.port)` the gateway's HTTP app. The ports then follow from the
# settings the pod gets (ConfigMap + container env), so a manifest, a setting and the code cannot drift.

CLI = REPO / "tools" / "cli" / "main.py"


@dataclass(frozen=True)
class Endpoints:
    """Where and what a process serves, as read from its `serve` function (ports are settings)."""

    grpc_addr_settings: tuple[str, ...] = ()  # e.g. ("query_addr",)
    metrics_offsets: tuple[int, ...] = ()  # Settings.metrics_port(offset)
    metrics_paths: frozenset[str] = frozenset({"/metrics"})  # what that HTTP server answers
    http_port_settings: tuple[str, ...] = ()  # e.g. ("port",) for uvicorn
    http_paths: frozenset[str] = field(default_factory=frozenset)


@cache
def serve_modules() -> dict[str, str]:
    """`canal serve <process>` -> the module whose `serve` it runs, from tools/cli/main.py."""
    tree = ast.parse(CLI.read_text())
    (dispatch,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "_serve_until_stopped"]
    modules = {}
    for node in ast.walk(dispatch):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
            (name,) = [c.value for c in node.test.comparators if isinstance(c, ast.Constant)]
            (imported,) = [n for n in node.body if isinstance(n, ast.ImportFrom)]
            assert [a.name for a in imported.names] == ["serve"] or imported.module.startswith("tools."), name
            modules[name] = imported.module
    return modules


def _constant(module_tree: ast.Module, node: ast.expr):
    """A literal, or a module-level NAME = literal."""
    if isinstance(node, ast.Constant):
        return node.value
    assert isinstance(node, ast.Name), ast.unparse(node)
    for stmt in module_tree.body:
        if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == node.id for t in stmt.targets):
            return ast.literal_eval(stmt.value)
    raise AssertionError(f"{node.id} is not a module-level constant")


def _settings_attr(node: ast.expr) -> str | None:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "settings":
        return node.attr
    return None


def _route_paths(package: str) -> frozenset[str]:
    """Every path the routers of a FastAPI routes package answer (for the gateway's probes)."""
    module = importlib.import_module(package)
    paths = set()
    for file in sorted(Path(module.__file__).parent.glob("*.py")):
        router = getattr(importlib.import_module(f"{package}.{file.stem}"), "router", None)
        paths |= {route.path for route in getattr(router, "routes", [])}
    return frozenset(paths)


@cache
def endpoints(process: str) -> Endpoints:
    """What `canal serve <process>` serves, from the `serve` function of its module."""
    module = serve_modules()[process]
    tree = ast.parse((REPO / Path(*module.split("."))).with_suffix(".py").read_text())
    (serve,) = [n for n in tree.body if isinstance(n, ast.AsyncFunctionDef | ast.FunctionDef) and n.name == "serve"]
    grpc_addrs, offsets, http_ports = [], [], []
    for call in (n for n in ast.walk(serve) if isinstance(n, ast.Call)):
        func = ast.unparse(call.func)
        if func.endswith("create_server") and call.args and _settings_attr(call.args[0]):
            grpc_addrs.append(_settings_attr(call.args[0]))
        if func == "settings.metrics_port":
            offsets.append(_constant(tree, call.args[0]))
        if func.endswith("uvicorn.Config"):
            http_ports += [_settings_attr(k.value) for k in call.keywords if k.arg == "port"]
    probe_paths = [s for s in tree.body if isinstance(s, ast.Assign) and ast.unparse(s.targets[0]) == "PROBE_PATHS"]
    metrics_paths = frozenset(ast.literal_eval(probe_paths[0].value)) if probe_paths else frozenset({"/metrics"})
    http_paths = _route_paths(module.rsplit(".", 1)[0] + ".routes") if http_ports else frozenset()
    return Endpoints(tuple(dict.fromkeys(grpc_addrs)), tuple(dict.fromkeys(offsets)), metrics_paths,
                     tuple(http_ports), http_paths)


def pod_settings(env: dict[str, str]):
    """libs.config.Settings from exactly this environment (nothing from the test runner's)."""
    from libs.config import Settings

    class PodSettings(Settings):
        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, **_other_sources):
            return (init_settings,)

    fields = set(Settings.model_fields)
    return PodSettings(**{k.lower(): v for k, v in env.items() if k.lower() in fields})


@dataclass(frozen=True)
class Served:
    """The ports one process listens on, given its settings."""

    grpc: frozenset[int]
    http: dict[int, frozenset[str]]  # port -> the paths answered there

    @property
    def ports(self) -> frozenset[int]:
        return self.grpc | frozenset(self.http)


def served(process: str, settings) -> Served:
    ep = endpoints(process)
    grpc_ports = frozenset(int(getattr(settings, a).rsplit(":", 1)[1]) for a in ep.grpc_addr_settings)
    http: dict[int, frozenset[str]] = {}
    for offset in ep.metrics_offsets:
        if settings.metrics_port(offset):
            http[settings.metrics_port(offset)] = ep.metrics_paths
    for attr in ep.http_port_settings:
        http[int(getattr(settings, attr))] = ep.http_paths
    return Served(grpc_ports, http)


def container_env(docs, container: dict) -> dict[str, str]:
    """The plain environment a container gets: its ConfigMaps, then its own values (secrets left out)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(find_one(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


# With default settings: the ports the other checks below refer to.
_DEFAULTS = {p: served(p, pod_settings({})) for p in ("ingest", "compactor", "query", "worker", "gateway")}
GRPC_PORTS = {p: min(s.grpc) for p, s in _DEFAULTS.items() if s.grpc}
METRICS_PORTS = {p: min(s.http) for p, s in _DEFAULTS.items() if s.http and p != "gateway"}
GATEWAY_PORT = min(_DEFAULTS["gateway"].http)


# --------------------------------------------------------------------------- rendering


def load_docs(path: Path) -> list[dict]:
    """Every non-empty YAML document of a file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def strategic_merge(base, patch):
    """The strategic-merge-patch subset the overlays need: maps merge, null deletes,
    lists of named objects (containers, env, volumes) merge by name, other lists replace."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = strategic_merge(merged[key], value)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list) and _named_list(base) and _named_list(patch):
        merged = [copy.deepcopy(item) for item in base]
        index = {item["name"]: i for i, item in enumerate(merged)}
        for item in patch:
            if item["name"] in index:
                merged[index[item["name"]]] = strategic_merge(merged[index[item["name"]]], item)
            else:
                merged.append(copy.deepcopy(item))
        return merged
    return copy.deepcopy(patch)


def _named_list(items: list) -> bool:
    return bool(items) and all(isinstance(i, dict) and "name" in i for i in items)


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """`name[:tag][@digest]` -> (name, tag, digest); a registry port is not a tag."""
    image, _, digest = image.partition("@")
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1 :], digest or None
    return image, None, digest or None


def all_containers(doc: dict) -> list[dict]:
    """Containers and init containers of a workload's pod template."""
    spec = pod_spec(doc)
    if spec is None:
        return []
    return list(spec.get("containers", [])) + list(spec.get("initContainers", []))


def pod_spec(doc: dict) -> dict | None:
    """The pod spec of a Deployment, Job or CronJob (None for anything else)."""
    if doc["kind"] in ("Deployment", "Job"):
        return doc["spec"]["template"]["spec"]
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def find_one(docs: list[dict], kind: str, name: str) -> dict:
    """The one document of that kind and name, or an assertion error."""
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind}/{name}, found {len(found)}"
    return found[0]


def render(directory: Path) -> list[dict]:
    """Build a kustomization directory the way `kustomize build` would (for the fields we allow)."""
    kustomization = load_docs(directory / "kustomization.yaml")[0]
    unknown = set(kustomization) - SUPPORTED_KUSTOMIZATION_FIELDS
    assert not unknown, f"{directory}: the test renderer does not implement {sorted(unknown)}"

    docs: list[dict] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        docs += render(path) if path.is_dir() else load_docs(path)

    for patch in kustomization.get("patches", []):
        assert set(patch) == {"path"}, f"{directory}: only `path:` strategic merge patches are supported"
        patch_docs = load_docs(directory / patch["path"])
        assert len(patch_docs) == 1, f"{patch['path']}: kustomize `patches` takes one patch per file"
        target = find_one(docs, patch_docs[0]["kind"], patch_docs[0]["metadata"]["name"])
        docs[docs.index(target)] = strategic_merge(target, patch_docs[0])

    for entry in kustomization.get("labels", []):
        assert not entry.get("includeSelectors", False), "selectors must not change under an overlay"
        for doc in docs:
            doc["metadata"].setdefault("labels", {}).update(entry["pairs"])

    for entry in kustomization.get("images", []):
        for doc in docs:
            for container in all_containers(doc):
                name, tag, digest = split_image(container["image"])
                if name != entry["name"]:
                    continue
                name = entry.get("newName", name)
                tag = str(entry["newTag"]) if "newTag" in entry else tag
                digest = entry.get("digest", digest)
                container["image"] = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")

    for entry in kustomization.get("replicas", []):
        find_one(docs, "Deployment", entry["name"])["spec"]["replicas"] = entry["count"]

    if "namespace" in kustomization:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = kustomization["namespace"]
    return docs


@cache
def rendered(target: str) -> tuple[dict, ...]:
    """The rendered documents of base, dev or prod (cached; tests must not mutate them)."""
    return tuple(render(TARGETS[target]))


def of_kind(docs, kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def process_of(container: dict) -> str | None:
    """`serve ingest` -> "ingest"; None for one-shot commands (migrate, drift)."""
    args = container.get("args", [])
    return args[1] if len(args) >= 2 and args[0] == "serve" else None


def port_number(container: dict, port) -> int:
    """A probe/service port (number or container port name) as a number."""
    if isinstance(port, int):
        return port
    numbers = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    assert port in numbers, f"container {container['name']} has no port named {port!r}"
    return numbers[port]


QUANTITY = re.compile(r"^([0-9.]+)(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")
FACTORS = {
    None: 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def quantity(value) -> float:
    """A Kubernetes resource quantity as a float (cores or bytes)."""
    match = QUANTITY.match(str(value))
    assert match, f"unparseable quantity {value!r}"
    return float(match.group(1)) * FACTORS[match.group(2)]


# --------------------------------------------------------------------------- manifests

targets = pytest.mark.parametrize("target", sorted(TARGETS))


def test_every_kustomization_renders_with_supported_fields():
    for kustomization in K8S.rglob("kustomization.yaml"):
        render(kustomization.parent)


@targets
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_document_validates_strictly(target, version):
    for doc in rendered(target):
        try:
            kubernetes_validate.validate(copy.deepcopy(doc), version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = "/".join(str(p) for p in error.path)
            pytest.fail(f"{target}: {doc['kind']}/{doc['metadata']['name']} at {path}: {error.message}")


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_secret_template_validates_strictly(version):
    for doc in load_docs(BASE / "secret.template.yaml"):
        kubernetes_validate.validate(doc, version, strict=True)


@targets
def test_names_are_unique(target):
    keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in rendered(target)]
    assert len(keys) == len(set(keys))


@targets
def test_every_served_process_has_a_deployment(target):
    served = {process_of(c) for d in of_kind(rendered(target), "Deployment") for c in all_containers(d)}
    assert served == SERVED_PROCESSES


@targets
def test_workloads_are_hardened_and_sized(target):
    for doc in rendered(target):
        spec = pod_spec(doc)
        if spec is None:
            continue
        where = f"{target}: {doc['kind']}/{doc['metadata']['name']}"
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, where
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert spec.get("automountServiceAccountToken") is False, where
        for c in all_containers(doc):
            sc = c.get("securityContext", {})
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not sc.get("capabilities", {}).get("add"), where
            assert sc.get("privileged", False) is False, where
            seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
            assert seccomp.get("type") == "RuntimeDefault", where
            resources = c.get("resources", {})
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(bound, {})), f"{where}: {bound}"
            for res in ("cpu", "memory"):
                assert quantity(resources["requests"][res]) <= quantity(resources["limits"][res]), where
            # Small nodes: no single container may ask for more than one core or 1 GiB.
            assert quantity(resources["requests"]["cpu"]) <= 1, where
            assert quantity(resources["requests"]["memory"]) <= 2**30, where
            # A read-only root needs a writable /tmp.
            assert "/tmp" in {m["mountPath"] for m in c.get("volumeMounts", [])}, where
            assert c.get("command") == ["canal"], where


@targets
def test_every_deployment_has_probes(target):
    for doc in of_kind(rendered(target), "Deployment"):
        for c in all_containers(doc):
            for probe in ("livenessProbe", "readinessProbe"):
                assert probe in c, f"{target}: {doc['metadata']['name']}/{c['name']} lacks {probe}"


@targets
def test_grpc_services_use_native_grpc_probes_on_their_port(target):
    for doc in of_kind(rendered(target), "Deployment"):
        for c in all_containers(doc):
            process = process_of(c)
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            if process in GRPC_PORTS:
                assert ports.get("grpc") == GRPC_PORTS[process], c["name"]
            if "grpc" not in ports:
                continue
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe in c or probe != "startupProbe":
                    assert "grpc" in c[probe], f"{c['name']}: {probe} must be a native grpc probe"
                    assert c[probe]["grpc"]["port"] == ports["grpc"], f"{c['name']}: {probe} port"


@targets
def test_every_probe_hits_a_port_and_path_its_process_serves(target):
    docs = rendered(target)
    checked = 0
    for doc in of_kind(docs, "Deployment"):
        for c in all_containers(doc):
            where = f"{target}: {doc['metadata']['name']}/{c['name']}"
            process = process_of(c)
            assert process in serve_modules(), f"{where}: `canal serve {process}` is not a process"
            serves = served(process, pod_settings(container_env(docs, c)))
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = c.get(kind)
                if probe is None:
                    continue
                checked += 1
                if "grpc" in probe:
                    port = probe["grpc"]["port"]
                    assert port in serves.grpc, f"{where}: {kind} dials gRPC :{port}; serves {sorted(serves.grpc)}"
                elif "httpGet" in probe:
                    port, path = port_number(c, probe["httpGet"]["port"]), probe["httpGet"]["path"]
                    assert port in serves.http, f"{where}: {kind} GETs :{port}; serves HTTP on {sorted(serves.http)}"
                    assert path in serves.http[port], f"{where}: {kind} GETs {path}; :{port} answers {sorted(serves.http[port])}"
                elif "tcpSocket" in probe:
                    assert port_number(c, probe["tcpSocket"]["port"]) in serves.ports, f"{where}: {kind}"
                else:
                    pytest.fail(f"{where}: {kind} is an exec probe, which nothing here can check")
    assert checked >= 2 * len(SERVED_PROCESSES)


@targets
def test_declared_ports_scrape_annotations_and_services_target_served_ports(target):
    docs = rendered(target)
    deployments = of_kind(docs, "Deployment")
    serving: dict[str, tuple[dict, Served]] = {}
    for doc in deployments:
        (c,) = doc["spec"]["template"]["spec"]["containers"]
        serves = served(process_of(c), pod_settings(container_env(docs, c)))
        serving[doc["metadata"]["name"]] = (c, serves)
        where = f"{target}: {doc['metadata']['name']}"
        for port in c.get("ports", []):
            assert port["containerPort"] in serves.ports, f"{where} declares :{port['containerPort']} it never serves"
        annotations = doc["spec"]["template"]["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") == "true":
            port = int(annotations["prometheus.io/port"])
            assert port in serves.http, f"{where}: Prometheus would scrape :{port}"
            assert annotations["prometheus.io/path"] in serves.http[port], where
    for svc in of_kind(docs, "Service"):
        selector = svc["spec"]["selector"]
        (doc,) = [d for d in deployments if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        c, serves = serving[doc["metadata"]["name"]]
        for port in svc["spec"]["ports"]:
            assert port_number(c, port["targetPort"]) in serves.ports, f"{svc['metadata']['name']}: {port}"


def test_served_ports_are_read_from_the_code():
    # The derivation itself: a broken reader would make the probe checks vacuous.
    assert set(serve_modules()) >= SERVED_PROCESSES
    assert GRPC_PORTS == {"ingest": 50051, "compactor": 50052, "query": 50053}
    assert METRICS_PORTS == {"ingest": 9101, "compactor": 9102, "query": 9103, "worker": 9104}
    assert {"/healthz", "/readyz", "/metrics"} <= endpoints("worker").metrics_paths
    assert {"/healthz", "/readyz"} <= endpoints("gateway").http_paths
    moved = served("worker", pod_settings({"METRICS_PORT_BASE": "9200"}))
    assert set(moved.http) == {9204}
    assert served("worker", pod_settings({"METRICS_PORT_BASE": "0"})).ports == frozenset()


@targets
def test_query_clients_balance_every_call_across_query_pods(target):
    docs = rendered(target)
    host, port = find_one(docs, "ConfigMap", "canal-config")["data"]["QUERY_ADDR"].rsplit(":", 1)
    service = find_one(docs, "Service", host)
    # Headless: DNS answers every ready query pod, not one virtual IP that pins a connection to a pod.
    assert service["spec"].get("clusterIP") == "None", f"{host} must be headless"
    query = find_one(docs, "Deployment", "canal-query")
    assert service["spec"]["selector"].items() <= query["spec"]["template"]["metadata"]["labels"].items()
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    assert find_one(docs, "HorizontalPodAutoscaler", "canal-query")["spec"]["maxReplicas"] > 1


def test_every_query_channel_in_the_services_is_balanced():
    # What dials QUERY_ADDR in a service goes through libs.rpc.balanced_channel (round_robin);
    # the query server's own create_server binds it.
    dialers = []
    for path in sorted((REPO / "services").rglob("*.py")):
        for call in (n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)):
            if call.args and ast.unparse(call.args[0]) == "settings.query_addr":
                dialers.append((path.relative_to(REPO).as_posix(), ast.unparse(call.func)))
    clients = {(p, f) for p, f in dialers if not f.endswith("create_server")}
    assert {p for p, _ in clients} >= {"services/gateway/app.py", "services/query/worker.py"}
    assert {f for _, f in clients} == {"balanced_channel"}, clients


@targets
def test_grpc_servers_bind_every_interface(target):
    # A server binds its own *_ADDR (services/query/server.py); the ConfigMap's
    # value is a Service name other pods dial, which no pod can bind.
    for doc in of_kind(rendered(target), "Deployment"):
        for c in all_containers(doc):
            process = process_of(c)
            if process in GRPC_PORTS:
                env = {e["name"]: e.get("value") for e in c["env"]}
                assert env[f"{process.upper()}_ADDR"] == f"0.0.0.0:{GRPC_PORTS[process]}", c["name"]


@targets
def test_ports_and_http_probes_of_the_other_processes(target):
    for doc in of_kind(rendered(target), "Deployment"):
        for c in all_containers(doc):
            process = process_of(c)
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            if process in METRICS_PORTS:
                assert ports.get("metrics") == METRICS_PORTS[process], c["name"]
            if process == "gateway":
                assert ports.get("http") == GATEWAY_PORT
                assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
                assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
                assert port_number(c, c["readinessProbe"]["httpGet"]["port"]) == GATEWAY_PORT
                assert {"name": "PORT", "value": str(GATEWAY_PORT)} in c["env"]
            if process == "worker":
                assert "grpc" not in ports
                assert port_number(c, c["livenessProbe"]["httpGet"]["port"]) == METRICS_PORTS["worker"]


@targets
def test_services_select_pods_and_named_ports(target):
    docs = rendered(target)
    deployments = of_kind(docs, "Deployment")
    for svc in of_kind(docs, "Service"):
        selector = svc["spec"]["selector"]
        pods = [
            d for d in deployments if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(pods) == 1, f"Service {svc['metadata']['name']} selects {len(pods)} Deployments"
        container = all_containers(pods[0])[0]
        for port in svc["spec"]["ports"]:
            assert port_number(container, port["targetPort"])
    for dep in deployments:
        selector = dep["spec"]["selector"]["matchLabels"]
        assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()


@targets
def test_hpas_target_existing_deployments(target):
    docs = rendered(target)
    hpas = of_kind(docs, "HorizontalPodAutoscaler")
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas} == HPA_TARGETS
    for hpa in hpas:
        ref = hpa["spec"]["scaleTargetRef"]
        assert (ref["apiVersion"], ref["kind"]) == ("apps/v1", "Deployment")
        deployment = find_one(docs, "Deployment", ref["name"])
        # The HPA owns the replica count; a fixed one would be reset on every apply.
        assert "replicas" not in deployment["spec"], ref["name"]
        assert 1 <= hpa["spec"].get("minReplicas", 1) <= hpa["spec"]["maxReplicas"]
        for metric in hpa["spec"]["metrics"]:
            name = metric["resource"]["name"]
            for c in all_containers(deployment):
                assert name in c["resources"]["requests"], (
                    f"{ref['name']}: utilization needs a {name} request"
                )


@targets
def test_pod_disruption_budgets_select_existing_pods(target):
    docs = rendered(target)
    for pdb in of_kind(docs, "PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert any(
            selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
            for d in of_kind(docs, "Deployment")
        ), pdb["metadata"]["name"]


@targets
def test_env_comes_from_the_configmap_and_the_secret_template(target):
    docs = rendered(target)
    configmaps = {d["metadata"]["name"] for d in of_kind(docs, "ConfigMap")}
    template = load_docs(BASE / "secret.template.yaml")[0]
    assert template["metadata"]["name"] == SECRET_NAME
    secret_keys = set(template["stringData"])
    assert secret_keys == {"DATABASE_URL", "REDIS_URL", "CANAL_SECRET"}
    assert not of_kind(docs, "Secret"), "real secrets are never part of the rendered manifests"
    for doc in docs:
        for c in all_containers(doc):
            for source in c.get("envFrom", []):
                assert source["configMapRef"]["name"] in configmaps
            env = {e["name"]: e for e in c.get("env", [])}
            assert "DATABASE_URL" in env, c["name"]
            for entry in env.values():
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == SECRET_NAME and ref["key"] in secret_keys
                    assert ref["key"] == entry["name"]
            if process_of(c) in SERVED_PROCESSES:
                assert secret_keys <= set(env), f"{c['name']} needs every secret key"
                assert env["OTEL_SERVICE_NAME"]["value"] == f"canal-{process_of(c)}"


@targets
def test_configmap_holds_only_non_secret_settings_and_dials_real_services(target):
    docs = rendered(target)
    data = find_one(docs, "ConfigMap", "canal-config")["data"]
    assert not {"DATABASE_URL", "REDIS_URL", "CANAL_SECRET"} & set(data)
    for key in (
        "RETAIN_FACTS_DAYS",
        "RETAIN_MINUTE_DAYS",
        "RETAIN_HOUR_DAYS",
        "SYNC_COST_LIMIT",
        "RELAYS",
        "TRACK",
        "LOG_LEVEL",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ):
        assert key in data, key
    assert (data["RETAIN_FACTS_DAYS"], data["RETAIN_MINUTE_DAYS"], data["RETAIN_HOUR_DAYS"]) == (
        "30",
        "7",
        "400",
    )
    assert all(isinstance(v, str) for v in data.values()), "ConfigMap values must be strings"
    for key, process in (("INGEST_ADDR", "ingest"), ("COMPACTOR_ADDR", "compactor"), ("QUERY_ADDR", "query")):
        host, port = data[key].rsplit(":", 1)
        service = find_one(docs, "Service", host)
        assert int(port) == GRPC_PORTS[process]
        assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    for relay in filter(None, data["RELAYS"].split(",")):
        assert relay.startswith("wss://"), relay


@targets
def test_migration_job_and_drift_cronjob(target):
    docs = rendered(target)
    (job,) = of_kind(docs, "Job")
    assert all_containers(job)[0]["args"] == ["migrate"]
    (cron,) = of_kind(docs, "CronJob")
    assert all_containers(cron)[0]["args"] == ["drift", "--out", "/tmp/drift"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    # A drift must fail the run, not be retried until a sample happens to pass.
    assert cron["spec"]["jobTemplate"]["spec"]["backoffLimit"] == 0
    assert cron["metadata"]["name"] == "canal-drift"  # alerts.yaml matches job_name=~"canal-drift-.*"


def test_overlays_set_namespace_image_and_sizes():
    base = {(d["kind"], d["metadata"]["name"]) for d in rendered("base")}
    for target, namespace in (("dev", "canal-dev"), ("prod", "canal")):
        docs = rendered(target)
        assert base <= {(d["kind"], d["metadata"]["name"]) for d in docs}
        (ns,) = of_kind(docs, "Namespace")
        assert ns["metadata"]["name"] == namespace
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {namespace}
        images = {c["image"] for d in docs for c in all_containers(d)}
        assert len(images) == 1, "one image for every process"
        assert split_image(images.pop())[1] not in (None, "latest"), f"{target} must pin an image tag"
    prod = rendered("prod")
    assert find_one(prod, "HorizontalPodAutoscaler", "canal-query")["spec"]["minReplicas"] >= 2
    assert find_one(prod, "Deployment", "canal-worker")["spec"]["replicas"] >= 2
    base_query = all_containers(find_one(rendered("base"), "Deployment", "canal-query"))[0]
    prod_query = all_containers(find_one(prod, "Deployment", "canal-query"))[0]
    assert quantity(prod_query["resources"]["requests"]["cpu"]) > quantity(
        base_query["resources"]["requests"]["cpu"]
    )
    # The merge kept everything the patch did not mention.
    assert prod_query["securityContext"] == base_query["securityContext"]
    assert prod_query["livenessProbe"] == base_query["livenessProbe"]


def test_renderer_merges_like_kustomize():
    base = {
        "spec": {
            "containers": [
                {"name": "a", "image": "x", "env": [{"name": "K", "value": "1"}]},
                {"name": "b", "image": "y"},
            ]
        }
    }
    patch = {"spec": {"containers": [{"name": "a", "env": [{"name": "L", "value": "2"}]}]}}
    merged = strategic_merge(base, patch)
    assert merged["spec"]["containers"][0]["env"] == [
        {"name": "K", "value": "1"},
        {"name": "L", "value": "2"},
    ]
    assert merged["spec"]["containers"][1] == {"name": "b", "image": "y"}
    assert split_image("registry.example.com:5000/canal/canal:0.1.0") == (
        "registry.example.com:5000/canal/canal",
        "0.1.0",
        None,
    )
    assert split_image("canal") == ("canal", None, None)


# --------------------------------------------------------------------------- alerts and docs


def markdown_anchors(path: Path) -> set[str]:
    """GitHub-style heading anchors of a markdown file (headings inside code fences ignored)."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_fence = False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if in_fence or not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


@cache
def alert_rules() -> tuple[dict, ...]:
    document = yaml.safe_load(ALERTS.read_text())
    assert document["groups"], "no rule groups"
    rules = []
    for group in document["groups"]:
        assert group["name"] and group["rules"], group.get("name")
        rules += group["rules"]
    return tuple(rules)


KNOWN_METRICS = {
    "canal_ingest_events_total",
    "canal_relay_lag_seconds",
    "canal_compaction_runs_total",
    "canal_compaction_duration_seconds_bucket",
    "canal_watermark_lag_seconds",
    "canal_http_requests_total",
    "canal_http_request_duration_seconds_bucket",
    "canal_drift_max_abs_delta",
    "canal_drift_runs_total",
}


def test_alert_rules_have_expr_severity_summary_and_runbook():
    anchors = markdown_anchors(RUNBOOK)
    names = []
    for rule in alert_rules():
        assert "record" not in rule, "recording rules would need their own checks"
        names.append(rule["alert"])
        assert isinstance(rule.get("expr"), str) and rule["expr"].strip(), rule["alert"]
        assert rule.get("labels", {}).get("severity") in {"critical", "warning"}, rule["alert"]
        annotations = rule.get("annotations", {})
        assert annotations.get("summary"), rule["alert"]
        runbook = annotations.get("runbook_url", "")
        assert runbook.startswith("docs/runbook.md#"), rule["alert"]
        assert runbook.split("#", 1)[1] in anchors, f"{rule['alert']}: no heading for {runbook}"
        if "for" in rule:
            assert re.fullmatch(r"(\d+[smhd])+", rule["for"]), rule["alert"]
    assert len(names) == len(set(names)), "duplicate alert names"


def test_alert_exprs_are_balanced_and_use_known_metrics():
    for rule in alert_rules():
        expr = rule["expr"]
        stack = []
        for char in re.sub(r'"[^"]*"', '""', expr):
            if char in "([{":
                stack.append(char)
            elif char in ")]}":
                assert stack and "([{"[")]}".index(char)] == stack.pop(), rule["alert"]
        assert not stack and expr.count('"') % 2 == 0, rule["alert"]
        for metric in re.findall(r"\bcanal_[a-z_]+\b", re.sub(r'"[^"]*"', '""', expr)):
            assert metric in KNOWN_METRICS, f"{rule['alert']}: unknown metric {metric}"


def test_alerts_cover_every_required_signal():
    exprs = "\n".join(rule["expr"] for rule in alert_rules())
    for needle in (
        "canal_drift_max_abs_delta",  # drift found
        'kube_job_status_failed{job_name=~"canal-drift-.*"}',  # drift CronJob failing
        'canal_compaction_runs_total{outcome="error"}',
        "canal_watermark_lag_seconds",
        "canal_relay_lag_seconds",
        'canal_http_requests_total{status=~"5.."}',
        "canal_http_request_duration_seconds_bucket",
    ):
        assert needle in exprs, needle


def slo_routes() -> dict[str, dict[str, float]]:
    """The machine-readable table of docs/slo.md: route -> {p95_ms, p99_ms, max_error_rate}."""
    lines = SLO.read_text().splitlines()
    header = "| route | p95_ms | p99_ms | max_error_rate |"
    assert header in lines, "slo.md lost its table header"
    rows: dict[str, dict[str, float]] = {}
    for line in lines[lines.index(header) + 2 :]:
        if not line.startswith("|"):
            break
        route, p95, p99, errors = (cell.strip() for cell in line.strip("|").split("|"))
        rows[route] = {"p95_ms": float(p95), "p99_ms": float(p99), "max_error_rate": float(errors)}
    return rows


def test_slo_table_is_machine_parseable():
    rows = slo_routes()
    assert {"/api/v2/analytics/summary", "/api/v2/analytics/drilldown", "/api/v1/analytics/summary"} <= set(
        rows
    )
    assert rows["/api/v2/analytics/summary"]["p95_ms"] == 25
    assert rows["/api/v2/analytics/summary [cached]"]["p95_ms"] == 10
    for route, row in rows.items():
        assert 0 < row["p95_ms"] <= row["p99_ms"], route
        assert 0 <= row["max_error_rate"] <= 100, route
    text = SLO.read_text()
    assert re.search(r"^\| freshness_p95 \| 1 \| s \|", text, re.M)
    assert re.search(r"^\| availability \| 99\.9 \| percent \|", text, re.M)


def test_latency_alerts_fire_at_the_slo_p95():
    by_route = {r["labels"].get("route"): r for r in alert_rules() if "route" in r.get("labels", {})}
    for route, row in slo_routes().items():
        if route.endswith("[cached]"):
            continue  # the metric has no cache label; the cache-off target is the alerting one
        assert route in by_route, f"no latency alert for {route}"
        expr = by_route[route]["expr"]
        assert f'route="{route}"' in expr
        thresholds = {float(t) for t in re.findall(r">\s*([0-9.]+)\s*$", expr, re.M)}
        assert thresholds == {row["p95_ms"] / 1000}, f"{route}: {thresholds}"


def test_doc_links_to_anchors_resolve():
    for doc in ("rollout.md", "runbook.md", "slo.md"):
        text = (DOCS / doc).read_text()
        for target, anchor in re.findall(r"\]\(([\w.-]*\.md)?#([\w-]+)\)", text):
            path = DOCS / (target or doc)
            assert anchor in markdown_anchors(path), f"{doc}: broken link {target}#{anchor}"
        for target in re.findall(r"\]\(([\w.-]+\.md)\)", text):
            assert (DOCS / target).exists(), f"{doc}: broken link {target}"
