"""CEF extension rendering: the reference rules, and a fast renderer generated per layout.

``render_extension`` states the rules once, plainly: ``key=value`` pairs joined by spaces,
empty values skipped, numeric keys only for integers, values cut to their dictionary length
and escaped (``cef_escape``), a label written right before its field.

``renderer_for(layout)`` returns a function with the same output for a mapper's value tuples
(the tests compare the two on hostile values), generated from the layout with ``exec`` so
that each extension key costs a few bytecodes instead of a loop iteration. The profile of
this path is flat interpreter overhead (some 50-70 machine instructions per bytecode), so
the renderer saves bytecodes wherever it can:

- a *group* of values that repeat together (the verb and its outcome, the actor's email and
  id; ``Layout``) is rendered by ``render_extension`` once per distinct combination and then
  looked up in a dict keyed by the values (bounded by ``cache.remember``). Only combinations
  of plain strings (or None) are remembered, so a cached text never stands for a number or
  list that compares equal;
- a value that differs on nearly every event (ids, descriptions, query bodies) is written
  as ``prefix + value`` (escaped when it holds a character to escape) when it is a plain
  string within its limit, and by ``render_extension`` otherwise;
- numbers are written only when they are integers (not booleans).

The generated source is readable with ``source_of(layout)``.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import add
from typing import Any

import orjson

from auditstream.formats import cef_escape
from auditstream.formats.cache import remember
from auditstream.formats.cef_escape import escape_extension, needs_extension_escape, truncate
from auditstream.formats.cef_mapping import Layout, Pairs, Values

Renderer = Callable[[Values, Values], str]

PLAIN_LAYOUT = Layout({})
_SEP = "\x00"


def render_extension(strings: Pairs, numbers: Pairs, layout: Layout = PLAIN_LAYOUT) -> str:
    """``key=value`` pairs joined by spaces: empty values skipped, lengths cut, values escaped.

    The reference form of the extension rules (``renderer_for`` gives the fast form used per
    event). Numeric keys (times, counts, ports) take integers only: a value that is not one
    (for instance a field replaced by its hash) is left out, never mistyped. A field with a
    label is written as ``<key>Label=<label> <key>=<value>``. All values are escape-checked
    at once, joined by NUL (escaping them together when no value holds a NUL itself).
    """
    parts = [f"{layout.field(key)[1]}{value}" for key, value in numbers if type(value) is int]
    prefixes: list[str] = []
    values: list[str] = []
    for key, value in strings:
        if not value:
            continue
        limit, prefix = layout.field(key)
        if not isinstance(value, str):
            value = _as_text(value)
        if len(value) > limit:
            value = _cut(key, value, limit)
        prefixes.append(prefix)
        values.append(value)
    joined = _SEP.join(values)
    if needs_extension_escape(joined):
        if joined.count(_SEP) == len(values) - 1:
            values = escape_extension(joined).split(_SEP)
        else:
            values = [escape_extension(value) for value in values]
    parts.extend(map(add, prefixes, values))
    return " ".join(parts)


def _cut(key: str, value: str, limit: int) -> str:
    return cef_escape.short_id(value, limit) if key == "externalId" else truncate(value, limit)


def _as_text(value: Any) -> str:
    """A non-text value in a string field: booleans and numbers as text, the rest as JSON."""
    if type(value) is bool:
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value, default=str).decode("utf-8")


def renderer_for(layout: Layout) -> Renderer:
    """The generated renderer of a layout (built on first use, then kept on the layout)."""
    if layout.renderer is None:
        source, namespace = _generate(layout)
        exec(compile(source, f"<cef renderer {layout.name}>", "exec"), namespace)  # see module docstring
        layout.renderer = namespace["render"]
        layout.renderer_source = source
    renderer: Renderer = layout.renderer
    return renderer


def source_of(layout: Layout) -> str:
    """The generated source of a layout's renderer."""
    renderer_for(layout)
    return str(layout.renderer_source)


def _generate(layout: Layout) -> tuple[str, dict[str, Any]]:
    """Source of ``render(numbers, strings)``: one local per key or group, one join at the end."""
    namespace: dict[str, Any] = {
        "_layout": layout,
        "_group": _render_group,
        "_one": _render_one,
        "_escape": escape_extension,
    }
    lines = ["def render(numbers, strings):"]
    segments: list[str] = []
    if layout.number_keys:
        names = [f"n{i}" for i in range(len(layout.number_keys))]
        lines.append(f"    {', '.join(names)}, = numbers")
        for name, prefix in zip(names, layout.number_prefixes, strict=True):
            lines.append(f"    {name} = {prefix!r} + str({name}) if type({name}) is int else None")
            segments.append(name)
    if layout.constants:
        segments.append(repr(render_extension(list(layout.constants), [], layout)))
    groups = [f"g{i}" for i in range(len(layout.groups))]
    lines.append(f"    {', '.join(groups)}, = strings")
    for number, (start, stop, cache) in enumerate(layout.groups):
        keys = ", ".join(layout.string_keys[start:stop])
        value, segment = groups[number], f"s{number}"
        segments.append(segment)
        if cache is None:
            lines += [
                f"    if type({value}) is str and len({value}) <= {layout.string_limits[start]}:  # {keys}",
                f"        if '\\\\' in {value} or '=' in {value} or '\\n' in {value} or '\\r' in {value}:",
                f"            {value} = _escape({value})",
                f"        {segment} = {value} and {layout.string_prefixes[start]!r} + {value}",
                "    else:",
                f"        {segment} = {value} and _one({start}, {value}, _layout)",
            ]
            continue
        namespace[f"_cache{number}"] = cache
        namespace[f"_get{number}"] = cache.get
        lines += [
            f"    try:  # {keys}",
            f"        {segment} = _get{number}({value})",
            "    except TypeError:  # an unhashable value, e.g. a list where text was expected",
            f"        {segment} = None",
            f"    if {segment} is None:  # not seen yet (no exception: misses must stay cheap)",
            f"        {segment} = _group({value}, {start}, {stop}, _cache{number}, _layout)",
        ]
    lines.append(f"    return ' '.join(filter(None, ({', '.join(segments)},)))")
    return "\n".join(lines) + "\n", namespace


def _render_one(index: int, value: Any, layout: Layout) -> str:
    """One per-event value that is not plain, short, escape-free text: the reference rules."""
    return render_extension([(layout.string_keys[index], value)], [], layout)


def _render_group(key: Any, start: int, stop: int, cache: dict[Any, str], layout: Layout) -> str:
    """Render a group seen for the first time, and remember it if its values are plain text.

    Text values within their limits (the usual case) are written here directly, as the
    reference rules would write them; anything else (numbers, lists, text over its limit)
    goes through ``render_extension``.
    """
    values = (key,) if stop == start + 1 else key
    parts = []
    for index, value in enumerate(values, start):
        if not value:
            continue
        if type(value) is not str or len(value) > layout.string_limits[index]:
            pairs = list(zip(layout.string_keys[start:stop], values, strict=True))
            segment = render_extension(pairs, [], layout)
            break
        if "\\" in value or "=" in value or "\n" in value or "\r" in value:
            value = escape_extension(value)
        parts.append(layout.string_prefixes[index] + value)
    else:
        segment = " ".join(parts)
    if _TEXT_OR_NONE.issuperset(map(type, values)):
        remember(cache, key, segment)
    return segment


_TEXT_OR_NONE = frozenset({str, type(None)})
