"""Masking secrets inside session content: the secret goes, the statement's skeleton stays.

Query bodies, SSH/Kubernetes captures, activity descriptions and replay text go to SIEMs
verbatim and are kept there for a year; an ``ALTER USER app IDENTIFIED BY 'Winter2026!'`` or
a ``mysql -uroot -pS3cret`` must not. Per-field redaction (``redaction``) can only drop or
hash a whole field, which loses the statement an analyst needs; masking replaces just the
secret, ``ALTER USER app IDENTIFIED BY '[masked]'``, and names the rules that fired in the
event's ``maskedSecrets`` field so a search can find sessions that handled credentials.

Built-in rules (docs/masking.md lists each with an example) cover SQL credential statements
of MySQL, PostgreSQL, SQL Server, Oracle, Redis and MongoDB; URL userinfo and command-line
passwords; HTTP authorization headers, AWS keys, JWTs, PEM private keys and generic
``password=``/``token:`` assignments. Operators add their own as ``[[normalize.mask]]``
(``MaskRule``). Quoted secrets keep their quotes (``'[masked]'``), so a masked statement still
reads as the statement it was.

False positives are treated as bugs as much as leaks: a benign statement must come through
byte for byte (and as the same object). So values that are not secrets are left alone:
parameters and variables (``$1``, ``?``, ``:name``, ``%s``, ``$PGPASS``, ``${X}``,
``{{ tmpl }}``), ``NULL``/``true``/``false``, placeholders (``<password>``, ``***``), column
names that merely contain a keyword (``password_reset_at``, ``password_hash``), and bare
values after a spaced ``=`` unless the line is an ``ini`` assignment (``WHERE s.token =
t.token`` is a join, not a secret). Hashes and UUIDs are not masked unless they stand in a
credential position (``IDENTIFIED BY PASSWORD '*hash'``, ``password = '<bcrypt>'``): a hash
in a result or a column comparison is data, and masking every 64-hex string would hide
commit ids and checksums. Command-line ``-p`` is a password only for programs where it is
(mysql family glued, ``sshpass``, ``docker login``, ``mongosh``, ``sqlcmd -P``...): ``psql -p
5432``, ``ssh -p 2222`` and ``docker run -p 8080:80`` are ports.

Why regexes and not a SQL parser: the rules are quote-aware literal patterns (doubled
quotes, backslash escapes, ``E''``/``N''``/``_utf8mb4''`` prefixes, dollar quoting), which is
what a tokenizer would bring, and half the inputs (shell commands, Redis, Mongo, HTTP, env)
are not SQL at all. bench/bench_masking.py, on a 2-core machine: masking adds ~2 µs to a
benign query record (to_event alone ~8 µs; the hot path's budget is ~50 µs all in) and ~5
µs to a mix with 5% secret-bearing records. sqlglot's tokenizer with a literal-after-keyword
masker costs ~30 µs per text and caught 58 of the 93 SQL corpus cases the regexes all catch
(it misses unquoted and double-quoted Oracle passwords, backtick and escaped literals the
dialect tokenizes differently, conninfo strings inside literals, hashing-function arguments
and ``CONNECT user/pw``: a literal-after-keyword rule needs as much care as a regex, and costs
more); ``sqlparse.parse`` alone costs ~280 µs.
detect-secrets' line scan costs ~120 µs, only flags (no masking), and flagged 127 of the 131
benign texts. So: regexes, with the pre-filter below.

Cost: ``mask`` lowercases the text once and tests it for the rules' trigger words
(``identified``, ``pass``, ``auth``, ``://``, ``-p``, ``eyj``..., the smallest set that covers
every rule) with one compiled ``in``-chain, plus one case-sensitive search for AWS key id
prefixes; a text with none of them returns at once (~1 µs for a typical statement: a regex
alternation of the same words measured ~1.2 µs, ~9 µs with ``re.IGNORECASE``). On a
candidate, each rule runs only if one of its own triggers is present. Custom rules have no
triggers and run on every value.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, unquote_plus

from pydantic import BaseModel, ConfigDict, model_validator

__all__ = ["MASK", "MASKED_FIELD", "MaskRule", "Masker", "builtin_rule_names"]

MASK = "[masked]"
MASKED_FIELD = "maskedSecrets"

# Event fields holding free text, at the top level of the event.
TEXT_FIELDS = ("queryBody", "description", "text")
# Fields of ``capture`` (SSH / Kubernetes sessions) holding free text.
CAPTURE_TEXT_FIELDS = ("command", "clientCommand", "requestUri")

# ---------------------------------------------------------------------------------------------
# Building blocks. Secret groups are named ``q<tag>`` (the content of a quoted literal: the
# quotes stay) or ``b<tag>`` (a bare value); every group whose name starts with q or b and that
# took part in a match is masked. A pattern using a block twice passes distinct tags.
# ---------------------------------------------------------------------------------------------


def _quoted(tag: str, *, dollar: bool = False, backtick: bool = True) -> str:
    """Quoted literal alternatives: '..' (SQL '' and backslash escapes, E/N/_charset
    prefixes), "..", `..`, a JSON-escaped \\"..\\" and optionally PostgreSQL dollar quoting."""
    alts = [
        rf"(?:[EeNn]|_[A-Za-z0-9]+)?'(?P<q{tag}s>(?:[^'\\]|\\[\s\S]|'')*)'",
        rf"\\\"(?P<q{tag}j>(?:[^\"\\]|\\(?!\")[\s\S])*)\\\"",
        rf"\"(?P<q{tag}d>(?:[^\"\\]|\\[\s\S]|\"\")*)\"",
    ]
    if backtick:
        alts.append(rf"`(?P<q{tag}t>(?:[^`\\]|\\[\s\S]|``)*)`")
    if dollar:
        alts.append(rf"\$\$(?P<q{tag}a>[\s\S]*?)\$\$")
        alts.append(rf"\$(?P<t{tag}>[A-Za-z_]\w*)\$(?P<q{tag}b>[\s\S]*?)\$(?P=t{tag})\$")
    return "(?:" + "|".join(alts) + ")"


def _value(tag: str, bare: str | None, *, dollar: bool = False, backtick: bool = True) -> str:
    """A quoted literal, or (if ``bare`` is given) an unquoted value matching ``bare``."""
    quoted = _quoted(tag, dollar=dollar, backtick=backtick)
    if bare is None:
        return quoted
    return f"(?:{quoted}|(?P<b{tag}>{bare}))"


# Unquoted values: Oracle-style identifiers (a bind ``:x``, ``?`` or ``$1`` is not one),
# shell words (stop at shell syntax), generic assignment values, URL query values.
ORACLE_BARE = r"(?![?:$@%])[\w$#]+"
SHELL_BARE = r"[^\s'\"`;&|<>()]+"
GENERIC_BARE = r"[^\s'\"`,;&|()}]+"
QUERY_BARE = r"[^&#\s'\"]+"
# The rest of a SQL statement: up to a ';' outside quotes (or the end of the text).
STMT_REST = (
    r"(?:[^;'\"`$]++|'(?:[^'\\]|\\[\s\S]|'')*+'|\"(?:[^\"\\]|\\[\s\S]|\"\")*+\"|`[^`]*+`"
    r"|\$(?P<dtag>[A-Za-z_]\w*|)\$[\s\S]*?\$(?P=dtag)\$|\$)*+"
)
OPTION_LIST = r"\((?:[^)'\"]++|'(?:[^'\\]|\\[\s\S]|'')*+'|\"(?:[^\"\\]|\\[\s\S]|\"\")*+\")*+\)?"

# Values that stand for a secret without being one: parameters, variables, templates, nulls.
_PLACEHOLDER_QUOTED = re.compile(
    r"(?:\$\{?[A-Za-z_]\w*\}?|\$\(.*\)|\{\{.*\}\}|\*+|\?|%s|\[masked\]|)", re.DOTALL
)
_PLACEHOLDER_BARE = re.compile(
    r"(?:\$\{?\w+\}?|\$\(.*\)|\?|:\w+|%s|%\(\w+\)s|@\w+|\{\{.*\}\}|\{\w*\}|<[^>]*>|\*+"
    r"|null|none|nil|true|false|~|\[masked\])",
    re.IGNORECASE | re.DOTALL,
)

Accept = Callable[[re.Match[str], str, str], bool]


@dataclass(frozen=True)
class _Rule:
    """One compiled rule: where to look, which groups are secrets, what to reject.

    ``region``: when set, ``pattern`` runs only inside each region match (the statement or
    option list that gives a ``PASSWORD`` its meaning). ``accept(match, group, value)`` may
    refuse a candidate value (a spaced SQL comparison, a path after ``PWD=``).
    """

    name: str
    pattern: re.Pattern[str]
    triggers: tuple[str, ...] = ()
    region: re.Pattern[str] | None = None
    accept: Accept | None = None

    def secret_groups(self) -> tuple[str, ...]:
        return tuple(n for n in self.pattern.groupindex if n[0] in "qb")


def _accept_all(_match: re.Match[str], _group: str, _value: str) -> bool:
    return True


def _compile(pattern: str, *, case: bool = False, multiline: bool = False) -> re.Pattern[str]:
    flags = 0 if case else re.IGNORECASE
    if multiline:
        flags |= re.MULTILINE
    return re.compile(pattern, flags)


# ---- SQL credential statements --------------------------------------------------------------

_IDENTIFIED = _compile(
    r"\bIDENTIFIED\s+"
    r"(?:"
    # MySQL 5.7+/8: IDENTIFIED WITH <password plugin> AS '<hash>' (a hash is a usable credential)
    r"WITH\s+['\"`]?\w*password\w*['\"`]?\s+AS\s+" + _value("a", None) + r"|"
    r"(?:WITH\s+(?:'[^']*'|\"[^\"]*\"|`[^`]*`|\w+)\s+)?BY\s+(?:PASSWORD\s+|VALUES\s+)?"
    r"(?!RANDOM\s+PASSWORD\b)" + _value("b", ORACLE_BARE) + r")"
    # MySQL 8 and Oracle: ... REPLACE '<current password>'
    r"(?:\s+REPLACE\s+" + _value("c", ORACLE_BARE) + r")?"
)
_SET_PASSWORD = _compile(
    r"(?:^|(?<=;))\s*SET\s+PASSWORD\b(?:\s+FOR\s+[^=;]+?)?\s*=\s*"
    r"(?:(?:OLD_)?PASSWORD\s*\(\s*" + _value("a", None) + r"\s*\)|" + _value("b", None) + r")"
    r"(?:\s+REPLACE\s+" + _value("c", None) + r")?",
    multiline=True,  # at a statement's start: "UPDATE users SET password = ..." is a column
)
_REPLICATION_REGION = _compile(
    r"\b(?:CHANGE\s+(?:MASTER|REPLICATION\s+SOURCE)\s+TO|START\s+(?:REPLICA|SLAVE|GROUP_REPLICATION))\b"
    + STMT_REST
)
_REPLICATION = _compile(r"\b(?:MASTER_|SOURCE_)?PASSWORD\s*=\s*" + _value("a", None))
_OPTIONS_REGION = _compile(r"\bOPTIONS\s*" + OPTION_LIST)
_OPTIONS = _compile(r"(?:\b|\")PASSWORD\"?\s+" + _value("a", None, dollar=True))
_ROLE_REGION = _compile(r"\b(?:CREATE|ALTER)\s+(?:ROLE|USER|GROUP)\b" + STMT_REST)
_ROLE = _compile(r"\b(?:(?:UN)?ENCRYPTED\s+)?PASSWORD\s+" + _value("a", None, dollar=True))
_LIBPQ_KV = (
    r"\b(?:host|hostaddr|port|dbname|user|password|sslmode|application_name|connect_timeout|"
    r"service|options|target_session_attrs|sslrootcert|channel_binding)\s*=\s*"
    r"(?:''(?:[^']|'''')*''|'(?:[^'\\]|\\.)*'|[^\s'\"&]*)"
)
# A conninfo string: at least two key=value pairs separated by blanks.
_LIBPQ_REGION = _compile(_LIBPQ_KV + r"(?:[ \t]+" + _LIBPQ_KV + r")+")
_LIBPQ = _compile(
    r"\bpassword\s*=\s*(?:''(?P<qad>(?:[^']|'''')*)''|'(?P<qas>(?:[^'\\]|\\.)*)'|(?P<ba>[^\s'\"]+))"
)
_MSSQL_REGION = _compile(
    r"\b(?:CREATE|ALTER|OPEN|BACKUP|RESTORE|ADD)\b" + STMT_REST,
)
_MSSQL = _compile(
    r"(?:\bWITH\s+|\bBY\s+|,\s*|(?=\bOLD_PASSWORD\b))"
    r"(?:OLD_PASSWORD|PASSWORD|SECRET)\s*=\s*(?:" + _value("a", None) + r"|(?P<bh>0x[0-9A-F]+))"
)
_REDIS_ARG = r"(?:\"(?:[^\"\\]|\\.)*\"|'[^']*'|\S+)"
_REDIS = _compile(
    r"^[ \t]*AUTH2?[ \t]+"
    r"(?!(?:required|requisite|sufficient|optional|include|substack)\b|\[)"
    r"(?:" + _REDIS_ARG + r"[ \t]+)?" + _value("a", r"[^\s'\"]+", backtick=False) + r"[ \t]*;?[ \t]*$"
    r"|\bHELLO\s+\d+\s+AUTH\s+"
    + _REDIS_ARG
    + r"\s+"
    + _value("b", r"[^\s'\"]+", backtick=False)
    + r"|\bCONFIG\s+SET\s+(?:requirepass|masterauth)\s+"
    + _value("c", r"[^\s'\"]+", backtick=False),
    multiline=True,
)
_MONGO = _compile(
    r"(?<![\w$])[\"']?pwd[\"']?\s*:\s*"
    + _value("a", None, backtick=False)
    + r"|(?:\bchangeUserPassword|\.auth)\s*\(\s*(?:\"[^\"]*\"|'[^']*')\s*,\s*"
    + _value("b", None, backtick=False)
)
_ORACLE_CONNECT = _compile(
    r"^[ \t]*(?:SQL>[ \t]*)?CONN(?:ECT)?[ \t]+[\w$#]+/"
    + _value("a", r"[^\s@'\"]+", backtick=False)
    + r"(?:@\S+)?(?:[ \t]+AS[ \t]+SYS\w+)?[ \t]*;?[ \t]*$",
    multiline=True,
)

# ---- URLs and commands ----------------------------------------------------------------------

# The password may hold a raw '@' or '#' (people paste them unencoded): up to the last '@'.
_URL_USERINFO = _compile(r"\b[a-z][a-z0-9+.-]*://[^\s:/?#@'\"]*:(?P<ba>[^\s/?'\"]+)@")
# Long options whose name ends in a secret word: --password=x, --password x, --api-key x...
_LONG_OPTION = _compile(
    r"(?<![\w-])--(?!no-)(?:[\w-]*-)?(?:password|passwd|pass|pwd|secret|token|api-?key|passphrase)"
    r"(?P<sep>=|[ \t]+)(?!-)" + _value("a", SHELL_BARE)
)
# Programs whose short flag takes the password: mysql family -p<pw> (glued only: "-p 3306"
# makes mysql prompt and read 3306 as a database), others -p/-P/-a with a space or glued.
_SHORT_FLAG = _compile(
    r"(?i:\b(?:mysql\w*|mariadb[\w-]*)\b)[^\n;|&]*?[ \t]-p"
    + _value("a", SHELL_BARE)
    + r"|(?i:\bsshpass\b)(?:[ \t]+-[a-oq-zA-Z]\S*)*[ \t]+-p[ \t]*"
    + _value("b", SHELL_BARE)
    + r"|(?i:\b(?:docker|podman|nerdctl)[ \t]+login\b)[^\n;|&]*?[ \t]-p[ \t]+"
    + _value("c", SHELL_BARE)
    + r"|(?i:\b(?:mongo|mongosh|mongodump|mongorestore|mongoexport|mongoimport)\b)[^\n;|&]*?[ \t]-p[ \t]*"
    + _value("d", SHELL_BARE)
    + r"|(?i:\b(?:sqlcmd|bcp|osql|isql)\b)[^\n;|&]*?[ \t]-P[ \t]*"
    + _value("e", SHELL_BARE)
    + r"|(?i:\bredis-cli\b)[^\n;|&]*?[ \t]-a[ \t]+"
    + _value("f", SHELL_BARE)
    + r"|(?i:\baz[ \t]+login\b)[^\n;|&]*?[ \t]-p[ \t]+"
    + _value("g", SHELL_BARE)
    + r"|(?i:\bopenssl\b)[^\n;|&]*?[ \t]-pass(?:in|out)[ \t]+pass:"
    + _value("j", SHELL_BARE)
    + r"|(?i:\bcurl\b)[^\n;|&]*?[ \t](?:-u|--user)[ \t]*['\"]?[^\s:'\"]+:(?P<bh>[^\s'\"]+)"
    + r"|(?i:\b(?:sqlplus|rman|expdp|impdp|sqlldr)\b)(?:[ \t]+-\w+)*[ \t]+['\"]?[\w$#]+/"
    + _value("i", r"[^\s@'\"/]+", backtick=False),
    case=True,
)
# Programs where "--password <next word>" does not give the password (the flag takes no value).
_FLAG_ONLY_PASSWORD = re.compile(
    r"\b(?:psql|pg_dump|pg_dumpall|pg_restore|pg_basebackup|createdb|dropdb|createuser|dropuser|"
    r"vacuumdb|reindexdb|clusterdb|pgbench|mysql\w*|mariadb[\w-]*)\b",
    re.IGNORECASE,
)
_ENV_ASSIGN = _compile(
    r"(?<![\w$])(?:\$env:)?(?:PGPASSWORD|MYSQL_PWD|SSHPASS|REDISCLI_AUTH|PGPASS|ISQL_PASSWORD|SQLCMDPASSWORD)"
    r"[\"']?[ \t]*[=:][ \t]*" + _value("a", SHELL_BARE)
)

# ---- Tokens and keys ------------------------------------------------------------------------

_AUTHORIZATION = _compile(
    r"\b(?:proxy-)?authorization[\"']?[ \t]*[:=][ \t]*[\"']?"
    r"(?:(?:basic|bearer|token|negotiate|ntlm|apikey|sso-key|digest|aws4-hmac-sha256)[ \t]+)?"
    r"(?P<ba>(?!\{)[^\s'\",\\]+(?:,[ \t]*\w+=[^\s'\",\\]+)*)"
)
_AWS_KEY_ID = _compile(
    r"(?<![A-Za-z0-9])(?P<ba>(?:A3T[A-Z0-9]|ABIA|ACCA|AKIA|ASIA)[A-Z0-9]{16})(?![A-Za-z0-9])", case=True
)
_AWS_SECRET = _compile(
    r"(?<![A-Za-z0-9])(?:aws_?)?secret_?access_?key[\"']?[ \t]*(?:=>|[=:])[ \t]*"
    + _value("a", GENERIC_BARE)
    + r"|\baws\s+configure\s+set\s+(?:[\w.-]+\.)?aws_secret_access_key\s+"
    + _value("b", SHELL_BARE)
)
_JWT = _compile(r"(?<![\w-])(?P<ba>eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*)", case=True)
_PRIVATE_KEY = _compile(
    r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?:\\[rn]|\s)*"
    r"(?P<ba>[\s\S]*?)(?:\\[rn]|\s)*(?:-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
    case=True,
)
_QUERY_SECRET = _compile(
    r"[?&](?:[\w.-]*(?:token|password|passwd|pwd|secret|api_?key|apikey|sig|signature))"
    r"=(?P<ba>" + QUERY_BARE + ")"
)
# password = crypt('plain', gen_salt('bf')), SHA2('plain', 256), HASHBYTES('SHA2_256', 'plain'):
# the plaintext is the (first) literal argument of a hashing function.
_PASSWORD_FUNCTION = _compile(
    r"(?<![\w.])[\w.]*(?:passw(?:or)?d|pwd|secret|passphrase)\w*[\"`]?\s*(?:=|:=)\s*"
    r"(?:(?:\w+\.)?(?:crypt|md5|sha1?|sha2|sha224|sha256|sha384|sha512|digest|hmac|password|old_password"
    r"|encrypt|aes_encrypt|pgp_sym_encrypt|pwdencrypt|encode|convert|hashbytes)\s*\(\s*"
    r"(?:'(?:md[245]|sha\w*)'\s*,\s*)?)+" + _value("a", None, dollar=True)
)
_SECRET_WORDS = r"(?:passw(?:or)?d|passphrase|pwd|secret|token|api[_-]?key|secret[_-]?key|private[_-]?key)"
_ASSIGNMENT = _compile(
    r"(?<![\w.-])(?P<key>[\w.-]*?" + _SECRET_WORDS + r")[\"'`\]]?"
    r"(?P<w1>[ \t]*)(?P<sep>=>|:=|=|(?<!:):(?![:=]))(?P<w2>[ \t]*)" + _value("a", GENERIC_BARE)
)
_YAML_SPECIAL = ("|", ">", "!", "&", "*", "{", "[")
_SQL_REF = re.compile(r"[A-Za-z_]\w*\.[A-Za-z_]\w*")


def _accept_assignment(match: re.Match[str], group: str, value: str) -> bool:
    """Bare values of a generic assignment: which are secrets and which are code.

    ``key: value`` (YAML, headers) and glued ``KEY=value`` (env, CLI, query strings) are
    assignments; ``key = value`` with spaces is one only on an ini line of its own, because
    inside SQL it is a comparison with a column (``s.token = t.token``).
    """
    if group[0] != "b":
        return True
    key = match["key"].lower().lstrip("-")
    if key in ("pwd", "oldpwd") and value[:1] in ("/", "~"):
        return False  # the shell's working directory, not a Mongo password
    sep = match["sep"]
    if sep == ":":
        # A YAML key, a header, an inline map: the key opens its line or follows { , ( [ or
        # a list dash. Within a sentence ("force-unlocked a secret: managed secret 209",
        # StrongDM's own activity descriptions) it is prose, not an assignment.
        text = match.string
        before = text[text.rfind("\n", 0, match.start()) + 1 : match.start()].rstrip()
        return not value.startswith(_YAML_SPECIAL) and (not before or before[-1] in "{,([-'\"")
    end = match.end(group)
    if end < len(match.string) and match.string[end] == "(":
        return False  # a function call: crypt(...), md5(...)
    if not match["w1"] and not match["w2"]:
        return not (_SQL_REF.fullmatch(value) and "." in key)
    text = match.string
    line_start = text.rfind("\n", 0, match.start()) + 1
    line_end = text.find("\n", end)
    return (
        not text[line_start : match.start()].strip()
        and not text[end : len(text) if line_end < 0 else line_end].strip()
        and _SQL_REF.fullmatch(value) is None
    )


def _accept_long_option(match: re.Match[str], group: str, value: str) -> bool:
    """``--password value`` with a space: not for psql/mysql, where the flag takes no value."""
    if group[0] != "b" or match["sep"] == "=":
        return True
    text = match.string
    line_start = max(text.rfind(c, 0, match.start()) for c in "\n;|&") + 1
    return _FLAG_ONLY_PASSWORD.search(text, line_start, match.start()) is None


_BUILTIN: tuple[_Rule, ...] = (
    # Whole-token secrets first: a later rule then sees "[masked]" and leaves it.
    _Rule("private_key", _PRIVATE_KEY, ("private key",)),
    _Rule("http_authorization", _AUTHORIZATION, ("authorization",)),
    _Rule("jwt", _JWT, ("eyj",)),
    _Rule("aws_access_key_id", _AWS_KEY_ID, ("akia", "asia", "abia", "acca", "a3t")),
    _Rule("aws_secret_access_key", _AWS_SECRET, ("secret",)),
    # SQL statements, most specific first.
    _Rule("sql_identified_by", _IDENTIFIED, ("identified",)),
    _Rule("sql_set_password", _SET_PASSWORD, ("password",)),
    _Rule("sql_replication_password", _REPLICATION, ("password",), _REPLICATION_REGION),
    _Rule("sql_options_password", _OPTIONS, ("password",), _OPTIONS_REGION),
    _Rule("pg_role_password", _ROLE, ("password",), _ROLE_REGION),
    _Rule("mssql_password", _MSSQL, ("password", "secret"), _MSSQL_REGION),
    _Rule("libpq_password", _LIBPQ, ("password",), _LIBPQ_REGION),
    _Rule("redis_auth", _REDIS, ("auth", "requirepass")),
    _Rule("mongo_password", _MONGO, ("pwd", "password", "auth")),
    _Rule("oracle_connect", _ORACLE_CONNECT, ("conn",)),
    _Rule("sql_password_function", _PASSWORD_FUNCTION, ("pass", "pwd", "secret")),
    # URLs, commands, environment.
    _Rule("url_password", _URL_USERINFO, ("://",)),
    _Rule(
        "url_query_secret",
        _QUERY_SECRET,
        ("token", "pass", "pwd", "secret", "api", "sig"),
    ),
    _Rule(
        "cli_password",
        _SHORT_FLAG,
        ("-p", "-a", "-u", "sql", "rman", "dp"),
    ),
    _Rule(
        "cli_password", _LONG_OPTION, ("pass", "pwd", "secret", "token", "api"), accept=_accept_long_option
    ),
    _Rule(
        "env_password",
        _ENV_ASSIGN,
        ("pgpass", "mysql_pwd", "sshpass", "rediscli_auth", "sqlcmdpassword", "isql_password"),
    ),
    # Anything else named like a secret.
    _Rule(
        "secret_assignment",
        _ASSIGNMENT,
        ("pass", "pwd", "secret", "token", "api", "private"),
        accept=_accept_assignment,
    ),
)


def builtin_rule_names() -> list[str]:
    """The names of the built-in rules, in the order they run (``cli_password`` has two parts)."""
    return list(dict.fromkeys(rule.name for rule in _BUILTIN))


def _contains_any(words: Iterable[str]) -> Callable[[str], bool]:
    """``lambda s: w1 in s or w2 in s or ...``, compiled once.

    The pre-filter runs on every value of every record. Measured on an 80-character
    statement with these ~20 words: this expression ~1.0 µs, ``any(map(s.__contains__, words))``
    ~1.5 µs, one regex alternation of the words ~3.8 µs (on the lowered text; 10 µs with
    ``re.IGNORECASE`` on the original). The words are our own constants, written with repr().
    """
    source = "lambda s: " + (" or ".join(f"{word!r} in s" for word in words) or "False")
    function: Callable[[str], bool] = eval(source, {"__builtins__": {}})
    return function


def _minimal_cover(words: Iterable[str]) -> list[str]:
    """The words that contain no other word: "pass" finds every text that "password" finds."""
    unique = set(words)
    return sorted(w for w in unique if not any(o != w and o in w for o in unique))


# AWS key ids are upper case: one case-sensitive search on the original text instead of five
# more words in the pre-filter.
_AWS_HINT = re.compile(r"A(?:KIA|SIA|BIA|CCA|3T)")
_PREFILTER = _contains_any(
    _minimal_cover(t for rule in _BUILTIN if rule.name != "aws_access_key_id" for t in rule.triggers)
)


# ---- Environment variables ------------------------------------------------------------------

ENV_SECRET_RULE = "env_secret_name"
# A variable whose name says it holds a secret is masked whole, whatever its value looks like.
_SECRET_ENV_NAME = re.compile(
    r"(?:PGPASSWORD|PGPASS|MYSQL_PWD|SSHPASS|REDISCLI_AUTH|SQLCMDPASSWORD|.*(?:PASSWORD|PASSWD|PASSPHRASE"
    r"|SECRET|TOKEN|API_?KEY|ACCESS_KEY|SECRET_KEY|PRIVATE_KEY|MASTER_KEY|SIGNING_KEY|ENCRYPTION_KEY"
    r"|CREDENTIALS?|_AUTH|_PWD|_PASS))",
    re.IGNORECASE,
)


def secret_env_name(name: str) -> bool:
    """Whether an environment variable's name says its value is a secret (not PWD/OLDPWD)."""
    return _SECRET_ENV_NAME.fullmatch(name) is not None


# ---- Custom rules ---------------------------------------------------------------------------


class MaskRule(BaseModel):
    """One ``[[normalize.mask]]`` entry: a regex, and which of its groups is the secret.

    ``group`` is a group number or name; ``None`` masks the whole match. The pattern is
    compiled when the configuration loads, so a typo stops the daemon before it ships a
    query in clear.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    pattern: str
    group: int | str | None = None

    @model_validator(mode="after")
    def _check_pattern(self) -> MaskRule:
        try:
            compiled = re.compile(self.pattern)
        except re.error as exc:
            raise ValueError(f"mask pattern {self.pattern!r} is not a valid regex: {exc}") from None
        if isinstance(self.group, int) and not 0 <= self.group <= compiled.groups:
            raise ValueError(
                f"mask pattern {self.pattern!r} has no group {self.group} "
                f"(it has {compiled.groups} group{'s' if compiled.groups != 1 else ''})"
            )
        if isinstance(self.group, str) and self.group not in compiled.groupindex:
            names = ", ".join(compiled.groupindex) or "none"
            raise ValueError(
                f"mask pattern {self.pattern!r} has no group named {self.group!r} (named groups: {names})"
            )
        return self


@dataclass(frozen=True)
class _Custom:
    name: str
    pattern: re.Pattern[str]
    group: int | str


# ---------------------------------------------------------------------------------------------


class Masker:
    """Masks secrets in text and in the text fields of events; build once, call per event."""

    def __init__(self, custom: Sequence[MaskRule] = (), *, builtin: bool = True) -> None:
        self._rules: tuple[tuple[_Rule, tuple[str, ...]], ...] = (
            tuple((rule, rule.secret_groups()) for rule in _BUILTIN) if builtin else ()
        )
        self._candidate: Callable[[str], bool] | None = _PREFILTER if builtin else None
        self._custom = tuple(
            _Custom(
                rule.name or f"custom_{index}",
                re.compile(rule.pattern),
                0 if rule.group is None else rule.group,
            )
            for index, rule in enumerate(custom)
        )
        self._builtin = builtin

    @property
    def active(self) -> bool:
        """False when there is nothing to apply: callers can skip masking entirely."""
        return bool(self._rules or self._custom)

    def mask(self, text: str) -> tuple[str, frozenset[str]]:
        """``text`` with every secret replaced by ``[masked]``, and the names of the rules that fired.

        When nothing fired the result is ``(text, frozenset())`` with ``text`` itself.
        """
        fired: set[str] = set()
        out = text
        if self._candidate is not None:
            lowered = text.lower()
            if self._candidate(lowered) or _AWS_HINT.search(text) is not None:
                out = self._apply_builtin(text, lowered, fired)
        for custom in self._custom:
            spans = [
                m.span(custom.group)
                for m in custom.pattern.finditer(out)
                if m.start(custom.group) >= 0 and m[custom.group] not in ("", MASK)
            ]
            if spans:
                out = _splice(out, spans)
                fired.add(custom.name)
        if "%" in out:
            out = _PERCENT_ENCODED.sub(lambda m: self._mask_encoded(m[0], fired), out)
        if not fired:
            return text, frozenset()
        return out, frozenset(fired)

    def _mask_encoded(self, token: str, fired: set[str]) -> str:
        """A percent-encoded run (a URL, a query string), masked as the text it encodes.

        ``kubectl exec`` sends its command as query parameters
        (``...?command=mysql%20-uroot%20-pS3cret``), where no rule sees the password until
        it is decoded: each ``?``/``&``-separated part is decoded, masked, and encoded again
        only when masking changed it, so the rest of the text is kept byte for byte.
        """
        parts = _QUERY_SEPARATORS.split(token)
        changed = False
        for i in range(0, len(parts), 2):
            part = parts[i]
            name, equals, value = part.rpartition("=") if "=" in part else ("", "", part)
            plain = unquote_plus(value) if equals else unquote(value)
            if plain == value:
                continue
            masked, names = self.mask(plain)
            if names:
                fired |= names
                parts[i] = f"{name}{equals}{quote(masked, safe='/' if not equals else '')}"
                changed = True
        return "".join(parts) if changed else token

    def _apply_builtin(self, text: str, lowered: str, fired: set[str]) -> str:
        for rule, groups in self._rules:
            if not any(t in lowered for t in rule.triggers):
                continue
            spans = _secret_spans(rule, groups, text)
            if spans:
                text = _splice(text, spans)
                fired.add(rule.name)
                # Masking changes offsets only; later rules' triggers are checked on the original
                # lowered text, which is a superset of what is left.
        return text

    def mask_event(self, event: dict[str, Any]) -> dict[str, Any]:
        """``event`` with its text fields masked (module docstring); the same object if none was.

        The input is never mutated: the event and ``capture``/``capture.env`` are copied only
        when something in them changes.
        """
        fired: set[str] = set()
        changes: dict[str, Any] = {}
        for key in TEXT_FIELDS:
            value = event.get(key)
            if isinstance(value, str) and value:
                masked, names = self.mask(value)
                if names:
                    changes[key] = masked
                    fired |= names
        capture = event.get("capture")
        if isinstance(capture, dict) and capture:
            new_capture = self._mask_capture(capture, fired)
            if new_capture is not capture:
                changes["capture"] = new_capture
        if not changes:
            return event
        out = dict(event)
        out.update(changes)
        previous = event.get(MASKED_FIELD)
        if isinstance(previous, list | tuple | set | frozenset):
            fired.update(str(name) for name in previous)
        out[MASKED_FIELD] = sorted(fired)
        return out

    def _mask_capture(self, capture: dict[str, Any], fired: set[str]) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        for key in CAPTURE_TEXT_FIELDS:
            value = capture.get(key)
            if isinstance(value, str) and value:
                masked, names = self.mask(value)
                if names:
                    changes[key] = masked
                    fired |= names
        body = capture.get("requestBody")
        if isinstance(body, str) and body:
            masked_body = self._mask_body(body, fired)
            if masked_body is not body:
                changes["requestBody"] = masked_body
        env = capture.get("env")
        if isinstance(env, dict) and env:
            new_env = self._mask_env(env, fired)
            if new_env is not env:
                changes["env"] = new_env
        if not changes:
            return capture
        out = dict(capture)
        out.update(changes)
        return out

    def _mask_body(self, body: str, fired: set[str]) -> str:
        """A request body: the event carries protobuf bytes as base64, so mask the decoded text.

        A body that is not base64 of UTF-8 text is masked as it is. Re-encoded base64 keeps the
        field's type (what a consumer decodes is the masked body).
        """
        masked, names = self.mask(body)
        if names:
            fired |= names
            return masked
        try:
            decoded = base64.b64decode(body, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return body
        secret_object = _kubernetes_secret_masked(decoded) if self._candidate is not None else None
        if secret_object is not None:
            decoded = secret_object
            fired.add(K8S_SECRET_RULE)
        masked, names = self.mask(decoded)
        if not names and secret_object is None:
            return body
        fired |= names
        return base64.b64encode(masked.encode("utf-8")).decode("ascii")

    def _mask_env(self, env: dict[str, Any], fired: set[str]) -> dict[str, Any]:
        changes: dict[str, str] = {}
        for name, value in env.items():
            if not isinstance(value, str) or not value or value == MASK:
                continue
            if self._builtin and isinstance(name, str) and secret_env_name(name):
                if _PLACEHOLDER_QUOTED.fullmatch(value) is None:
                    changes[name] = MASK
                    fired.add(ENV_SECRET_RULE)
                continue
            masked, names = self.mask(value)
            if names:
                changes[name] = masked
                fired |= names
        if not changes:
            return env
        out = dict(env)
        out.update(changes)
        return out


def _secret_spans(rule: _Rule, groups: Iterable[str], text: str) -> list[tuple[int, int]]:
    """The (start, end) of every secret value ``rule`` finds in ``text``, in order."""
    accept = rule.accept or _accept_all
    spans: list[tuple[int, int]] = []
    if rule.region is None:
        matches: Iterable[re.Match[str]] = rule.pattern.finditer(text)
    else:
        matches = (
            m
            for region in rule.region.finditer(text)
            if region.end() > region.start()
            for m in rule.pattern.finditer(text, region.start(), region.end())
        )
    for match in matches:
        for group in groups:
            start, end = match.span(group)
            if start < 0 or start == end:
                continue
            value = text[start:end]
            placeholder = _PLACEHOLDER_BARE if group[0] == "b" else _PLACEHOLDER_QUOTED
            if placeholder.fullmatch(value) is not None or not accept(match, group, value):
                continue
            spans.append((start, end))
    return spans


def _splice(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with each (start, end) span replaced by MASK; overlapping spans are merged."""
    spans.sort()
    parts: list[str] = []
    pos = 0
    for start, end in spans:
        if start < pos:  # overlaps the previous span: extend it
            if end > pos:
                pos = end
            continue
        parts.append(text[pos:start])
        parts.append(MASK)
        pos = end
    parts.append(text[pos:])
    return "".join(parts)


K8S_SECRET_RULE = "k8s_secret_data"
_K8S_SECRET_HINT = re.compile(r'"kind"\s*:\s*"Secret"')


def _kubernetes_secret_masked(text: str) -> str | None:
    """A Kubernetes Secret sent to the API server (``kubectl create secret``, ``apply``): every
    value of ``data`` and ``stringData`` is a secret by definition, whatever its key is
    called (``tls.key``, ``.dockerconfigjson``...), and ``data`` is base64 no text rule can
    read. The JSON again with those values masked; None when ``text`` is no such object."""
    if _K8S_SECRET_HINT.search(text) is None:
        return None
    try:
        document = json.loads(text)
    except ValueError:
        return None
    if not isinstance(document, dict) or document.get("kind") != "Secret":
        return None
    changed = False
    for field in ("data", "stringData"):
        values = document.get(field)
        if isinstance(values, dict) and values:
            document[field] = {key: MASK for key in values}
            changed = True
    return json.dumps(document, separators=(",", ":")) if changed else None


# A run of URL text holding at least one %XX escape; ? and & split it into parts.
_PERCENT_ENCODED = re.compile(
    r"(?:[^\s\"'<>\\%]|%[0-9A-Fa-f]{2})*%[0-9A-Fa-f]{2}(?:[^\s\"'<>\\%]|%[0-9A-Fa-f]{2})*"
)
_QUERY_SEPARATORS = re.compile(r"([?&])")

_KEY_BEGIN = re.compile(r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
_KEY_END = re.compile(r"-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
MAX_KEY_BLOCK_LINES = 400
"""A private key block is at most this many lines (an 8192-bit RSA key in PEM is ~100)."""


class SessionMasker:
    """``Masker.mask`` for a text that arrives in pieces cut at line ends: a terminal session.

    Every built-in rule sees one whole line or more, except a private key: pasted into a
    terminal, its lines can be spread over many replay chunks, and the chunk holding
    ``-----BEGIN ... PRIVATE KEY-----`` (masked to its end by the ``private_key`` rule) is
    followed by chunks of bare base64 lines no rule can tell from output. So this remembers,
    from one piece to the next, that a key block is open, and masks every line of it until
    its END line (or ``MAX_KEY_BLOCK_LINES``, so one BEGIN without an END cannot hide a whole
    session). One per session; pieces must come in order.
    """

    def __init__(self, masker: Masker) -> None:
        self._masker = masker
        self._open_lines: int | None = None  # lines masked so far in an open key block

    def __call__(self, text: str) -> tuple[str, frozenset[str]]:
        if self._open_lines is not None:
            text, carried = self._close_block(text)
        else:
            carried = False
        masked, rules = self._masker.mask(text)
        self._note_open_block(text)
        if carried:
            rules = rules | {"private_key"}
        return masked, rules

    def _close_block(self, text: str) -> tuple[str, bool]:
        """Mask the lines of the block carried from the previous piece, up to its END line."""
        lines = text.split("\n")
        for i, line in enumerate(lines):
            assert self._open_lines is not None
            if _KEY_END.search(line):
                self._open_lines = None
                return "\n".join([*([MASK] * i), *lines[i:]]), i > 0
            self._open_lines += 1
            if self._open_lines >= MAX_KEY_BLOCK_LINES:
                self._open_lines = None
                return "\n".join([*([MASK] * (i + 1)), *lines[i + 1 :]]), True
        return "\n".join([MASK] * len(lines)), bool(lines)

    def _note_open_block(self, text: str) -> None:
        """Whether this piece leaves a key block open (a BEGIN after its last END)."""
        begins = [m.end() for m in _KEY_BEGIN.finditer(text)]
        if not begins:
            return
        last_begin = begins[-1]
        if not _KEY_END.search(text, last_begin):
            self._open_lines = text.count("\n", last_begin)
