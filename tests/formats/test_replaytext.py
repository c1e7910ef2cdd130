"""Replay text: terminal captures decode to what a person read, masked per chunk, nothing leaks.

The captures are written by hand after what bash/readline, ``top`` and ``less`` send to an
xterm-compatible terminal; the properties split the same byte streams at arbitrary offsets.
"""

from __future__ import annotations

import itertools
import re
import tracemalloc
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditstream.formats.replaytext import ChunkText, Mask, ReplayAssembler, TerminalDecoder

PROMPT = b"\x1b]0;alice@web-1: ~\x07\x1b[01;32malice@web-1\x1b[00m:\x1b[01;34m~\x1b[00m$ "
PROMPT_TEXT = "alice@web-1:~$"  # trailing space dropped at the line end

_FAKE_RULES = (
    ("password_flag", re.compile(r"(?<=-p)\S+")),
    ("secret_assignment", re.compile(r"(?<=SECRET=)\S+")),
    ("private_key", re.compile(r"(?<=BEGIN PRIVATE KEY-----\n).*?(?=\n-----END PRIVATE KEY)", re.S)),
)


def fake_mask(text: str) -> tuple[str, frozenset[str]]:
    """A stand-in for the real masker: ``-p<word>``, ``SECRET=<word>`` and PEM key bodies."""
    fired = set()
    for name, pattern in _FAKE_RULES:
        text, count = pattern.subn("[masked]", text)
        if count:
            fired.add(name)
    return text, frozenset(fired)


def decode(*events: bytes, max_line_chars: int = 16_384) -> list[str]:
    decoder = TerminalDecoder(max_line_chars)
    lines = [line for data in events for line in decoder.feed(data)]
    return lines + decoder.flush()


def typed(command: str) -> list[bytes]:
    """A command typed key by key: the pty echoes each character as its own event."""
    return [bytes([b]) for b in command.encode()]


def assemble(
    chunks: Sequence[Sequence[bytes]], mask: Mask | None = fake_mask, **caps: int
) -> list[ChunkText]:
    assembler = ReplayAssembler(mask, **caps)
    out = [result for index, events in enumerate(chunks) for result in assembler.add(index, events)]
    return out + assembler.finish()


# Terminal captures.


def test_bash_prompt_typed_command_and_output() -> None:
    session = [
        b"\x1b[?2004h" + PROMPT,
        *typed("ls --color"),
        b"\r\n\x1b[?2004l\r",
        b"\x1b[0m\x1b[01;34mbin\x1b[0m  notes.txt  \x1b[01;32mrun.sh\x1b[0m\r\n",
        b"\x1b[?2004h" + PROMPT,
    ]
    assert decode(*session) == [
        PROMPT_TEXT + " ls --color",
        "bin  notes.txt  run.sh",
        PROMPT_TEXT,
    ]


def test_a_line_is_returned_only_once_its_newline_arrives() -> None:
    decoder = TerminalDecoder()
    assert decoder.feed(PROMPT + b"echo hi") == []
    assert decoder.pending
    assert decoder.feed(b"\r") == []  # \r\n may be split between events
    assert decoder.feed(b"\nhi\r\n") == [PROMPT_TEXT + " echo hi", "hi"]
    assert not decoder.pending
    assert decoder.flush() == []


def test_progress_bar_keeps_its_final_state() -> None:
    bar = [f"\rDownloading [{'#' * (p // 10):<10}] {p:3d}%".encode() for p in range(0, 101, 5)]
    assert decode(*bar, b"\r\n", b"done\r\n") == ["Downloading [##########] 100%", "done"]


def test_progress_bar_with_utf8_blocks_split_inside_characters() -> None:
    stream = "\r 45%|████▌     | 45/100\r100%|██████████| 100/100\r\n".encode()
    events = [stream[i : i + 3] for i in range(0, len(stream), 3)]  # cuts inside the 3-byte blocks
    assert decode(*events) == ["100%|██████████| 100/100"]


def test_backspace_corrections_as_readline_and_the_tty_echo_them() -> None:
    readline = [*typed("ecoh"), b"\b\x1b[K", b"\b\x1b[K", *typed("ho ok"), b"\r\n"]
    tty_echoe = [*typed("cta"), b"\b \b", b"\b \b", *typed("at x"), b"\r\n"]
    raw_del = [*typed("lss"), b"\x7f", b"\r\n"]
    assert decode(*readline) == ["echo ok"]
    assert decode(*tty_echoe) == ["cat x"]
    assert decode(*raw_del) == ["ls"]


def test_readline_insert_in_the_middle_of_the_line() -> None:
    # "echo helo", Left Left, "l" (readline reprints "llo" and backs up), End, Enter.
    events = [*typed("echo helo"), b"\b", b"\b", b"llo\b\b", b"\x1b[2C", b"\r\n"]
    assert decode(*events) == ["echo hello"]


def test_redraw_with_cursor_left_insert_delete_and_erase() -> None:
    # History recall replaces the line: back to the start of the command, rewrite, erase the rest.
    recall = b"$ make test-all" + b"\x1b[13D" + b"git log" + b"\x1b[K" + b"\r\n"
    insert = b"$ gt status" + b"\x1b[8D" + b"\x1b[1@i" + b"\r\n"  # ICH then the inserted character
    delete = b"$ gitt status" + b"\x1b[8D" + b"\x1b[P" + b"\r\n"
    assert decode(recall, insert, delete) == ["$ git log", "$ git status", "$ git status"]


def test_osc_title_and_other_strings_leave_no_text() -> None:
    stream = (
        b"\x1b]0;alice@web-1: /var/log\x07"  # OSC ended by BEL
        b"\x1b]2;vim README\x1b\\"  # OSC ended by ST
        b"\x1bP1$r0m\x1b\\"  # DCS reply
        b"\x1b_application\x07still apc\x1b\\"  # APC: BEL does not end it
        b"\x1b(B\x1b)0\x1b=\x1b>\x1b7\x1b8\x1bM"  # charset, keypad, save/restore, reverse index
        b"visible\x07\r\n"  # BEL dropped
    )
    assert decode(stream) == ["visible"]


def test_sequences_split_across_events() -> None:
    stream = b"\x1b]0;title\x1b\\\x1b[01;32mgreen\x1b[0m \x1b(Bplain\r\n"
    expected = ["green plain"]
    for cut in range(1, len(stream)):
        assert decode(stream[:cut], stream[cut:]) == expected, cut


def test_eight_bit_c1_controls() -> None:
    assert decode(b"\xc2\x9b31mred\xc2\x9b0m\r\n") == ["red"]  # U+009B, as UTF-8 terminals read it
    assert decode(b"\x9b31mred\x9b0m \xc4\x9b\r\n") == ["red ě"]  # a raw byte 0x9B; C4 9B is a letter
    assert decode(b"\xc2\x9d0;title\xc2\x9cok\xff\r\n") == ["ok\ufffd"]  # C1 OSC ... ST; 0xFF invalid


def test_tabs_kept_and_trailing_spaces_dropped() -> None:
    assert decode(b"NAME\tREADY\tSTATUS   \r\napi\t1/1\tRunning\r\n\r\n") == [
        "NAME\tREADY\tSTATUS",
        "api\t1/1\tRunning",
        "",
    ]


def test_top_screen_painted_with_cursor_positioning() -> None:
    frame = (
        b"\x1b[1;1Htop - 10:00:01 up 3 days,  1 user,  load average: 0.00, 0.01, 0.05\x1b[K"
        b"\x1b[2;1HTasks:  87 total,   1 running,  86 sleeping\x1b[K"
        b"\x1b[4;1H\x1b[7m    PID USER      %CPU COMMAND          \x1b[m\x1b[K"
        b"\x1b[5;1H      1 root       0.0 systemd\x1b[K"
        b"\x1b[6;1H    842 alice      0.3 bash\x1b[K\x1b[J"
    )
    session = [
        b"top\r\n",
        b"\x1b[?1049h\x1b[?1h\x1b=\x1b[H\x1b[2J" + frame,
        frame.replace(b"10:00:01", b"10:00:04"),
        b"\x1b[?1l\x1b>\x1b[?1049l\r\x1b[K" + PROMPT,
    ]
    rows = [
        "top - 10:00:01 up 3 days,  1 user,  load average: 0.00, 0.01, 0.05",
        "Tasks:  87 total,   1 running,  86 sleeping",
        "    PID USER      %CPU COMMAND",
        "      1 root       0.0 systemd",
        "    842 alice      0.3 bash",
    ]
    second = [rows[0].replace("10:00:01", "10:00:04"), *rows[1:]]
    assert decode(*session) == ["top", *rows, *second, PROMPT_TEXT]


def test_less_pager_status_line_is_erased_before_it_is_seen() -> None:
    session = [
        b"\x1b[?1049h\x1b[22;0;0t\x1b[?1h\x1b=\rline one\r\nline two\r\n",
        b"\x1b[7m(END)\x1b[27m\x1b[K",
        b"\r\x1b[K\x1b[?1l\x1b>\x1b[?1049l\x1b[23;0;0t" + PROMPT + b"\r\n",
    ]
    assert decode(*session) == ["line one", "line two", PROMPT_TEXT]


def test_long_line_is_cut_at_the_cap() -> None:
    assert decode(b"a" * 25 + b"\n", b"b" * 10 + b"\n", max_line_chars=10) == [
        "a" * 10,
        "a" * 10,
        "a" * 5,
        "b" * 10,
    ]
    assert decode(b"x\x1b[99999Cy\n", max_line_chars=10) == ["x", "y"]  # a cursor jump is clamped


def test_flush_returns_the_visible_partial_line_only() -> None:
    decoder = TerminalDecoder()
    decoder.feed(b"$ \xe2\x82")  # an unfinished euro sign at session end
    assert decoder.flush() == ["$ \ufffd"]
    decoder.feed(b"   \x1b[3")
    assert decoder.flush() == []


# Chunks, masking and the hold-back rule.


def test_password_split_between_chunks_is_masked_and_both_chunks_lose_data() -> None:
    chunks = [
        [PROMPT, *typed("mysql -uroot -pS3")],
        [*typed("cret"), b"\r\n", b"Welcome to the MySQL monitor.\r\n", b"mysql> "],
        [*typed("exit"), b"\r\nBye\r\n"],
    ]
    assembler = ReplayAssembler(fake_mask)
    assert assembler.add(0, chunks[0]) == []  # ends inside the command line: held
    first = assembler.add(1, chunks[1])
    assert [c.index for c in first] == [0]  # chunk 1 ends inside "mysql> ": held in turn
    assert first[0] == ChunkText(0, "", frozenset({"password_flag"}), data_safe=False)
    second = assembler.add(2, chunks[2])
    assert second == [
        ChunkText(
            1,
            PROMPT_TEXT + " mysql -uroot -p[masked]\nWelcome to the MySQL monitor.",
            frozenset({"password_flag"}),
            data_safe=False,
        ),
        ChunkText(2, "mysql> exit\nBye", frozenset(), data_safe=True),
    ]
    assert assembler.finish() == []


def test_held_chunk_keeps_its_data_when_only_a_later_line_is_masked() -> None:
    chunks = [[PROMPT + b"ec"], [b"ho hi\r\nhi\r\nexport DB_SECRET=hunter2\r\n"]]
    assert assemble(chunks) == [
        ChunkText(0, "", frozenset(), data_safe=True),
        ChunkText(
            1,
            PROMPT_TEXT + " echo hi\nhi\nexport DB_SECRET=[masked]",
            frozenset({"secret_assignment"}),
            data_safe=False,
        ),
    ]


def test_multi_line_private_key_in_one_chunk_is_masked_as_a_whole() -> None:
    pem = (
        b"-----BEGIN PRIVATE KEY-----\r\n"
        b"MIIEvQIBADANBgkqhkiG9w0BAQEF\r\n"
        b"AASCBKcwggSjAgEAAoIBAQC7\r\n"
        b"-----END PRIVATE KEY-----\r\n"
    )
    [result] = assemble([[b"cat key.pem\r\n", pem]])
    assert result.text == "cat key.pem\n-----BEGIN PRIVATE KEY-----\n[masked]\n-----END PRIVATE KEY-----"
    assert result.masked_rules == {"private_key"}
    assert not result.data_safe


def test_secret_completed_at_session_end_is_masked() -> None:
    chunks = [[PROMPT + b"export DB_SEC"], [b"RET=hun"], [b"ter2"]]
    results = assemble(chunks)
    assert [c.index for c in results] == [0, 1, 2]
    assert [c.text for c in results] == ["", "", PROMPT_TEXT + " export DB_SECRET=[masked]"]
    assert not any(c.data_safe for c in results)
    assert all(c.masked_rules == {"secret_assignment"} for c in results)


def test_line_erased_before_completion_releases_held_chunks() -> None:
    assembler = ReplayAssembler(fake_mask)
    assert assembler.add(0, [b"Password: -pS3cret"]) == []
    # The line is wiped: nothing of it was ever completed, so nothing decides against chunk 0.
    released = assembler.add(1, [b"\r\x1b[K"])
    assert released == [ChunkText(0, "", frozenset(), True), ChunkText(1, "", frozenset(), True)]


def test_chunk_ending_inside_an_escape_sequence_shares_the_fate_of_the_next_line() -> None:
    # Chunk 0's last bytes open the colour sequence of a line that turns out to be masked.
    results = assemble([[b"ok\r\n\x1b[01"], [b";31mexport DB_SECRET=hunter2\x1b[0m\r\n"]])
    assert [(c.index, c.text, c.data_safe) for c in results] == [
        (0, "ok", False),
        (1, "export DB_SECRET=[masked]", False),
    ]


def test_masking_off() -> None:
    results = assemble([[b"mysql -pS3"], [b"cret\r\n"]], mask=None)
    assert results == [ChunkText(0, "", frozenset(), True), ChunkText(1, "mysql -pS3cret", frozenset(), True)]


def test_held_chunks_are_capped_by_forcing_the_line_end() -> None:
    assembler = ReplayAssembler(fake_mask, max_held_chunks=3)
    assert [assembler.add(i, [b"ab"]) for i in range(3)] == [[], [], []]
    forced = assembler.add(3, [b"cd"])  # a fourth chunk in the same line: the line ends here
    assert [(c.index, c.text) for c in forced] == [(0, ""), (1, ""), (2, ""), (3, "abababcd")]
    assert assembler.add(4, [b"ef\r\n"]) == [ChunkText(4, "ef", frozenset(), True)]


def test_chunks_must_arrive_in_order() -> None:
    assembler = ReplayAssembler(None)
    assembler.add(0, [b"a"])
    with pytest.raises(ValueError, match="in order"):
        assembler.add(0, [b"b"])
    assembler.finish()
    with pytest.raises(RuntimeError):
        assembler.add(1, [b"c"])


# Properties.

VOCABULARY = [
    PROMPT,
    b"\r\n",
    b"\r\n\x1b[?2004l\r",
    b"ls -la\r\n",
    b"\x1b[01;34mbin\x1b[0m  notes.txt\r\n",
    b"\r 45%|\xe2\x96\x88\xe2\x96\x88\xe2\x96\x8c   |",
    b"\rDownloading 100%",
    b"\b\x1b[K",
    b"\b \b",
    b"\x7f",
    b"\x1b[3D",
    b"\x1b[2C",
    b"\x1b[1@",
    b"\x1b[P",
    b"\x1b[5;10H",
    b"\x1b[H\x1b[2J",
    b"\x1b]2;title\x1b\\",
    b"\x1bPq#0;2;0;0;0\x1b\\",
    b"\x1b(B\x1b=",
    b"\tna\xc3\xafve \xe6\xbc\xa2\xe5\xad\x97 \xe2\x9c\x93",
    b"\x07",
    b"\x9b1m",
    b"\xc2\x9b0m",
    b"x",
    b" ",
]

streams = st.one_of(
    st.lists(st.sampled_from(VOCABULARY), max_size=30).map(b"".join),
    st.binary(max_size=300),  # anything at all must split the same way
)


def split(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(data)}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@st.composite
def chunked(draw: st.DrawFn, data: bytes, *, required_cut: int | None = None) -> list[list[bytes]]:
    """``data`` cut into chunks, each cut into events, at drawn offsets (chunks may be empty)."""
    offsets = st.integers(0, len(data))
    chunk_cuts = draw(st.lists(offsets, max_size=12))
    if required_cut is not None:
        chunk_cuts.append(required_cut)
    bounds = [0, *sorted(set(chunk_cuts)), len(data)]
    chunks = []
    for start, end in itertools.pairwise(bounds):
        piece = data[start:end]
        cuts = draw(st.lists(st.integers(0, len(piece)), max_size=4))
        chunks.append(split(piece, cuts))
    return chunks


def visible_lines(texts: Iterator[str]) -> list[str]:
    """Non-blank lines in order (a chunk text of "" is either no line or one blank line)."""
    return [line for text in texts for line in text.split("\n") if line]


@settings(max_examples=200, deadline=None)
@given(st.data(), streams)
def test_any_split_decodes_to_the_same_lines(data: st.DataObject, stream: bytes) -> None:
    whole = decode(stream)
    chunks = data.draw(chunked(stream))
    assert decode(*[event for events in chunks for event in events]) == whole
    results = assemble(chunks, mask=None, max_held_chunks=10_000)
    assert [c.index for c in results] == list(range(len(chunks)))
    assert visible_lines(c.text for c in results) == visible_lines(iter(whole))


@settings(max_examples=200, deadline=None)
@given(st.data(), streams, st.integers(1, 4))
def test_every_chunk_is_emitted_once_in_order_as_soon_as_it_is_final(
    data: st.DataObject, stream: bytes, max_held: int
) -> None:
    chunks = data.draw(chunked(stream))
    assembler = ReplayAssembler(fake_mask, max_held_chunks=max_held)
    emitted: list[int] = []
    for index, events in enumerate(chunks):
        emitted += [c.index for c in assembler.add(index, events)]
        assert index + 1 - len(emitted) <= max_held  # never more than the cap waiting
    emitted += [c.index for c in assembler.finish()]
    assert emitted == list(range(len(chunks)))


SECRET = "Zq7xWé9Kp€v"
SECRET_LINES = [
    (b"mysql -uroot -p", b"\r\n"),
    (b"export DB_SECRET=", b"\r\n"),
    (b"mysql -p\x1b[4m", b"\x1b[24m -h db\r\n"),
    (b"env | grep SECRET\r\nAWS_SECRET=", b"\r\n"),
    (b"\r\n\x1b[01;31mDB_SECRET=", b"\x1b[0m\r\n"),
]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.data(),
    st.lists(st.sampled_from(VOCABULARY), max_size=8).map(b"".join),
    st.sampled_from(SECRET_LINES),
    st.lists(st.sampled_from(VOCABULARY), max_size=8).map(b"".join),
)
def test_secret_split_anywhere_never_reaches_text_or_shipped_data(
    data: st.DataObject, prefix: bytes, line: tuple[bytes, bytes], suffix: bytes
) -> None:
    secret = SECRET.encode()
    start = len(prefix) + len(line[0])
    stream = prefix + line[0] + secret + line[1] + suffix
    cut = data.draw(st.integers(start + 1, start + len(secret) - 1), label="cut inside the secret")
    chunks = data.draw(chunked(stream, required_cut=cut))
    results = assemble(chunks)
    assert [c.index for c in results] == list(range(len(chunks)))
    fragments = {SECRET[i : i + 4] for i in range(len(SECRET) - 3)}
    offset = 0
    for result, events in zip(results, chunks, strict=True):
        size = sum(map(len, events))
        assert not any(fragment in result.text for fragment in fragments), result
        if offset < start + len(secret) and start < offset + size:
            assert not result.data_safe, result
            assert result.masked_rules, result
        offset += size


@pytest.mark.parametrize(
    ("name", "opening", "filler"),
    [
        ("text without a newline", b"", b"0123456789abcdef" * 64),
        ("progress bar redrawn with \\r", b"", b"\rcopying  42% [########        ] 1.2 MB/s eta 0:07 " * 21),
        ("unterminated OSC", b"\x1b]0;", b"t" * 1024),
    ],
)
def test_ten_megabytes_without_a_newline_stay_within_the_caps(
    name: str, opening: bytes, filler: bytes
) -> None:
    max_line, max_held, events_per_chunk = 4096, 16, 4
    event = filler[:1024]
    chunk_count = 10 * 1024 * 1024 // (len(event) * events_per_chunk)
    # Allocations are traced over the last megabyte only (tracing all ten is slow): anything
    # that grew with the input would grow by at least about a megabyte there.
    traced_from = chunk_count - chunk_count // 10
    assembler = ReplayAssembler(None, max_line_chars=max_line, max_held_chunks=max_held)
    emitted = 0
    try:
        for index in range(chunk_count):
            if index == traced_from:
                tracemalloc.start()
            events = [opening + event] if index == 0 else [event] * events_per_chunk
            for result in assembler.add(index, events):
                assert result.index == emitted
                assert all(len(line) <= max_line for line in result.text.split("\n"))
                emitted += 1
            assert index + 1 - emitted <= max_held
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    emitted += len(assembler.finish())
    assert emitted == chunk_count
    assert peak < 256 * 1024, f"{name}: {peak} bytes allocated at peak over the last megabyte"
