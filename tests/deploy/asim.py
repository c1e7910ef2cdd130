"""deploy/sentinel/asim: the ASIM parsers (Microsoft's parser YAML format) and the ARM template
that deploys them as workspace functions, which is generated from the YAML:

    .venv/bin/python -m tests.deploy.asim    # rewrites deploy/sentinel/asim/asim-parsers.json

and ``analyze``, which runs Microsoft's KQL semantic analyzer (Kusto.Language, the npm package
@kusto/language-service-next that tests/deploy/kql pins) over KQL against the workspace as
the parsers see it: the StrongDMAudit_CL table of deploy/sentinel/table.json and the
functions the parsers call.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SENTINEL = ROOT / "deploy" / "sentinel"
ASIM = SENTINEL / "asim"
ARM = ASIM / "asim-parsers.json"
KQL = Path(__file__).resolve().parent / "kql"
KUSTO_PACKAGE = "@kusto/language-service-next"

# Columns every Log Analytics table has besides its own (not in table.json).
STANDARD_COLUMNS = {"TenantId": "string", "Type": "string", "_ResourceId": "string", "_ItemId": "string"}
KQL_TYPES = {
    "dateTime": "datetime",
    "string": "string",
    "long": "long",
    "boolean": "bool",
    "dynamic": "dynamic",
}


def table_columns() -> dict[str, str]:
    """StrongDMAudit_CL's columns as KQL types: table.json's and the standard ones."""
    table = json.loads((SENTINEL / "table.json").read_text())["properties"]["schema"]
    columns = {c["name"]: KQL_TYPES[c["type"]] for c in table["columns"]}
    return {**columns, **STANDARD_COLUMNS}


def parsers() -> dict[str, dict[str, Any]]:
    """Every parser YAML of deploy/sentinel/asim, by ParserName."""
    found = {}
    for path in sorted(ASIM.glob("*.yaml")):
        parser = yaml.safe_load(path.read_text())
        assert parser["ParserName"] == path.stem, path
        found[path.stem] = parser
    return found


def default(param: dict[str, Any]) -> str:
    """A ``ParserParams`` default as KQL: YAML gives ``'*'`` for a string's ``*``, ``false``
    for a bool, the KQL text itself for the rest (``datetime(null)``, ``dynamic([])``)."""
    value = param["Default"]
    if param["Type"] == "string":
        return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parameter_list(parser: dict[str, Any]) -> str:
    """``ParserParams`` as a KQL function parameter list (ARM's ``functionParameters``)."""
    return ",".join(f"{p['Name']}:{p['Type']}={default(p)}" for p in parser.get("ParserParams", []))


def declarations(parser: dict[str, Any]) -> str:
    """The parameters as ``let`` statements, so the query text can be analyzed on its own."""
    return "".join(f"let {p['Name']} = {default(p)};\n" for p in parser.get("ParserParams", []))


def arm_template() -> dict[str, Any]:
    """One savedSearches resource (a workspace function) per parser, as Microsoft's
    Azure-Sentinel/Parsers/ASim*/ARM templates write them."""
    resources = []
    for name, parser in parsers().items():
        properties: dict[str, Any] = {
            "etag": "*",
            "displayName": parser["Parser"]["Title"],
            "category": "ASIM",
            "FunctionAlias": name,
            "query": parser["ParserQuery"],
            "version": 1,
        }
        if parser.get("ParserParams"):
            properties["functionParameters"] = parameter_list(parser)
        resources.append(
            {
                "type": "Microsoft.OperationalInsights/workspaces/savedSearches",
                "apiVersion": "2020-08-01",
                "name": f"[concat(parameters('Workspace'), '/{name}')]",
                "location": "[parameters('WorkspaceRegion')]",
                "properties": properties,
            }
        )
    return {
        "$schema": "https://schema.management.azure.com/schemas/2019-08-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "metadata": {
            "description": "ASIM parsers for StrongDM audit data (auditstream's StrongDMAudit_CL). "
            "Generated from deploy/sentinel/asim/*.yaml by python -m tests.deploy.asim."
        },
        "parameters": {
            "Workspace": {
                "type": "string",
                "metadata": {"description": "The Microsoft Sentinel workspace to deploy the functions into"},
            },
            "WorkspaceRegion": {
                "type": "string",
                "defaultValue": "[resourceGroup().location]",
                "metadata": {"description": "The workspace's region"},
            },
        },
        "resources": resources,
    }


def arm_text() -> str:
    return json.dumps(arm_template(), indent=2) + "\n"


# --- Kusto.Language --------------------------------------------------------------------------


def kusto_language() -> tuple[str, Path]:
    """(node, check.js) with the pinned Kusto.Language installed: ``npm ci`` from the lock file
    when it is not (a missing node or npm fails the test, it does not skip it)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise AssertionError("node and npm are not on PATH: install the Debian packages nodejs and npm")
    lock = json.loads((KQL / "package-lock.json").read_text())
    wanted = lock["packages"][f"node_modules/{KUSTO_PACKAGE}"]["version"]
    installed = KQL / "node_modules" / KUSTO_PACKAGE / "package.json"
    if not installed.exists() or json.loads(installed.read_text())["version"] != wanted:
        proc = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
            cwd=KQL,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0:
            raise AssertionError(f"npm ci in {KQL} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return node, KQL / "check.js"


def analyze(
    queries: dict[str, str],
    columns: dict[str, str] | None = None,
    functions: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per query: ``diagnostics`` (Kusto.Language's errors and warnings) and ``columns`` (the
    result's [name, type] pairs), with StrongDMAudit_CL (``columns``, by default table.json's)
    and ``functions`` (parser YAMLs, by default every parser here) in the workspace."""
    node, script = kusto_language()
    columns = table_columns() if columns is None else columns
    functions = parsers() if functions is None else functions
    payload = {
        "tables": [
            {
                "name": "StrongDMAudit_CL",
                "schema": "(" + ", ".join(f"['{n}']:{t}" for n, t in columns.items()) + ")",
            }
        ],
        "functions": [
            {"name": name, "parameters": f"({parameter_list(p)})", "body": "{\n" + p["ParserQuery"] + "\n}"}
            for name, p in functions.items()
        ],
        "queries": queries,
    }
    proc = subprocess.run(
        [node, str(script)],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"Kusto.Language check failed:\n{proc.stderr[-3000:]}")
    result: dict[str, dict[str, Any]] = json.loads(proc.stdout)
    return result


def main() -> None:
    ARM.write_text(arm_text())
    print(f"wrote {ARM.relative_to(ROOT)} ({len(parsers())} functions)", file=sys.stderr)


if __name__ == "__main__":
    main()
