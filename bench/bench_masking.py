"""Masking secrets in session content: its cost per query record, and what the alternatives cost.

    .venv/bin/python -m bench.bench_masking [--records 4000] [--rounds 5]

(from the repository root: the secret-bearing texts are tests/formats/masking_corpus.py.)

Two tables. The first is the hot path: ``to_event`` then ``Masker.mask_event`` on query
records, µs per record (CPU time, best of ``--rounds`` passes), for a benign-only mix (SQL
statements of realistic shapes, one SSH start in ten with a capture and its env, as
bench_formats builds them) and for the same mix with 5% of the records carrying a secret
from the corpus (in ``queryBody``, or in the SSH capture's command and env).

The second compares ways to do the masking on single texts, µs per text over the benign
corpus and the secret corpus, with how much of each corpus they get right:

- ``auditstream`` is ``Masker.mask``: lowercase, one search for trigger words, rules only on
  candidates;
- ``no pre-filter`` runs every rule's regex on every text (what the pre-filter saves);
- ``case-insensitive pre-filter`` is the same trigger search done with ``re.IGNORECASE`` on
  the original text instead of a plain search on the lowered copy;
- ``sqlglot tokens`` masks string literals that follow ``IDENTIFIED BY``/``PASSWORD``/
  ``SECRET =`` in sqlglot's token stream (the dialect of the corpus entry), i.e. a literal-
  aware SQL masker; its recall is over the SQL corpus entries only;
- ``sqlparse.parse`` is the parse alone (any sqlparse-based masker costs at least this);
- ``detect-secrets`` is its line scan with the default plugins, flagging only (it does not
  mask, and knows no SQL statement): recall = secret texts flagged, FP = benign texts flagged.

Libraries that are not installed are skipped (they are not dependencies of auditstream).
A benchmark, not a test: it prints numbers and never fails.
"""

from __future__ import annotations

import argparse
import gc
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from auditstream.formats import event_converter
from auditstream.formats.masking import _AWS_HINT, _BUILTIN, _PREFILTER, Masker, _minimal_cover, _secret_spans
from auditstream.sdm.registry import STREAMS
from bench.bench_formats import _queries
from tests.formats.masking_corpus import BENIGN, SECRETS, Secret

# What the hot path sees most: benign statements with no trigger word at all (the pre-filter
# rows are measured on these; the benign corpus is full of trigger words on purpose).
HOT_TEXTS = [
    "SELECT id, email FROM users WHERE id = 42 AND created_at > now() - interval '1d'",
    "INSERT INTO orders (customer_id, amount, status) VALUES (42, 19.99, 'pending') RETURNING id",
    "UPDATE inventory SET quantity = quantity - 1 WHERE sku = 'ABC-123' AND warehouse_id = 7",
    "SELECT o.id, sum(l.amount) FROM orders o JOIN lines l ON l.order_id = o.id GROUP BY o.id LIMIT 50",
    "DELETE FROM sessions WHERE expires_at < now()",
    "bash -l",
    "kubectl get pods -n prod -o wide",
    "BEGIN",
]
SQL_FAMILIES = {"mysql": "mysql", "postgres": "postgres", "mssql": "tsql", "oracle": "oracle"}


def _best(run: Callable[[], object], count: int, rounds: int) -> float:
    """Best µs per item over ``rounds`` passes, in CPU time.

    A pass repeats ``run`` until it has taken at least 50 ms, so that cheap calls (a pre-filter
    over a few texts: microseconds) are not lost in the clock's resolution.
    """
    repeat = 1
    while True:
        start = time.process_time()
        for _ in range(repeat):
            run()
        if time.process_time() - start >= 0.05:
            break
        repeat *= 4
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        start = time.process_time()
        for _ in range(repeat):
            run()
        best = min(best, time.process_time() - start)
    return best / (count * repeat) * 1e6


# ---- the hot path: query records ------------------------------------------------------------


def _with_secrets(records: list[Message], every: int) -> list[Message]:
    """A copy of ``records`` where one in ``every`` carries a secret from the corpus."""
    cls = STREAMS["queries"].record_class
    out = []
    for i, record in enumerate(records):
        if i % every != every // 2:
            out.append(record)
            continue
        secret = SECRETS[(i // every) % len(SECRETS)]
        data = json_format.MessageToDict(record)
        if "capture" in data:  # an SSH session: the secret is in the command and the env
            data["capture"]["command"] = secret.text
            data["capture"]["env"] = {"TERM": "xterm", "PGPASSWORD": "Bench#Env1"}
            data["queryBody"] = '{"command":' + repr(secret.text) + "}"
        else:
            data["queryBody"] = secret.text
        out.append(json_format.ParseDict(data, cls()))
    return out


def hot_path(records: int, rounds: int) -> list[tuple[str, float, float, float]]:
    convert = event_converter(STREAMS["queries"])
    masker = Masker()
    benign = _queries(records)
    mixes = {"benign only": benign, "5% secret-bearing": _with_secrets(benign, 20)}
    rows = []
    for name, mix in mixes.items():

        def normalize(mix: list[Message] = mix) -> None:
            for record in mix:
                convert(record)

        events = [convert(record) for record in mix]

        def mask_only(events: list[dict[str, Any]] = events) -> None:
            for event in events:
                masker.mask_event(event)

        masked = sum(1 for event in events if masker.mask_event(event) is not event)
        assert masked == (0 if name == "benign only" else len(mix) // 20), (name, masked)
        base = _best(normalize, len(mix), rounds)
        extra = _best(mask_only, len(mix), rounds)
        rows.append((name, base, extra, extra / base * 100))
    return rows


# ---- the alternatives on single texts -------------------------------------------------------


def _no_prefilter(text: str) -> bool:
    """Every built-in rule on every text; True if anything would be masked."""
    found = False
    for rule in _BUILTIN:
        if _secret_spans(rule, rule.secret_groups(), text):
            found = True
    return found


_TRIGGERS = sorted(_minimal_cover(t for rule in _BUILTIN for t in rule.triggers), key=len, reverse=True)
_ALTERNATION = "|".join(re.escape(t) for t in _TRIGGERS)
_PREFILTER_I = re.compile(_ALTERNATION, re.IGNORECASE)
_PREFILTER_LOWER = re.compile(_ALTERNATION)


def _prefilter_chosen(text: str) -> bool:
    return _PREFILTER(text.lower()) or _AWS_HINT.search(text) is not None


def _prefilter_ignorecase(text: str) -> bool:
    return _PREFILTER_I.search(text) is not None


def _prefilter_lowered_regex(text: str) -> bool:
    return _PREFILTER_LOWER.search(text.lower()) is not None


_SQL_KEYS = {"PASSWORD", "MASTER_PASSWORD", "SOURCE_PASSWORD", "OLD_PASSWORD", "SECRET"}


def _sqlglot_masker() -> Callable[[str, str], str] | None:
    try:
        from sqlglot.dialects.dialect import Dialect
        from sqlglot.tokens import TokenType  # type: ignore[attr-defined]
    except ImportError:
        return None
    literal = {TokenType.STRING, TokenType.NATIONAL_STRING, TokenType.RAW_STRING, TokenType.HEREDOC_STRING}

    def mask(text: str, dialect: str) -> str:
        try:
            tokens = Dialect.get_or_raise(dialect).tokenize(text)
        except Exception:
            return text
        spans = []
        for i, token in enumerate(tokens):
            if token.token_type not in literal:
                continue
            before = [t.text.upper() for t in tokens[max(0, i - 3) : i]]
            if (
                before[-1:] in (["PASSWORD"], ["REPLACE"])
                or before[-2:] == ["IDENTIFIED", "BY"]
                or before[-3:] == ["BY", "PASSWORD", "="]
                or (len(before) >= 2 and before[-1] == "=" and before[-2] in _SQL_KEYS)
                or (before[-1:] == ["("] and len(before) >= 2 and before[-2] in ("PASSWORD", "OLD_PASSWORD"))
            ):
                spans.append((token.start, token.end + 1))
        for start, end in reversed(spans):
            text = text[:start] + "'[masked]'" + text[end:]
        return text

    return mask


_KEEP: list[Any] = []  # the detect-secrets settings context, kept open (closing it drops the plugins)


def _detect_secrets() -> Callable[[str], bool] | None:
    try:
        from detect_secrets.core.scan import scan_line
        from detect_secrets.settings import default_settings
    except ImportError:
        return None
    _KEEP.append(default_settings())
    _KEEP[-1].__enter__()  # the plugins stay configured for the whole benchmark

    def flagged(text: str) -> bool:
        return any(True for line in text.splitlines() for _ in scan_line(line))

    return flagged


def _sqlparse() -> Callable[[str], object] | None:
    try:
        import sqlparse
    except ImportError:
        return None
    return sqlparse.parse  # type: ignore[no-any-return]


def _recall(entries: Sequence[Secret], masked: Callable[[Secret], str]) -> str:
    good = sum(1 for entry in entries if not any(s in masked(entry) for s in entry.secrets))
    return f"{good}/{len(entries)}"


def alternatives(rounds: int) -> list[tuple[str, float, float, str, str]]:
    """(approach, µs per benign text, µs per secret text, recall, false positives)."""
    masker = Masker()
    secrets = [entry.text for entry in SECRETS]
    rows: list[tuple[str, float, float, str, str]] = []

    def timed(fn: Callable[[str], object]) -> tuple[float, float]:
        return (
            _best(lambda: [fn(t) for t in BENIGN], len(BENIGN), rounds),
            _best(lambda: [fn(t) for t in secrets], len(secrets), rounds),
        )

    benign_us, secret_us = timed(masker.mask)
    fp = sum(1 for t in BENIGN if masker.mask(t)[1])
    rows.append(
        (
            "auditstream (regex rules, pre-filter)",
            benign_us,
            secret_us,
            _recall(SECRETS, lambda e: masker.mask(e.text)[0]),
            f"{fp}/{len(BENIGN)}",
        )
    )
    benign_us, secret_us = timed(_no_prefilter)
    rows.append(("same rules, no pre-filter", benign_us, secret_us, "same", "same"))
    prefilters: list[tuple[str, Callable[[str], bool]]] = [
        ("pre-filter alone: `in` chain on lowered text (chosen)", _prefilter_chosen),
        ("pre-filter alone: regex alternation on lowered text", _prefilter_lowered_regex),
        ("pre-filter alone: regex alternation, re.IGNORECASE", _prefilter_ignorecase),
    ]
    for name, prefilter in prefilters:

        def run(prefilter: Callable[[str], bool] = prefilter) -> None:
            for text in HOT_TEXTS:
                prefilter(text)

        benign_us = _best(run, len(HOT_TEXTS), rounds)
        rows.append((name + " *", benign_us, float("nan"), "-", "-"))

    sqlglot_mask = _sqlglot_masker()
    if sqlglot_mask is not None:
        sql = [e for e in SECRETS if e.family in SQL_FAMILIES]
        sql_texts = [(e.text, SQL_FAMILIES[e.family]) for e in sql]
        benign_us = _best(lambda: [sqlglot_mask(t, "postgres") for t in BENIGN], len(BENIGN), rounds)
        secret_us = _best(lambda: [sqlglot_mask(t, d) for t, d in sql_texts], len(sql_texts), rounds)
        fp = sum(1 for t in BENIGN if sqlglot_mask(t, "postgres") != t)
        regex_sql = _recall(sql, lambda e: masker.mask(e.text)[0])
        rows.append(
            (
                f"sqlglot tokens (SQL only; regex: {regex_sql})",
                benign_us,
                secret_us,
                _recall(sql, lambda e: sqlglot_mask(e.text, SQL_FAMILIES[e.family])),
                f"{fp}/{len(BENIGN)}",
            )
        )
    parse = _sqlparse()
    if parse is not None:
        benign_us, secret_us = timed(parse)
        rows.append(("sqlparse.parse alone (no masking)", benign_us, secret_us, "-", "-"))
    flagged = _detect_secrets()
    if flagged is not None:
        benign_us, secret_us = timed(flagged)
        found = sum(1 for t in secrets if flagged(t))
        fp = sum(1 for t in BENIGN if flagged(t))
        rows.append(
            (
                "detect-secrets scan_line (flags only)",
                benign_us,
                secret_us,
                f"{found}/{len(secrets)} flagged",
                f"{fp}/{len(BENIGN)}",
            )
        )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=4000, help="query records per mix (default 4000)")
    parser.add_argument("--rounds", type=int, default=5, help="passes per cell; the best is kept (default 5)")
    args = parser.parse_args(argv)

    # Starts with the table: bench/__main__ keeps Markdown output as it is in BENCHMARKS.md.
    print("| query records (µs per record) | to_event | + mask_event | mask_event vs to_event |")
    print("| --- | ---: | ---: | ---: |")
    for name, base, extra, share in hot_path(args.records, args.rounds):
        print(f"| {name} | {base:.2f} | {extra:.2f} | {share:.0f}% |")
    print(
        f"\nMasking on the query hot path: CPU time, best of {args.rounds} passes x {args.records} records."
    )
    print(
        f"\nAlternatives on single texts: {len(BENIGN)} benign and {len(SECRETS)} secret-bearing texts of "
        "tests/formats/masking_corpus.py, µs per text; recall = secret texts with no secret left\n"
    )
    print("| approach | µs per benign text | µs per secret text | recall | false positives |")
    # (rows marked * are measured on typical statements without any trigger word, HOT_TEXTS)
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, benign_us, secret_us, recall, fp in alternatives(args.rounds):
        secret_cell = "-" if secret_us != secret_us else f"{secret_us:.1f}"
        print(f"| {name} | {benign_us:.1f} | {secret_cell} | {recall} | {fp} |")
    for context in _KEEP:  # close detect-secrets' settings before the interpreter shuts down
        context.__exit__(None, None, None)
    _KEEP.clear()


if __name__ == "__main__":
    main()
