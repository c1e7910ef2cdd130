"""What the README, docs/, the example config and the deploy files say agrees with the code
and with each other:

* every configuration key they mention exists in the schema (in its section, and for a sink,
  in that sink type's settings);
* every secret file and credential path they name agrees (one name per secret, systemd's
  credentials directory spelled as systemd spells it), and every repository path they name
  exists;
* every command in the README's code blocks is run by a test, or listed below as not
  runnable here, with the reason; the backfill recipe against the built-in emulator is run
  here as written.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from auditstream.config import AppConfig
from auditstream.sinks.registry import AnySinkSettings
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLE = ROOT / "config" / "auditstream.example.toml"
DOCS = sorted([README, *(ROOT / "docs").glob("*.md"), *(ROOT / "deploy").glob("**/*.md")])
DEPLOY = sorted(
    p
    for p in (ROOT / "deploy").glob("**/*")
    if p.is_file() and p.suffix in {".toml", ".service", ".yaml", ".yml", ".md", ""}
)


# -- the schema ----------------------------------------------------------------------------------


def _model(annotation: object) -> type[BaseModel] | None:
    """The pydantic model a field holds (directly, optionally, or as list items), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model(arg)
        if found is not None:
            return found
    return None


def _keys(model: type[BaseModel]) -> set[str]:
    """A model's keys as a file may write them: each field, and ``X_file`` for those read from
    files (every secret, and the fields a model lists in ``file_fields``)."""
    keys = set(model.model_fields)
    for name, field in model.model_fields.items():
        if "SecretStr" in str(field.annotation) or name in getattr(model, "file_fields", ()):
            keys.add(f"{name}_file")
    return keys


SINK_MODELS: dict[str, type[BaseModel]] = {
    typing.get_args(model.model_fields["type"].annotation)[0]: model
    for model in typing.get_args(AnySinkSettings)
}


class FreeForm:
    """A table whose keys are data, not settings (``[cef.severity]``: verbs and streams)."""


def section_model(section: str, sink_type: str | None) -> type[BaseModel] | type[FreeForm] | None:
    """``"streams"`` -> StreamSettings, ``"sinks"`` -> that type's settings (of any type when
    the text does not say), ``"sinks.tls"`` -> TlsSettings, ``"cef.severity"`` -> FreeForm;
    None for a section the schema does not have."""
    head, _, sub = section.partition(".")
    candidates: list[type[BaseModel]]
    if head == "sinks":
        known = SINK_MODELS.get(sink_type or "")
        candidates = [known] if known is not None else list(SINK_MODELS.values())
    else:
        field = AppConfig.model_fields.get(head)
        model = _model(field.annotation) if field is not None else None
        candidates = [model] if model is not None else []
    for model in candidates:
        found: type[BaseModel] | type[FreeForm] | None = model
        for part in filter(None, sub.split(".")):
            assert found is not None and found is not FreeForm
            field = found.model_fields.get(part)  # type: ignore[union-attr]
            if field is None:
                found = None
                break
            found = _model(field.annotation) or FreeForm
        if found is not None:
            return found
    return None


ALL_SINK_KEYS = set().union(*(_keys(m) for m in SINK_MODELS.values()))


def key_exists(section: str, sink_type: str | None, key: str) -> bool:
    if section.partition(".")[0] not in AppConfig.model_fields:
        return False
    if section == "sinks" and sink_type not in SINK_MODELS:  # a fragment: any sink's key will do
        return key in ALL_SINK_KEYS
    model = section_model(section, sink_type)
    if model is FreeForm:
        return True
    return model is not None and key in _keys(model)  # type: ignore[arg-type]


# -- keys the documents mention ------------------------------------------------------------------


@dataclass(frozen=True)
class Mention:
    where: str  # file:line
    section: str  # "streams", "sinks", "sinks.tls", ...
    sink_type: str | None
    key: str


HEADER = re.compile(r"^\s*#?\s*\[(\[)?([a-z_.]+)\]\]?\s*(?:#.*)?$")
ASSIGNMENT = re.compile(r"^\s*#?\s*([a-z_]+)\s*=\s*(.*)$")
INLINE_KEY = re.compile(r"(?:\{|,)\s*([a-z_]+)\s*=")


def toml_mentions(text: str, where: str) -> Iterator[Mention]:
    """Keys of TOML text, commented-out ones included (``# key = ...`` documents a key too)."""
    section, sink_type = "", None
    for number, line in enumerate(text.splitlines(), 1):
        header = HEADER.match(line)
        if header:
            section = header.group(2)
            if header.group(1):  # [[sinks]]: a new sink, its type not known yet
                sink_type = None
            continue
        assignment = ASSIGNMENT.match(line)
        if not assignment or not section:
            continue
        key, value = assignment.groups()
        if section == "sinks" and key == "type":
            sink_type = value.split("#")[0].strip().strip('"')
        yield Mention(f"{where}:{number}", section, sink_type, key)
        field_model = section_model(section, sink_type)
        field = None
        if field_model is not None and field_model is not FreeForm:
            field = field_model.model_fields.get(key)  # type: ignore[union-attr]
        nested = _model(field.annotation) if field is not None else None
        if nested is not None and value.lstrip().startswith(("{", "[")):  # batch = { max_events = ... }
            for inner in INLINE_KEY.findall(value):
                yield Mention(f"{where}:{number}", f"{section}.{key}", sink_type, inner)


PROSE_KEY = re.compile(r"`\[([a-z_.]+)\]\s+([a-z_]+)`|`\[([a-z_.]+)\]`\s+`([a-z_]+)`")


def markdown_mentions(path: Path) -> Iterator[Mention]:
    text = path.read_text()
    name = str(path.relative_to(ROOT))
    for block in re.finditer(r"```toml\n(.*?)```", text, re.S):
        first = text[: block.start()].count("\n") + 2
        for mention in toml_mentions(block.group(1), name):
            file, line = mention.where.rsplit(":", 1)
            yield Mention(f"{file}:{first + int(line) - 1}", mention.section, mention.sink_type, mention.key)
    for match in PROSE_KEY.finditer(text):
        section = match.group(1) or match.group(3)
        key = match.group(2) or match.group(4)
        line = text[: match.start()].count("\n") + 1
        yield Mention(f"{name}:{line}", section, None, key)


def every_mention() -> list[Mention]:
    mentions = list(toml_mentions(EXAMPLE.read_text(), str(EXAMPLE.relative_to(ROOT))))
    for path in DOCS:
        mentions.extend(markdown_mentions(path))
    for path in [*sorted((ROOT / "deploy").glob("**/config.toml")), ROOT / "config" / "demo.toml"]:
        mentions.extend(toml_mentions(path.read_text(), str(path.relative_to(ROOT))))
    return mentions


def test_every_config_key_the_documents_mention_exists_in_the_schema():
    mentions = every_mention()
    assert len(mentions) > 300, "the extraction found too little: is the pattern still right?"
    unknown = [m for m in mentions if not key_exists(m.section, m.sink_type, m.key)]
    assert not unknown, "\n".join(
        f"{m.where}: [{m.section}]{f' (type {m.sink_type})' if m.sink_type else ''} {m.key}" for m in unknown
    )


def test_the_key_check_catches_a_wrong_key():
    """The check itself can fail: a misspelt key, a key in the wrong section or sink type."""
    text = (
        '[streams]\npoll_intervall = "30s"\n'
        '[[sinks]]\ntype = "syslog"\nindex = "x"\n# [sinks.tls]\n# verfy = 1\n'
    )
    found = {
        (m.section, m.key) for m in toml_mentions(text, "t") if not key_exists(m.section, m.sink_type, m.key)
    }
    assert found == {("streams", "poll_intervall"), ("sinks", "index"), ("sinks.tls", "verfy")}
    prose = list(PROSE_KEY.finditer("see `[metrics] max_lagg` and `[engine] slices_ahead`"))
    assert [(m.group(1), m.group(2)) for m in prose] == [("metrics", "max_lagg"), ("engine", "slices_ahead")]
    assert not key_exists("metrics", None, "max_lagg") and key_exists("engine", None, "slices_ahead")


# -- paths ---------------------------------------------------------------------------------------

SECRET_DIRS = (
    "/run/secrets/auditstream/",
    "${CREDENTIALS_DIRECTORY}/",
    "$CREDENTIALS_DIRECTORY/",
    "/etc/auditstream/credentials/",
    "./auditstream/secrets/",
)
SECRET_NAME = re.compile(
    "(?:" + "|".join(re.escape(d) for d in SECRET_DIRS) + r")([a-z][a-z0-9-]*[a-z0-9])(?![a-z0-9.-]*\.cred\b)"
)


def texts() -> dict[str, str]:
    files = [*DOCS, EXAMPLE, *DEPLOY, ROOT / "Dockerfile"]
    return {str(p.relative_to(ROOT)): p.read_text(errors="replace") for p in files}


def secret_names() -> dict[str, set[str]]:
    """Each secret file name, and where it is named."""
    names: dict[str, set[str]] = {}
    for where, text in texts().items():
        for match in SECRET_NAME.finditer(text):
            names.setdefault(match.group(1), set()).add(where)
    return names


def test_one_name_per_secret_file_everywhere():
    """A secret is one file name in every document and deploy file: "hec-token" in one place
    and "splunk-hec-token" in another sends an operator to a file that does not exist."""
    names = secret_names()
    assert {"sdm-secret-key", "splunk-hec-token"} <= set(names), sorted(names)
    clashes = [
        (short, long)
        for short in names
        for long in names
        if short != long and (long.endswith("-" + short) or long.startswith(short + "-"))
    ]
    assert not clashes, [(a, sorted(names[a]), b, sorted(names[b])) for a, b in clashes]


def test_secrets_the_units_and_the_kubernetes_secret_provide_are_the_ones_the_configs_read():
    texts_ = texts()
    loaded = set(
        re.findall(r"LoadCredential=([a-z-]+):", "".join(texts_[p] for p in texts_ if p.endswith(".service")))
    )
    read_by_systemd_config = set(
        re.findall(r"\$\{CREDENTIALS_DIRECTORY\}/([a-z-]+)", texts_["deploy/systemd/config.toml"])
    )
    assert read_by_systemd_config <= loaded, (read_by_systemd_config, loaded)
    secret_keys = set(re.findall(r"(?m)^  ([a-z-]+):", texts_["deploy/kubernetes/secret.example.yaml"]))
    read_by_kubernetes = set(
        re.findall(r"/run/secrets/auditstream/([a-z-]+)", texts_["deploy/kubernetes/base/config.toml"])
    )
    assert read_by_kubernetes <= secret_keys, (read_by_kubernetes, secret_keys)


def test_systemd_credentials_are_named_as_systemd_names_them():
    """systemd's credentials directory is /run/credentials/<unit name>/ (with ".service"), and
    the unit hands it over as $CREDENTIALS_DIRECTORY: any other spelling is a wrong path."""
    wrong = [
        (where, match.group(0))
        for where, text in texts().items()
        for match in re.finditer(r"/run/credentials/[^\s\"'`)]*", text)
        if not match.group(0).startswith("/run/credentials/auditstream.service/")
        and not match.group(0).startswith("/run/credentials/auditstream-backfill@")
    ]
    assert not wrong, wrong


def test_state_and_config_paths_agree_with_the_schema_defaults():
    state_dir = AppConfig.model_fields["checkpoint"].default_factory().path.parent  # type: ignore[misc]
    assert str(state_dir) == "/var/lib/auditstream"
    for where, text in texts().items():
        for match in re.finditer(r"/var/lib/auditstream[a-z_./-]*", text):
            path = match.group(0).rstrip(".")
            assert path in ("/var/lib/auditstream", "/var/lib/auditstream/") or path.startswith(
                (
                    "/var/lib/auditstream/checkpoints.db",
                    "/var/lib/auditstream/backfill-",
                    "/var/lib/auditstream/dead-letter",
                )
            ), (where, path)
        for match in re.finditer(r"/etc/auditstream/[a-z_.@/-]*[a-z]", text):
            assert match.group(0).startswith(
                ("/etc/auditstream/config.toml", "/etc/auditstream/credentials", "/etc/auditstream/client.")
            ), (where, match.group(0))


REPO_PATH = re.compile(r"(?<![\w/.$-])((?:deploy|docs|config|auditstream|tests|bench)/[\w./@-]*[\w/])")


NOT_PATHS = {"auditstream/1"}  # the formatVersion of queries and history events


def test_every_repository_path_the_documents_name_exists():
    missing = []
    for path in [*DOCS, EXAMPLE]:
        text = path.read_text()
        for match in REPO_PATH.finditer(text):
            name = match.group(1)
            if name in NOT_PATHS:
                continue
            if "{" in name or "<" in name or name.startswith("auditstream/secrets"):  # templates, the
                continue  # container recipe's own ./auditstream/ directory
            quoted = text[match.start() - 1 : match.start()] in "`(" and match.start() > 0
            if not quoted and "." not in name.rsplit("/", 1)[-1]:
                continue  # prose ("bad config/usage"), not a path
            if not (ROOT / name).exists() and not (path.parent / name).exists():
                missing.append(f"{path.relative_to(ROOT)}: {name}")
    assert not missing, missing


# -- the README's commands -----------------------------------------------------------------------

NO_DOCKER = (
    "not runnable here: no Docker daemon on these machines; the Dockerfile is linted (hadolint) and "
    "checked by tests/deploy/test_dockerfile.py"
)
NO_CLUSTER = (
    "not runnable here: no Kubernetes cluster; the manifests are rendered with kubectl kustomize and "
    "validated by tests/deploy/test_kubernetes.py"
)
NO_SYSTEMD = (
    "not runnable here: needs systemd as PID 1 and root on the host; the units are verified "
    "(systemd-analyze verify, security) by tests/deploy/test_systemd.py"
)
LIVE_DEPLOYMENT = (
    "not runnable here: needs the deployed daemon; /readyz and /metrics are fetched from a running "
    "daemon by tests/ops/test_readyz.py and tests/ops/test_metrics_run.py"
)
OPERATOR_SECRETS = (
    "not runnable here: writes the operator's own StrongDM and Splunk secrets; the config it copies "
    "is loaded by tests/deploy/test_configs.py"
)
HOST_INSTALL = (
    "not runnable here: installs into /opt on the host, as root; the same package is installed into "
    ".venv by make, and its CLI is run by every end-to-end test"
)
REAL_BACKFILL = (
    "not runnable here: needs a StrongDM key and /etc/auditstream; the same command against the "
    "emulator is run by tests/e2e/test_backfill.py::test_interrupted_backfill_resumes_where_it_stopped"
)
EMULATOR_RECIPE = "run by tests/test_docs_truth.py::test_the_readme_backfill_recipe_against_the_emulator_runs"

README_COMMANDS: list[tuple[str, str]] = [
    # (regex on the command, where it runs or why it cannot)
    (
        r"^make demo$",
        "run by tests/test_cli.py::test_demo_prints_events_and_stops_cleanly "
        "(its recipe's command: auditstream demo --config config/demo.toml)",
    ),
    (r"^make test$", "run by CI: .ci/run is exec make test"),
    (
        r"^auditstream check --config bad\.toml$",
        "run by tests/test_cli.py::test_bad_config_exits_2_naming_the_key",
    ),
    (
        r"^auditstream run --config env\.toml$",
        "run by tests/test_cli.py::test_every_unset_variable_is_named_with_its_file_at_once",
    ),
    (r"^docker ", NO_DOCKER),
    (
        r"^(mkdir|cp|\$EDITOR|printf|sudo chown) .*(\./auditstream|deploy/kubernetes/base/config\.toml)",
        OPERATOR_SECRETS,
    ),
    (r"^curl -fsS http://127\.0\.0\.1:9464/", LIVE_DEPLOYMENT),
    (
        r"^kubectl kustomize deploy/kubernetes",
        "run by tests/deploy/test_kubernetes.py::test_base_renders_the_daemon (kubectl from the test extra)",
    ),
    (r"^kubectl ", NO_CLUSTER),
    (r"^\$EDITOR deploy/kubernetes/backfill/job\.yaml", NO_CLUSTER),
    (r"^(python3\.11 -m venv|/opt/auditstream/venv/bin/)", HOST_INSTALL),
    (
        r"^(install |\$EDITOR /etc/auditstream|\( umask 077|CREDENTIALS_DIRECTORY=/etc/auditstream)",
        NO_SYSTEMD,
    ),
    (r"^(systemctl|journalctl|systemd-analyze security auditstream\.service)", NO_SYSTEMD),
    (r"^auditstream backfill --config /etc/auditstream/config\.toml", REAL_BACKFILL),
    (r"^\.venv/bin/auditstream emulator |backfill --config config/demo\.toml|^kill %1$", EMULATOR_RECIPE),
]


def shell_blocks(text: str) -> Iterator[tuple[int, str]]:
    """(line, block) of every ```sh block, and of every unlabelled block written with ``$`` prompts."""
    for block in re.finditer(r"```(\w*)\n(.*?)```", text, re.S):
        line = text[: block.start()].count("\n") + 2
        if block.group(1) in ("sh", "bash"):
            yield line, block.group(2)
        elif block.group(1) == "" and block.group(2).lstrip().startswith("$ "):
            prompted = [ln[2:] for ln in block.group(2).splitlines() if ln.startswith("$ ")]
            yield line, "\n".join(prompted) + "\n"


def commands(block: str) -> Iterator[str]:
    """One command per logical line: continuations joined, comments and blank lines dropped,
    a ``( ... )`` subshell one command."""
    lines = [ln.strip() for ln in block.splitlines()]
    joined: list[str] = []
    current = ""
    depth = 0
    for line in lines:
        if not current and (not line or line.startswith("#")):
            continue
        code = line.split("  #")[0].rstrip() if not line.startswith("#") else ""
        current = f"{current} {code}".strip() if current else code
        depth += code.count("( ") + code.startswith("(") - code.count(" )") - code.endswith(")")
        if current.endswith("\\"):
            current = current[:-1].rstrip()
            continue
        if depth > 0:
            continue
        depth = 0
        joined.append(re.sub(r"\s+", " ", current))
        current = ""
    yield from joined


def readme_commands() -> list[str]:
    return [cmd for _, block in shell_blocks(README.read_text()) for cmd in commands(block)]


def test_every_readme_command_is_run_by_a_test_or_said_not_runnable_here():
    found = readme_commands()
    assert len(found) > 40, found
    unaccounted = [cmd for cmd in found if not any(re.search(rule, cmd) for rule, _ in README_COMMANDS)]
    assert not unaccounted, "README commands neither run by a test nor listed as not runnable:\n" + "\n".join(
        unaccounted
    )
    unused = [rule for rule, _ in README_COMMANDS if not any(re.search(rule, cmd) for cmd in found)]
    assert not unused, f"rules for commands the README no longer has: {unused}"
    for _, verdict in README_COMMANDS:
        if verdict.startswith("not runnable here: "):
            continue
        assert verdict.startswith(("run by tests/", "run by CI")), verdict
        for reference in re.findall(r"(tests/[\w/]+\.py)::(\w+)", verdict):
            file, test = reference
            assert re.search(rf"(?m)^(async )?def {test}\(", (ROOT / file).read_text()), reference


def test_the_readme_backfill_recipe_against_the_emulator_runs(tmp_path):
    """The README's recipe, run as written but for its port (a free one) and its paths (this
    test's directory), with this checkout's code instead of .venv's console script."""
    text = README.read_text()
    (block,) = [b for _, b in shell_blocks(text) if "auditstream emulator --listen" in b]
    port = free_port()
    cli = f"{shlex.quote(sys.executable)} -m auditstream.cli"
    script = (
        block.replace(".venv/bin/auditstream", cli)
        .replace("127.0.0.1:50551", f"127.0.0.1:{port}")
        .replace("/tmp/auditstream-backfill-demo", str(tmp_path / "state"))
        .replace("/tmp/backfill-events.jsonl", str(tmp_path / "events.jsonl"))
    )
    # the recipe starts the emulator in the background: wait for its port before the backfill
    script = script.replace(
        "&   #", f"& until (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null; do sleep 0.1; done   #", 1
    )
    env = {**os.environ, "AUDITSTREAM_DEMO_API": f"127.0.0.1:{port}", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        ["bash", "-c", "set -e\n" + script],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"backfill complete: [\d,]+ records from 30 streams", result.stderr), result.stderr[
        -2000:
    ]
    events = (tmp_path / "events.jsonl").read_text().splitlines()
    assert len(events) > 1000 and all(line.startswith("{") for line in events)
    assert list((tmp_path / "state").glob("backfill-*-now.db")), "the checkpoint the README names"
