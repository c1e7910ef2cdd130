"""An OCSF release compiled from its sources by ocsf-lib, in the shape of the OCSF server's
export (what ``ocsf-json-schema`` turns into JSON Schema), a cross-check of
``test_ocsf.py`` run by hand, since CI has no ocsf-schema checkout (the tests validate against
the official exports the pinned ``ocsf-json-schema`` package ships)::

    PYTHONPATH=. .venv/bin/python -m tests.formats.ocsf_lib_schema /path/to/ocsf-schema  # a release tag

ocsf-lib 0.10.4's output differs from the server's export in ways corrected here, each
checked against the release's own ``events/*.json`` and ``objects/*.json``:

* object-typed attributes keep the object's name as ``type`` (its ``set_object_types`` step
  tests ``type[:-2] == "_t"`` and so never runs): they become ``object_t`` + ``object_type``;
* an attribute a class declares with ``"profile": null`` (Datastore Activity's ``actor``,
  API Activity's ``api``, the IAM classes' ``actor``) stays marked as its profile's;
* objects inherit their base's ``at_least_one`` (``user``, ``network_endpoint`` and
  ``managed_entity`` get ``_entity``'s "name or uid"): an object's own constraints win;
* ``"@deprecated": null``, ``"constraints": null`` (and a data type's ``"regex": null``...)
  are written on everything, where the export leaves them out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def compiled_export(checkout: Path) -> dict[str, Any]:
    from ocsf.compile.compiler import Compilation
    from ocsf.compile.options import CompilationOptions
    from ocsf.repository import read_repo
    from ocsf.schema import to_json

    options = CompilationOptions(ignore_extensions=["linux", "macos", "windows"])
    schema = json.loads(
        to_json(Compilation(read_repo(str(checkout), preserve_raw_data=False), options).build())
    )
    sources = _sources(checkout)
    schema["types"] = {
        name: {k: v for k, v in spec.items() if v is not None} for name, spec in schema["types"].items()
    }
    for name, cls in schema["classes"].items():
        _fix_attributes(cls, schema["objects"])
        for attr in _explicitly_profile_free(sources["events"], name):
            if attr in cls["attributes"]:
                cls["attributes"][attr]["profile"] = None
        _fix_constraints(cls, None)
    for name, obj in schema["objects"].items():
        _fix_attributes(obj, schema["objects"])
        _fix_constraints(obj, sources["objects"].get(name))
    return schema


def _sources(checkout: Path) -> dict[str, dict[str, dict[str, Any]]]:
    found: dict[str, dict[str, dict[str, Any]]] = {"events": {}, "objects": {}}
    for kind in found:
        for path in (checkout / kind).rglob("*.json"):
            data = json.loads(path.read_text())
            if "name" in data:
                found[kind][data["name"]] = data
    return found


def _explicitly_profile_free(events: dict[str, dict[str, Any]], name: str) -> set[str]:
    """Attributes the class or one of the classes it extends declares with ``"profile": null``."""
    free: set[str] = set()
    seen = set()
    while name in events and name not in seen:
        seen.add(name)
        data = events[name]
        for attr, spec in (data.get("attributes") or {}).items():
            if isinstance(spec, dict) and "profile" in spec and spec["profile"] is None:
                free.add(attr)
        name = data.get("extends", "")
    return free


def _fix_attributes(defn: dict[str, Any], objects: dict[str, Any]) -> None:
    defn.pop("@deprecated", None) if defn.get("@deprecated") is None else None
    for spec in defn.get("attributes", {}).values():
        kind = spec.get("type")
        if isinstance(kind, str) and not kind.endswith("_t") and kind in objects:
            spec["type"], spec["object_type"] = "object_t", kind
        if spec.get("@deprecated", 0) is None:
            del spec["@deprecated"]


def _fix_constraints(defn: dict[str, Any], source: dict[str, Any] | None) -> None:
    if source is not None and source.get("constraints"):
        defn["constraints"] = source["constraints"]
    elif source is not None and defn.get("extends") not in (None, "object"):
        defn.pop("constraints", None)  # not the object's own: inherited from its base
    if not defn.get("constraints"):
        defn.pop("constraints", None)


def main() -> int:
    """Validate every event of the corpus against the release compiled from ``argv[1]``."""
    import sys

    from tests.formats.test_ocsf import Schema, encoded

    raw = compiled_export(Path(sys.argv[1]))
    release = Schema(raw)
    documents = encoded(raw["version"]).items()
    problems = {name: found for name, doc in documents if (found := release.problems(doc))}
    for name, found in list(problems.items())[:10]:
        print(name, found[:5])
    print(f"OCSF {raw['version']} compiled by ocsf-lib: {len(problems)} events refused")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
