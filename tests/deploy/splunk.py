"""A small model of Splunk's search-time pipeline, enough to evaluate deploy/splunk's add-on
on the events the splunk_hec sink sends, without a Splunk.

What it models, in Splunk's order (Knowledge Manager Manual, "search-time operations
sequence"): ``REPORT-`` transforms (they run *before* automatic key-value extraction, so they
only see ``_raw`` and the event's metadata), ``KV_MODE = json``, ``FIELDALIAS-`` (7.2.4+
semantics: ``AS`` removes the alias when its source field is missing, ``ASNEW`` never
overwrites), every ``EVAL-`` at once on the aliased fields (an EVAL never sees another EVAL's
result; a null result removes the field), then event types and their tags.

Only the forms the add-on uses are understood; anything else raises, so the add-on cannot
grow a construct this model would silently get wrong:

* eval: string, number and ``'quoted field'`` literals, bare field names, ``AND OR NOT``,
  ``== = != < > <= >=``, ``+ - * / .``, and the functions in ``FUNCTIONS``;
* event type searches: ``field=value`` / ``field="value"`` terms with ``*`` wildcards
  (case-insensitive, any value of a multivalue field), ``NOT``, ``OR``, implicit ``AND`` and
  parentheses.

How KV_MODE=json represents a JSON null or an empty string is not something this model can
know, so ``Extraction`` says which way it is taken and the tests run every combination.
"""

from __future__ import annotations

import fnmatch
import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Value = Any  # None | str | float | bool | list[str]
Fields = dict[str, list[str]]


# --- .conf files -----------------------------------------------------------------------------


def read_conf(path: Path) -> dict[str, dict[str, str]]:
    """Stanza -> key -> value, as Splunk reads a .conf file: ``#`` comments, a backslash at the
    end of a line continues the value, keys are case-sensitive, a later key wins."""
    stanzas: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        while line.endswith("\\") and i < len(lines):
            line = line[:-1] + "\n" + lines[i]
            i += 1
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            current = stanzas.setdefault(stripped[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        if not sep or current is None:
            raise ValueError(f"{path.name}: not a key = value line in a stanza: {line!r}")
        current[key.strip()] = value.strip()
    return stanzas


# --- KV_MODE = json --------------------------------------------------------------------------


@dataclass(frozen=True)
class Extraction:
    """How JSON values become field values. Scalars become text (numbers as JSON writes them,
    booleans as ``true``/``false``); objects flatten to ``a.b``, arrays to ``a{}``."""

    null_as_text: bool  # a JSON null: the text "null" (True) or no value at all (False)
    empty_kept: bool  # an empty string: an empty value (True) or no value at all (False)

    def __str__(self) -> str:
        null = "text" if self.null_as_text else "absent"
        return f"null={null},empty={'kept' if self.empty_kept else 'absent'}"


EXTRACTIONS = [Extraction(n, e) for n, e in itertools.product((False, True), repeat=2)]


def json_fields(event: dict[str, Any], how: Extraction) -> Fields:
    fields: Fields = {}

    def scalar(value: Any) -> str | None:
        if value is None:
            return "null" if how.null_as_text else None
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return value if (value or how.empty_kept) else None
        return str(value)

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else key)
        elif isinstance(value, list):
            for item in value:
                walk(item, f"{path}{{}}")
        else:
            text = scalar(value)
            if text is not None:
                fields.setdefault(path, []).append(text)

    walk(event, "")
    return fields


# --- eval expressions ------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<field>'[^']*')
    | (?P<number>\d+(?:\.\d+)?)
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op>==|!=|>=|<=|[=<>+\-*/.(),])
    )""",
    re.VERBOSE,
)


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"eval: cannot read {text[pos : pos + 30]!r}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


def _unquote(literal: str) -> str:
    """An eval string literal: ``\\"`` and ``\\\\`` are escapes, any other backslash is kept
    (Splunk passes ``"\\d"`` to the regular expression as it is)."""
    return re.sub(r'\\(["\\])', r"\1", literal[1:-1])


def _number(value: Value) -> float | None:
    if isinstance(value, bool) or value is None or isinstance(value, list):
        return None
    if isinstance(value, float | int):
        return float(value)
    try:
        return float(value)
    except ValueError:
        return None


def _scalar(value: Value) -> Value:
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def _text(value: Value) -> str | None:
    value = _scalar(value)
    if value is None or isinstance(value, list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def _truth(value: Value) -> bool:
    return value is True


def _compare(op: str, left: Value, right: Value) -> bool | None:
    left, right = _scalar(left), _scalar(right)
    if left is None or right is None:
        return None
    a, b = _number(left), _number(right)
    if a is None or b is None:
        a, b = _text(left), _text(right)  # type: ignore[assignment]
    if op in ("==", "="):
        return a == b
    if op == "!=":
        return a != b
    return {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]  # type: ignore[operator]


def _pcre(pattern: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\(\?<(?=[A-Za-z_])", "(?P<", pattern))


def _match(subject: Value, pattern: Value) -> bool | None:
    text = _text(subject)
    return None if text is None else _pcre(str(pattern)).search(text) is not None


def _replace(subject: Value, pattern: Value, replacement: Value) -> str | None:
    text = _text(subject)
    return None if text is None else _pcre(str(pattern)).sub(str(replacement), text)


def _mvindex(value: Value, index: Value) -> Value:
    if value is None:
        return None
    values = value if isinstance(value, list) else [value]
    i = int(_number(index) or 0)
    return values[i] if -len(values) <= i < len(values) else None


def _len(value: Value) -> float | None:
    text = _text(value)
    return None if text is None else float(len(text))


def _nullif(a: Value, b: Value) -> Value:
    return None if _compare("==", a, b) else a


FUNCTIONS: dict[str, Callable[..., Value]] = {
    "coalesce": lambda *values: next((v for v in values if v is not None), None),
    "nullif": _nullif,
    "match": _match,
    "replace": _replace,
    "mvindex": _mvindex,
    "len": _len,
    "isnull": lambda v: v is None,
    "isnotnull": lambda v: v is not None,
    "null": lambda: None,
    "true": lambda: True,
    "false": lambda: False,
    "lower": lambda v: None if _text(v) is None else _text(v).lower(),  # type: ignore[union-attr]
    "tonumber": _number,
}
LAZY = {"case", "if"}  # evaluate only the branch they take


class _Parser:
    """Precedence, lowest first: OR, AND, NOT, comparison, + - ., * /."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.pos = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise ValueError(f"eval: expected {value!r} at {token!r}")
        self.pos += 1
        return token

    def parse(self) -> Callable[[Fields], Value]:
        node = self.or_()
        if self.peek() is not None:
            raise ValueError(f"eval: unexpected {self.peek()!r}")
        return node

    def _keyword(self, word: str) -> bool:
        token = self.peek()
        if token is not None and token[0] == "name" and token[1] == word:
            self.pos += 1
            return True
        return False

    def or_(self) -> Callable[[Fields], Value]:
        node = self.and_()
        while self._keyword("OR"):
            left, right = node, self.and_()
            node = lambda f, a=left, b=right: _truth(a(f)) or _truth(b(f))  # noqa: E731
        return node

    def and_(self) -> Callable[[Fields], Value]:
        node = self.not_()
        while self._keyword("AND"):
            left, right = node, self.not_()
            node = lambda f, a=left, b=right: _truth(a(f)) and _truth(b(f))  # noqa: E731
        return node

    def not_(self) -> Callable[[Fields], Value]:
        if self._keyword("NOT"):
            inner = self.not_()

            def negate(f: Fields) -> Value:
                value = inner(f)
                return None if value is None else not _truth(value)

            return negate
        return self.comparison()

    def comparison(self) -> Callable[[Fields], Value]:
        node = self.additive()
        token = self.peek()
        if token is not None and token[1] in ("==", "=", "!=", "<", ">", "<=", ">="):
            self.pos += 1
            left, right, op = node, self.additive(), token[1]
            node = lambda f, a=left, b=right, o=op: _compare(o, a(f), b(f))  # noqa: E731
        return node

    def additive(self) -> Callable[[Fields], Value]:
        node = self.multiplicative()
        while (token := self.peek()) is not None and token[1] in ("+", "-", "."):
            self.pos += 1
            left, right, op = node, self.multiplicative(), token[1]
            node = lambda f, a=left, b=right, o=op: _arith(o, a(f), b(f))  # noqa: E731
        return node

    def multiplicative(self) -> Callable[[Fields], Value]:
        node = self.atom()
        while (token := self.peek()) is not None and token[1] in ("*", "/"):
            self.pos += 1
            left, right, op = node, self.atom(), token[1]
            node = lambda f, a=left, b=right, o=op: _arith(o, a(f), b(f))  # noqa: E731
        return node

    def atom(self) -> Callable[[Fields], Value]:
        kind, value = self.take()
        if kind == "string":
            text = _unquote(value)
            return lambda f: text
        if kind == "number":
            number = float(value)
            return lambda f: number
        if kind == "field":
            return _field_getter(value[1:-1])
        if kind == "op" and value == "(":
            node = self.or_()
            self.take(")")
            return node
        if kind == "name":
            token = self.peek()
            if token is not None and token[1] == "(":
                return self.call(value)
            return _field_getter(value)
        raise ValueError(f"eval: unexpected {value!r}")

    def call(self, name: str) -> Callable[[Fields], Value]:
        self.take("(")
        args: list[Callable[[Fields], Value]] = []
        if self.peek() != ("op", ")"):
            args.append(self.or_())
            while self.peek() == ("op", ","):
                self.pos += 1
                args.append(self.or_())
        self.take(")")
        if name == "if":
            if len(args) != 3:
                raise ValueError("eval: if() takes 3 arguments")
            cond, then, other = args
            return lambda f: then(f) if _truth(cond(f)) else other(f)
        if name == "case":
            if len(args) % 2:
                raise ValueError("eval: case() takes condition, value pairs")
            pairs = list(zip(args[::2], args[1::2], strict=True))

            def case(f: Fields) -> Value:
                return next((value(f) for cond, value in pairs if _truth(cond(f))), None)

            return case
        if name not in FUNCTIONS:
            raise ValueError(f"eval: function {name}() is not modelled")
        function = FUNCTIONS[name]
        return lambda f: function(*(arg(f) for arg in args))


def _field_getter(name: str) -> Callable[[Fields], Value]:
    def get(fields: Fields) -> Value:
        values = fields.get(name)
        if not values:
            return None
        return values[0] if len(values) == 1 else list(values)

    return get


def _arith(op: str, left: Value, right: Value) -> Value:
    if op == ".":
        a, b = _text(left), _text(right)
        return None if a is None or b is None else a + b
    x, y = _number(left), _number(right)
    if x is None or y is None:
        if op == "+" and _text(left) is not None and _text(right) is not None:
            return f"{_text(left)}{_text(right)}"
        return None
    if op == "/":
        return None if y == 0 else x / y
    return {"+": x + y, "-": x - y, "*": x * y}[op]


def compile_eval(expression: str) -> Callable[[Fields], Value]:
    return _Parser(expression).parse()


# --- event type searches ---------------------------------------------------------------------

_SEARCH_TOKEN = re.compile(
    r'\s*(\(|\)|(?P<field>[A-Za-z_][\w.{}]*)=(?P<value>"(?:[^"\\]|\\.)*"|[^\s()]+)|\S+)'
)


def compile_search(search: str) -> Callable[[Fields], bool]:
    tokens: list[str | tuple[str, str]] = []
    pos = 0
    while pos < len(search.strip()):
        match = _SEARCH_TOKEN.match(search, pos)
        if match is None:
            break
        pos = match.end()
        if match.group("field"):
            value = match.group("value")
            tokens.append((match.group("field"), _unquote(value) if value.startswith('"') else value))
        else:
            tokens.append(match.group(1))
    position = 0

    def peek() -> str | tuple[str, str] | None:
        return tokens[position] if position < len(tokens) else None

    def expression() -> Callable[[Fields], bool]:  # OR of ANDs
        nonlocal position
        terms = [conjunction()]
        while peek() == "OR":
            position += 1
            terms.append(conjunction())
        return lambda f: any(t(f) for t in terms)

    def conjunction() -> Callable[[Fields], bool]:
        nonlocal position
        terms = [unary()]
        while (token := peek()) is not None and token not in ("OR", ")"):
            if token == "AND":
                position += 1
            terms.append(unary())
        return lambda f: all(t(f) for t in terms)

    def unary() -> Callable[[Fields], bool]:
        nonlocal position
        token = peek()
        position += 1
        if token == "NOT":
            inner = unary()
            return lambda f: not inner(f)
        if token == "(":
            inner = expression()
            if peek() != ")":
                raise ValueError(f"search: missing ) in {search!r}")
            position += 1
            return inner
        if isinstance(token, tuple):
            field, pattern = token
            return lambda f: any(fnmatch.fnmatchcase(v.lower(), pattern.lower()) for v in f.get(field, []))
        raise ValueError(f"search: {token!r} is not modelled (in {search!r})")

    node = expression()
    if position != len(tokens):
        raise ValueError(f"search: unexpected {peek()!r} in {search!r}")
    return node


# --- the add-on ------------------------------------------------------------------------------


@dataclass
class Result:
    fields: Fields
    eventtypes: set[str]
    tags: set[str]

    def value(self, name: str) -> str | list[str] | None:
        values = self.fields.get(name)
        if not values:
            return None
        return values[0] if len(values) == 1 else values


class AddOn:
    """The search-time knowledge of one app directory's default/ for one sourcetype."""

    def __init__(self, app: Path, sourcetype: str) -> None:
        default = app / "default"
        self.sourcetype = sourcetype
        props = read_conf(default / "props.conf")
        self.props = props[sourcetype]
        transforms = read_conf(default / "transforms.conf")
        self.reports: list[tuple[str, re.Pattern[str], list[tuple[str, int]]]] = []
        for key in sorted(k for k in self.props if k.startswith("REPORT-")):
            for name in (n.strip() for n in self.props[key].split(",")):
                stanza = transforms[name]
                unknown = set(stanza) - {"SOURCE_KEY", "REGEX", "FORMAT"}
                if unknown:
                    raise ValueError(f"transforms.conf [{name}]: {unknown} not modelled")
                outputs = [
                    (field, int(group)) for field, group in re.findall(r"(\w+)::\$(\d+)", stanza["FORMAT"])
                ]
                self.reports.append((stanza.get("SOURCE_KEY", "_raw"), _pcre(stanza["REGEX"]), outputs))
        self.aliases: list[tuple[str, str, bool]] = []
        for key in sorted(k for k in self.props if k.startswith("FIELDALIAS-")):
            words = self.props[key].split()
            for source, verb, target in zip(words[::3], words[1::3], words[2::3], strict=True):
                if verb not in ("AS", "ASNEW"):
                    raise ValueError(f"{key}: {verb!r}")
                self.aliases.append((source, target, verb == "ASNEW"))
        self.evals = {
            key.removeprefix("EVAL-"): compile_eval(value)
            for key, value in self.props.items()
            if key.startswith("EVAL-")
        }
        modelled = ("REPORT-", "FIELDALIAS-", "EVAL-")
        plain = {"description", "category", "pulldown_type", "KV_MODE", "SHOULD_LINEMERGE", "TRUNCATE"}
        unknown = {k for k in self.props if not k.startswith(modelled) and k not in plain}
        if unknown or self.props.get("KV_MODE") != "json":
            raise ValueError(f"props.conf [{sourcetype}]: {unknown or 'KV_MODE'} not modelled")
        self.eventtypes = {
            name: compile_search(stanza["search"])
            for name, stanza in read_conf(default / "eventtypes.conf").items()
        }
        self.tags: dict[str, set[str]] = {}
        for header, values in read_conf(default / "tags.conf").items():
            kind, _, name = header.partition("=")
            if kind != "eventtype" or name not in self.eventtypes:
                raise ValueError(f"tags.conf [{header}]: not an event type of this add-on")
            self.tags[name] = {tag for tag, state in values.items() if state == "enabled"}

    def evaluate(self, raw: str, event: dict[str, Any], how: Extraction) -> Result:
        """The fields, event types and tags Splunk gives ``raw`` (``event`` is its parse)."""
        fields: Fields = {"_raw": [raw], "sourcetype": [self.sourcetype]}
        for source_key, pattern, outputs in self.reports:
            subject = fields.get(source_key)
            match = pattern.search(subject[0]) if subject else None
            if match:
                for field, group in outputs:
                    if match.group(group) is not None:
                        fields[field] = [match.group(group)]
        for name, values in json_fields(event, how).items():
            fields.setdefault(name, values)
        for source, target, new_only in self.aliases:
            if new_only:
                if target not in fields and source in fields:
                    fields[target] = list(fields[source])
            elif source in fields:
                fields[target] = list(fields[source])
            else:
                fields.pop(target, None)
        computed = {name: function(fields) for name, function in self.evals.items()}
        for name, value in computed.items():
            if value is None:
                fields.pop(name, None)
            else:
                fields[name] = list(value) if isinstance(value, list) else [_text(value) or ""]
        eventtypes = {name for name, search in self.eventtypes.items() if search(fields)}
        tags = set().union(*(self.tags.get(name, set()) for name in eventtypes))
        return Result(fields, eventtypes, tags)


def eventtype_searches(app: Path) -> Iterator[tuple[str, str]]:
    for name, stanza in read_conf(app / "default" / "eventtypes.conf").items():
        yield name, stanza["search"]
