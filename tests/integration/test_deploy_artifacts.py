"""Deployment artifacts: Dockerfile, compose file and kustomize overlays lint, render and agree."""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from mira.domain.config.loading import load_settings
from mira.domain.config.model import Settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
KUSTOMIZE = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("env", "vault", "kubernetes")
SECTIONS = {"logging", "config", "secrets", "integrations", "server", "shutdown", "management"}
DOCKER_STOP_DEFAULT = 10.0
# Oldest Kubernetes minor still commonly run, and the newest the validator knows.
KUBE_VERSIONS = ("1.29.0", "1.37.0")
KUBECTL = shutil.which("kubectl") or shutil.which("/usr/bin/kubectl")
RENDERERS = ("raw", "kubectl") if KUBECTL else ("raw",)
SECRET_REF = re.compile(r"^secret://([^:]+):(.+)$")

Manifest = dict[str, Any]


def run(cmd: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


# --- Dockerfile --------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(KEYWORD, arguments) pairs with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [ln.strip() for ln in joined.splitlines()]
    pairs = [ln.split(None, 1) for ln in lines if ln and not ln.startswith("#")]
    return [(p[0].upper(), p[1] if len(p) > 1 else "") for p in pairs]


def build_args() -> dict[str, str]:
    """The ARG defaults declared before the first FROM (the ones FROM lines may use)."""
    found = {}
    for kw, args in dockerfile_instructions():
        if kw == "FROM":
            break
        if kw == "ARG" and "=" in args:
            name, default = args.split("=", 1)
            found[name] = default
    return found


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (kw, _) in enumerate(instructions) if kw == "FROM")
    return instructions[last_from:]


def one(stage: list[tuple[str, str]], keyword: str) -> str:
    found = [args for kw, args in stage if kw == keyword]
    assert len(found) == 1, f"expected exactly one {keyword} in the final stage, got {found}"
    return found[0]


def dockerignored(path: str) -> bool:
    """Docker's rule: the last matching pattern (on the path or a parent) decides."""
    ignored = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").removeprefix("**/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(
            fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(parts[-1], pattern) for p in prefixes
        ):
            ignored = not negate
    return ignored


def healthcheck_command(exec_form: list[str]) -> list[str]:
    """`mira healthcheck [config]`, the installed console script standing in for the image's."""
    assert exec_form[:2] == ["mira", "healthcheck"], exec_form
    assert len(exec_form) <= 3, exec_form
    return [str(Path(sys.executable).parent / "mira"), *exec_form[1:]]


def test_dockerfile_passes_hadolint_with_no_findings() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = run([hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)])
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_image_runs_mira_as_non_root_and_receives_sigterm_directly() -> None:
    stage = final_stage()
    assert one(stage, "FROM") == "${BASE_IMAGE}"
    base = build_args()["BASE_IMAGE"]
    assert re.fullmatch(r"python:3\.1[1-3][\w.-]*-slim[\w.-]*", base), base
    user = one(stage, "USER").split(":")[0]
    assert user not in {"0", "root"}, user
    cmd = json.loads(one(stage, "CMD"))
    assert cmd == ["python", "-m", "mira.entrypoints.web", "/app/config.json"]
    assert one(stage, "STOPSIGNAL") == "SIGTERM"
    assert not [kw for kw, _ in stage if kw == "ENTRYPOINT"], "a shell entrypoint would eat SIGTERM"
    env = " ".join(args for kw, args in stage if kw == "ENV")
    assert "PYTHONUNBUFFERED=1" in env
    run_steps = " ".join(args for kw, args in stage if kw == "RUN")
    assert re.search(r"-o mira -g mira .*/var/log/mira|chown .*mira.* /var/log/mira", run_steps)
    assert "--uid 10001" in run_steps and user in {"10001", "mira"}


def test_every_copied_path_exists_and_is_in_the_build_context() -> None:
    sources = []
    for kw, args in dockerfile_instructions():
        if kw == "COPY" and "--from=" not in args:
            sources += args.split()[:-1]
    assert sources, "no COPY from the build context"
    for source in sources:
        matches = list(ROOT.glob(source))
        if "*" in source:
            continue  # optional files (README*); COPY needs one match among its sources
        assert matches, f"COPY source {source} does not exist"
        for match in matches:
            files = [match] if match.is_file() else [p for p in match.rglob("*") if p.is_file()]
            rel = [str(f.relative_to(ROOT)) for f in files]
            kept = [r for r in rel if not dockerignored(r)]
            assert kept, f"COPY {source}: everything is excluded by .dockerignore"
    assert dockerignored(".venv/bin/python") and dockerignored(".git/HEAD")
    assert dockerignored("src/mira/__pycache__/x.cpython-311.pyc")


def test_image_default_config_is_valid_and_fits_docker_stop_timeout() -> None:
    settings = load_config(ROOT / "deploy" / "docker" / "config.json", {})
    assert str(settings.server.port) in one(final_stage(), "EXPOSE").split()
    assert settings.shutdown.grace_period <= DOCKER_STOP_DEFAULT
    assert_budget_fits(settings, settings.shutdown.grace_period)


# --- a real /health endpoint for the healthcheck commands ---------------------------------------


class HealthServer(ThreadingHTTPServer):
    status = 200


class HealthHandler(BaseHTTPRequestHandler):
    server: HealthServer

    def do_GET(self) -> None:
        code = self.server.status if self.path == "/health" else 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[HealthServer]:
    server = HealthServer(("127.0.0.1", 0), HealthHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def probe(command: list[str], server: HealthServer, tmp_path: Path) -> int:
    """Run the healthcheck against a config naming the health server's port."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"server": {"host": "127.0.0.1", "port": server.server_port}}))
    args = [*command[:2], str(config)]  # the check's own path is the container's, not ours
    return subprocess.run(args, capture_output=True, timeout=15).returncode


def test_docker_healthcheck_reports_healthy_and_unhealthy(
    health_server: HealthServer, tmp_path: Path
) -> None:
    args = one(final_stage(), "HEALTHCHECK")
    command = healthcheck_command(json.loads(args[args.index("CMD") + 3 :]))
    assert probe(command, health_server, tmp_path) == 0
    health_server.status = 503
    assert probe(command, health_server, tmp_path) != 0


# --- docker-compose.yml ------------------------------------------------------------------------


def compose_service() -> dict[str, Any]:
    compose = yaml.safe_load(COMPOSE.read_text())
    assert "version" not in compose, "the top-level version key is obsolete"
    service: dict[str, Any] = compose["services"]["mira"]
    return service


def duration_seconds(text: str) -> float:
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"bad duration {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


def compose_config_path(service: dict[str, Any]) -> Path:
    """Host path of the config file the service's command reads, through its bind mounts."""
    in_container = Path(service["command"][-1])
    for volume in service["volumes"]:
        host, target, *_ = str(volume).split(":")
        if in_container.is_relative_to(target) and host.startswith("."):
            return ROOT / host / in_container.relative_to(target)
    raise AssertionError(f"{in_container} is not on a bind mount")


def test_compose_mounts_a_valid_config_directory_and_waits_out_the_shutdown_budget() -> None:
    service = compose_service()
    assert service["command"][:3] == ["python", "-m", "mira.entrypoints.web"]
    config_file = compose_config_path(service)
    mount = next(v for v in service["volumes"] if v.startswith("./"))
    assert Path(mount.split(":")[0]).suffix == "", "mount the directory, not the file"
    environ = {k: str(v) for k, v in service["environment"].items() if v is not None}
    assert {"MIRA_LOG_LEVEL", "MIRA_CONFIG_HOT_RELOAD"} <= environ.keys()
    settings = load_config(config_file, environ)
    assert settings.config.hot_reload
    assert duration_seconds(service["stop_grace_period"]) == settings.shutdown.grace_period
    assert_budget_fits(settings, settings.shutdown.grace_period)
    log_dir = Path(settings.logging.file or "/nonexistent").parent
    assert any(v.split(":")[1] == str(log_dir) for v in service["volumes"]), "logs not on a volume"


def test_compose_healthcheck_reports_healthy_and_unhealthy(
    health_server: HealthServer, tmp_path: Path
) -> None:
    service = compose_service()
    check = service["healthcheck"]["test"]
    assert check[0] == "CMD"
    command = healthcheck_command(check[1:])
    assert command[2:] in ([], [service["command"][-1]]), "probe the config the service reads"
    assert probe(command, health_server, tmp_path) == 0
    health_server.status = 500
    assert probe(command, health_server, tmp_path) != 0


# --- kustomize ---------------------------------------------------------------------------------


def strategic_merge(target: Any, patch: Any) -> Any:
    """Enough of a strategic merge for our patches: maps deep-merge, named lists merge by name."""
    if isinstance(target, dict) and isinstance(patch, dict):
        for key, value in patch.items():
            target[key] = strategic_merge(target[key], value) if key in target else value
        return target
    named = isinstance(target, list) and isinstance(patch, list)
    if named and all(isinstance(i, dict) and "name" in i for i in target + patch):
        by_name = {i["name"]: i for i in target}
        for item in patch:
            if item["name"] in by_name:
                strategic_merge(by_name[item["name"]], item)
            else:
                target.append(item)
        return target
    return patch


def render_raw(directory: Path) -> list[Manifest]:
    """Fallback without kubectl: resources, generated ConfigMaps, patches, namespace, images."""
    kust = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs: list[Manifest] = []
    for res in kust.get("resources", []):
        path = directory / res
        docs += render_raw(path) if path.is_dir() else list(yaml.safe_load_all(path.read_text()))
    for gen in kust.get("configMapGenerator", []):
        files = [f.split("=", 1) if "=" in f else [Path(f).name, f] for f in gen["files"]]
        data = {key: (directory / path).read_text() for key, path in files}
        meta = {"name": gen["name"]}
        docs = [d for d in docs if (d["kind"], d["metadata"]["name"]) != ("ConfigMap", gen["name"])]
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
    for entry in kust.get("patches", []):
        patch = yaml.safe_load((directory / entry["path"]).read_text())
        for doc in docs:
            if (doc["kind"], doc["metadata"]["name"]) == (patch["kind"], patch["metadata"]["name"]):
                strategic_merge(doc, copy.deepcopy(patch))
    if "namespace" in kust:
        for doc in docs:
            if doc["kind"] != "Namespace":
                doc["metadata"]["namespace"] = kust["namespace"]
    for image in kust.get("images", []):
        for doc in docs:
            for container in pod_spec(doc).get("containers", []):
                if container["image"] == image["name"]:
                    container["image"] = f"{image['newName']}:{image['newTag']}"
    return docs


@cache
def rendered_text(overlay: str, renderer: str) -> str:
    directory = KUSTOMIZE / "overlays" / overlay
    if renderer == "raw":
        return str(yaml.safe_dump_all(render_raw(directory)))
    assert KUBECTL
    result = run([KUBECTL, "kustomize", str(directory)])
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(overlay: str, renderer: str) -> list[Manifest]:
    return [d for d in yaml.safe_load_all(rendered_text(overlay, renderer)) if d]


def pod_spec(doc: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = doc.get("spec", {}).get("template", {}).get("spec", {})
    return spec


def only(docs: list[Manifest], kind: str) -> Manifest:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def load_config(path: Path, environ: dict[str, str]) -> Settings:
    return loaded(path.read_text(), str(path), environ)


def loaded(text: str, source: str, environ: dict[str, str]) -> Settings:
    result = load_settings(text, source, environ)
    assert result.settings is not None, result.errors
    return result.settings


def assert_budget_fits(settings: Settings, deadline: float) -> None:
    s = settings.shutdown
    # shutdown.hooks_timeout bounds the whole cleanup phase (each hook also by hook_timeout).
    assert s.hook_timeout <= s.hooks_timeout, "one hook may not outlast the whole hooks phase"
    budget = s.drain_delay + s.timeout + s.hooks_timeout
    assert budget <= deadline, f"drain+timeout+hooks = {budget}s exceeds {deadline}s"


class Overlay:
    """One rendered overlay and the effective settings its pods would run with."""

    def __init__(self, name: str, renderer: str) -> None:
        self.name = name
        self.docs = render(name, renderer)
        self.deployment = only(self.docs, "Deployment")
        self.pod = pod_spec(self.deployment)
        self.container: dict[str, Any] = self.pod["containers"][0]
        self.config_text: str = only(self.docs, "ConfigMap")["data"]["config.json"]
        env = self.container.get("env", [])
        self.environ = {e["name"]: e["value"] for e in env if "value" in e}
        self.settings = loaded(self.config_text, f"{name}/config.json", self.environ)

    def port_number(self, port: int | str) -> int:
        if isinstance(port, int):
            return port
        named = [p["containerPort"] for p in self.container["ports"] if p["name"] == port]
        assert named, f"no container port named {port}"
        return int(named[0])


@pytest.fixture(params=[(o, r) for o in OVERLAYS for r in RENDERERS], ids=lambda p: "-".join(p))
def overlay(request: pytest.FixtureRequest) -> Overlay:
    name, renderer = request.param
    return Overlay(name, renderer)


def kube_validate(path: Path) -> subprocess.CompletedProcess[str]:
    versions = [arg for v in KUBE_VERSIONS for arg in ("-k", v)]
    return run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", *versions, str(path)]
    )


def test_rendered_manifests_pass_strict_schema_validation(overlay: Overlay, tmp_path: Path) -> None:
    rendered = tmp_path / f"{overlay.name}.yaml"
    rendered.write_text(yaml.safe_dump_all(overlay.docs))
    result = kube_validate(rendered)
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = {d["kind"] for d in overlay.docs}
    assert {"Deployment", "Service", "ServiceAccount", "ConfigMap"} <= kinds


def test_schema_validation_rejects_a_misspelt_field(tmp_path: Path) -> None:
    deployment = only(render("env", "raw"), "Deployment")
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 30
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(deployment))
    result = kube_validate(broken)
    assert result.returncode != 0 and "terminationGracePeriod" in result.stdout + result.stderr


def test_grace_period_matches_config_and_fits_the_shutdown_budget(overlay: Overlay) -> None:
    grace = overlay.pod["terminationGracePeriodSeconds"]
    assert grace == overlay.settings.shutdown.grace_period
    assert_budget_fits(overlay.settings, grace)
    assert overlay.settings.shutdown.drain_delay > 0, "pods need a drain delay behind a Service"
    assert "lifecycle" not in overlay.container, "drain_delay replaces the preStop sleep"


def test_configmap_holds_json_with_known_sections(overlay: Overlay) -> None:
    raw = json.loads(overlay.config_text)
    assert isinstance(raw, dict) and raw
    assert set(raw) <= SECTIONS, set(raw) - SECTIONS
    assert overlay.settings.secrets.backend == overlay.name


def test_probes_and_prometheus_use_the_management_port_and_the_service_only_the_api(
    overlay: Overlay,
) -> None:
    live, ready = overlay.container["livenessProbe"], overlay.container["readinessProbe"]
    start = overlay.container["startupProbe"]
    assert live["httpGet"]["path"] == "/health" and start["httpGet"]["path"] == "/health"
    assert ready["httpGet"]["path"] == "/ready"
    management = overlay.settings.management.port
    assert management is not None and management != overlay.settings.server.port
    for probe_spec in (live, ready, start):
        assert overlay.port_number(probe_spec["httpGet"]["port"]) == management
    annotations = overlay.deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == management
    assert overlay.settings.server.port == 5000
    ports = only(overlay.docs, "Service")["spec"]["ports"]
    assert [overlay.port_number(p["targetPort"]) for p in ports] == [5000]


def test_config_is_mounted_as_a_directory_so_hot_reload_sees_updates(overlay: Overlay) -> None:
    volumes = {v["name"]: v for v in overlay.pod["volumes"]}
    config_mounts = [
        m for m in overlay.container["volumeMounts"] if "configMap" in volumes[m["name"]]
    ]
    assert len(config_mounts) == 1
    mount = config_mounts[0]
    assert "subPath" not in mount, "subPath mounts never receive ConfigMap updates"
    config_path = Path(overlay.container["command"][-1])
    assert config_path.parent == Path(mount["mountPath"])
    assert overlay.settings.config.hot_reload


def test_pod_runs_non_root_on_a_read_only_root_with_writable_logs(overlay: Overlay) -> None:
    pod_ctx, ctx = overlay.pod["securityContext"], overlay.container["securityContext"]
    assert pod_ctx["runAsNonRoot"] is True and pod_ctx["runAsUser"] != 0
    assert str(pod_ctx["runAsUser"]) == one(final_stage(), "USER").split(":")[0]
    assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False
    volumes = {v["name"]: v for v in overlay.pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in overlay.container["volumeMounts"]}
    assert "emptyDir" in mounts["/var/log/mira"] and "emptyDir" in mounts["/tmp"]
    resources = overlay.container["resources"]
    assert resources["requests"] and resources["limits"]["memory"]


def secret_paths(raw: Any) -> set[str]:
    if isinstance(raw, dict):
        return set().union(*(secret_paths(v) for v in raw.values()))
    match = SECRET_REF.match(raw) if isinstance(raw, str) else None
    return {match.group(1)} if match else set()


@pytest.mark.parametrize("renderer", RENDERERS)
def test_kubernetes_backend_may_only_read_its_named_secrets(renderer: str) -> None:
    overlay = Overlay("kubernetes", renderer)
    role, binding = only(overlay.docs, "Role"), only(overlay.docs, "RoleBinding")
    assert len(role["rules"]) == 1
    rule = role["rules"][0]
    assert sorted(rule["verbs"]) == ["get", "list", "watch"]
    assert rule["apiGroups"] == [""] and rule["resources"] == ["secrets"]
    referenced = secret_paths(json.loads(overlay.config_text))
    assert referenced and set(rule["resourceNames"]) == referenced
    namespace = overlay.deployment["metadata"]["namespace"]
    assert role["metadata"]["namespace"] == namespace
    assert overlay.settings.secrets.kubernetes.namespace == namespace
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    subject = {"kind": "ServiceAccount", "name": overlay.pod["serviceAccountName"]}
    assert binding["subjects"] == [subject | {"namespace": namespace}]
    assert overlay.pod["automountServiceAccountToken"] is True


@pytest.mark.parametrize("renderer", RENDERERS)
def test_other_overlays_grant_no_api_access(renderer: str) -> None:
    for name in ("env", "vault"):
        overlay = Overlay(name, renderer)
        assert not {"Role", "RoleBinding", "ClusterRole"} & {d["kind"] for d in overlay.docs}
        assert overlay.pod["automountServiceAccountToken"] is False


@pytest.mark.parametrize("renderer", RENDERERS)
def test_vault_overlay_logs_in_with_a_projected_service_account_token(renderer: str) -> None:
    overlay = Overlay("vault", renderer)
    vault = overlay.settings.secrets.vault
    assert vault.auth.method == "kubernetes" and vault.auth.role
    file_url = json.loads(overlay.config_text)["secrets"]["vault"]["url"]
    assert overlay.environ["MIRA_VAULT_URL"] == file_url, "env overrides the file: keep equal"
    volumes = {v["name"]: v for v in overlay.pod["volumes"]}
    token_file = Path(vault.auth.token_file)
    mount = next(
        m for m in overlay.container["volumeMounts"] if token_file.parent == Path(m["mountPath"])
    )
    sources = volumes[mount["name"]]["projected"]["sources"]
    token = next(s["serviceAccountToken"] for s in sources if "serviceAccountToken" in s)
    assert token["path"] == token_file.name and token["audience"]
