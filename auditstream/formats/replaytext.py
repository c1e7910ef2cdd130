"""Readable, masked text of SSH and ``kubectl exec -it`` replays, one result per chunk.

A replay is the raw output a terminal received, cut twice at arbitrary byte offsets: into
events, and events into chunks (``Replays.List``). Each chunk becomes one SIEM event whose
``text`` is what a person watching would have read, with credentials masked, and whose
``events[].data`` carries the raw bytes only when that cannot leak what masking hid.

``TerminalDecoder`` turns the byte stream into lines. It models one line, not a screen: a
buffer of cells for the current line and a cursor column, because what analysts search is
commands and their output, and shells redraw an edited command line with a handful of
line-local controls. What it honours, and why:

* ``\\n`` (so ``\\r\\n``) ends the line; the next starts at column 0 (replays come through a
  pty, whose ``onlcr`` turns every newline into ``\\r\\n`` anyway).
* ``\\r`` returns to column 0 and what follows overwrites: a progress bar or a shell's line
  redraw keeps its final content. ``\\b`` moves left without erasing, exactly as a terminal
  does, because readline moves the cursor with it (insert in the middle of a line: it prints
  the rest of the line, then ``\\b`` back). DEL (0x7f), which a terminal ignores, only
  appears when something echoed the erase key raw, so it erases the character to its left.
* CSI ``K`` (erase in line), ``D``/``C`` (left/right), ``G``/`````` (to column), ``P``
  (delete), ``@`` (insert blanks), ``X`` (erase) and ``J`` 0 (erase below, i.e. the rest of
  this line): the controls shells and readline use to redraw an edited command line.
* CSI ``H``/``f``/``d``/``E``/``F`` (move to another row) and ``J`` 1-3 (clear the screen):
  full-screen programs (``top``, ``less``, editors) paint rows with them; the line model cannot
  overwrite an earlier row, so each completes the current line (if anything is visible on it)
  and a new one starts, which gives every painted row as a line. Entering or leaving the
  alternate screen (``CSI ? 1049 h``/``l``, 47, 1047) does the same, so the row a program
  painted last is kept although the screen it was on is about to vanish. CSI ``A``/``B``
  (up/down) are ignored instead: readline uses them to move between the rows of one wrapped
  command line, which is still one logical line here.
* Tabs are kept as ``\\t``; every other C0 and C1 control (BEL, SO/SI, ...) is dropped.
* Escape sequences are parsed by a state machine that survives any split: CSI (``ESC [`` or
  the C1 CSI), OSC (to BEL or ST), DCS/SOS/PM/APC (to ST), two-byte and ``ESC`` intermediate
  sequences (``ESC =``, ``ESC ( B``, ``ESC 7``). Colours, modes, scrolling and everything not
  listed above have no effect on the text. CAN/SUB abort a sequence, as in a VT parser.
* Trailing spaces of a completed line are dropped (invisible, and ``\\b \\b`` erasure and
  cursor-right padding would otherwise leave them).

UTF-8 is decoded incrementally, so a character split between events or chunks decodes once.
Invalid bytes become U+FFFD, except a lone byte 0x80-0x9F, which is decoded as the C1 control
of that value (as an 8-bit terminal reads it): a raw 8-bit CSI (0x9B) then starts a sequence
instead of leaving ``31m`` in the text. A valid sequence such as ``C4 9B`` ("ě") is not
touched. Columns are counted in code points: wide (CJK) characters and combining marks make
cursor movement over them approximate.

Memory is bounded whatever the input: a line never holds more than ``max_line_chars`` cells
(longer output is cut into pieces emitted as lines, and cursor moves are clamped to that
width), escape sequence bodies are skipped rather than stored, and CSI parameters are capped.

``ReplayAssembler`` attributes each line to the chunk where it ends and masks each chunk's
text as a whole, so a secret spread over several lines of one chunk (a PEM private key) is
seen by the masker in one piece. A line is masked only once it is complete: a chunk that
ends inside a line is held until a later chunk completes it, and if masking alters that line,
every chunk that contributed bytes to it loses its raw data (``data_safe`` False). That is
what keeps ``-pS3`` | ``cret`` split between two chunks from escaping the masker in either
text or data. The decision is made per line: the completing chunk's masked text must still
begin with that line, unchanged, for the earlier chunks to keep their data.

Known limits, all consequences of masking what was visible rather than every byte:

* Bytes a terminal never showed, or showed and then erased (a line typed and deleted, a
  progress line overwritten, text inside an OSC title), are not in any line the masker sees,
  so they decide nothing about ``data_safe``; the raw data of such a chunk still holds them.
* The terminal width is unknown. A command line longer than the terminal is wrapped by
  readline with `` \\r`` at the edge; here that ``\\r`` returns to the start of the logical
  line, so the continuation overwrites its beginning and a secret straddling the wrap
  column can reach the masker in two pieces.
* The memory bounds force line ends: a line cut at ``max_line_chars`` and a line
  force-completed after ``max_held_chunks`` chunks are masked piece by piece, so a secret
  straddling such a cut is seen in two pieces (and an incomplete UTF-8 character at a
  forced end decodes as U+FFFD).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

Mask = Callable[[str], tuple[str, frozenset[str]]]
"""Masks credentials in a text: the masked text and the names of the rules that fired."""

DEFAULT_MAX_LINE_CHARS: Final = 16_384
DEFAULT_MAX_HELD_CHUNKS: Final = 64


def _c1_or_replace(error: UnicodeError) -> tuple[str, int]:
    """Decode a lone byte 0x80-0x9F as its C1 control; anything else invalid as U+FFFD."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    bad = error.object[error.start : error.end]
    if len(bad) == 1 and 0x80 <= bad[0] <= 0x9F:
        return chr(bad[0]), error.end
    return "\ufffd", error.end


_ERRORS: Final = "auditstream.replaytext.c1"
codecs.register_error(_ERRORS, _c1_or_replace)

# Parser states.
_GROUND: Final = 0
_ESC: Final = 1  # after ESC
_ESC_INTERMEDIATE: Final = 2  # ESC followed by 0x20-0x2F (``ESC ( B``): until a final byte
_CSI: Final = 3
_OSC: Final = 4  # ends at BEL or ST
_STRING: Final = 5  # DCS, SOS, PM, APC: end at ST only
_STRING_ESC: Final = 6  # ESC inside OSC or a string: ``\`` completes ST

# Runs handled in bulk: printable text in the ground state, and the body of OSC and strings.
_PRINTABLE: Final = re.compile(r"[^\x00-\x1f\x7f-\x9f]+")
_STRING_BODY: Final = re.compile(r"[^\x07\x18\x1a\x1b\x9c]+")
_CAN_SUB: Final = "\x18\x1a"
_STRING_STARTS: Final = "\x90\x98\x9e\x9f"  # C1 DCS, SOS, PM, APC
_MAX_CSI_PARAMS: Final = 32  # parameter characters kept; a longer CSI is consumed and ignored
_ALT_SCREEN: Final = frozenset({"47", "1047", "1049"})  # DEC private modes: the alternate screen


class TerminalDecoder:
    """Terminal output bytes -> completed lines of visible text, incrementally, for one session.

    ``feed`` returns the lines the data completed (the current, partial line stays inside
    until its newline arrives); ``flush`` returns the partial line at session end. See the
    module docstring for the controls honoured.
    """

    def __init__(self, max_line_chars: int = DEFAULT_MAX_LINE_CHARS) -> None:
        if max_line_chars < 1:
            raise ValueError(f"max_line_chars must be at least 1, got {max_line_chars}")
        self._max = max_line_chars
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors=_ERRORS)
        self._state = _GROUND
        self._line: list[str] = []  # cells of the current line, len <= max_line_chars
        self._cursor = 0  # column, 0 <= cursor <= max_line_chars (== max: the next write cuts)
        self._out: list[str] = []  # lines completed during the current call
        self._params = ""
        self._csi_private = ""  # the private marker of a DEC sequence (``CSI ? 1049 h``)
        self._csi_ignored = False  # intermediate byte, misplaced marker or too many parameters

    @property
    def pending(self) -> bool:
        """True while bytes already fed belong to a line not completed yet.

        That includes what is not visible yet: a half-received escape sequence or UTF-8
        character, or a cursor moved right on an empty line.
        """
        return (
            bool(self._line) or self._cursor != 0 or self._state != _GROUND or bool(self._utf8.getstate()[0])
        )

    def feed(self, data: bytes) -> list[str]:
        """The lines completed by ``data``, without their newline."""
        self._consume(self._utf8.decode(data))
        return self._take()

    def flush(self) -> list[str]:
        """At session end: the partial line, if anything on it is visible.

        An incomplete UTF-8 character decodes as U+FFFD and an unterminated escape sequence
        is abandoned; the decoder can then be fed a new stream.
        """
        self._consume(self._utf8.decode(b"", final=True))
        self._state = _GROUND
        self._complete_visible()
        self._cursor = 0
        return self._take()

    def break_line(self) -> list[str]:
        """Force a line end here: the partial line, as is, becomes a completed line.

        Used to bound how long a line can hold chunks back. Unlike a newline, trailing spaces
        are kept (the rest of the line follows in the next pieces), an incomplete UTF-8
        character decodes as U+FFFD now, and an escape sequence in progress continues.
        """
        self._consume(self._utf8.decode(b"", final=True))
        if self._line:
            self._out.append("".join(self._line))
            self._line.clear()
        self._cursor = 0
        return self._take()

    def _take(self) -> list[str]:
        out, self._out = self._out, []
        return out

    # Parsing.

    def _consume(self, text: str) -> None:
        i, n = 0, len(text)
        while i < n:
            state = self._state
            if state == _GROUND:
                match = _PRINTABLE.match(text, i)
                if match is not None:
                    self._write(match.group())
                    i = match.end()
                else:
                    self._control(text[i])
                    i += 1
            elif state in (_OSC, _STRING):
                match = _STRING_BODY.match(text, i)
                if match is not None:
                    i = match.end()
                    continue
                char = text[i]
                i += 1
                if char == "\x1b":
                    self._state = _STRING_ESC
                elif char == "\x9c" or char in _CAN_SUB or (char == "\x07" and state == _OSC):
                    self._state = _GROUND
                # BEL inside DCS/SOS/PM/APC is part of the string.
            elif self._escape(text[i]):  # False: the character ended the sequence; read it again
                i += 1

    def _control(self, char: str) -> None:
        """A control character outside any sequence (or a C0 control inside one)."""
        if char == "\n":
            self._out.append("".join(self._line).rstrip(" "))
            self._line.clear()
            self._cursor = 0
        elif char == "\r":
            self._cursor = 0
        elif char == "\b":
            if self._cursor > 0:
                self._cursor -= 1
        elif char == "\t":
            self._write("\t")
        elif char == "\x7f":
            if self._cursor > 0:
                self._cursor -= 1
                del self._line[self._cursor : self._cursor + 1]
        elif char == "\x1b":
            self._state = _ESC
        elif char == "\x9b":
            self._start_csi()
        elif char == "\x9d":
            self._state = _OSC
        elif char in _STRING_STARTS:
            self._state = _STRING
        # Any other control (BEL, SO/SI, a stray ST...) changes nothing visible.

    def _escape(self, char: str) -> bool:
        """One character in the ESC, ESC-intermediate, CSI or string-ESC state.

        False when the character is not part of the sequence: the sequence is over and the
        caller reads the character again in the new state.
        """
        state = self._state
        if state == _STRING_ESC:
            if char == "\\":
                self._state = _GROUND
                return True
            self._state = _ESC  # ESC ends the string and starts a new sequence
            return False
        code = ord(char)
        if code < 0x20:
            if char == "\x1b":
                self._state = _ESC
            elif char in _CAN_SUB:
                self._state = _GROUND
            else:
                self._control(char)  # executed in place, as a VT parser does
            return True
        if code == 0x7F:
            return True
        if state == _ESC:
            if char == "[":
                self._start_csi()
            elif char == "]":
                self._state = _OSC
            elif char in "PX^_":
                self._state = _STRING
            elif code < 0x30:
                self._state = _ESC_INTERMEDIATE
            else:
                self._state = _GROUND
                return code < 0x7F  # a final byte: ESC 7, ESC =, ESC M...
            return True
        if state == _ESC_INTERMEDIATE:
            if code < 0x30:
                return True
            self._state = _GROUND
            return code < 0x7F
        # CSI
        if code < 0x30:
            self._csi_ignored = True  # intermediate bytes: no sequence honoured here has one
        elif code < 0x40:
            if char in "<=>?":
                if self._params or self._csi_private:
                    self._csi_ignored = True
                self._csi_private = char
            elif len(self._params) >= _MAX_CSI_PARAMS:
                self._csi_ignored = True
            else:
                self._params += char
        else:
            self._state = _GROUND
            if code >= 0x7F:
                return False
            if self._csi_ignored:
                pass
            elif not self._csi_private:
                self._csi(char)
            elif self._csi_private == "?" and char in "hl" and _ALT_SCREEN & set(self._params.split(";")):
                self._complete_visible()  # what the full-screen program showed last
                self._cursor = 0
        return True

    def _start_csi(self) -> None:
        self._state = _CSI
        self._params = ""
        self._csi_private = ""
        self._csi_ignored = False

    def _csi(self, final: str) -> None:
        """Apply the CSI sequences the line model honours; every other one is dropped."""
        args = [int(p.partition(":")[0] or 0) for p in self._params.split(";")]
        first = args[0]
        count = max(first, 1)  # movement and editing counts: 0 or missing means 1
        line, cursor = self._line, self._cursor
        if final == "K" or (final == "J" and first == 0):
            if first == 0:
                del line[cursor:]
            elif first == 1:
                end = min(cursor + 1, len(line))
                line[:end] = " " * end
            elif first == 2:
                line.clear()
        elif final == "D":
            self._cursor = max(cursor - count, 0)
        elif final == "C":
            self._cursor = min(cursor + count, self._max)
        elif final in "G`":
            self._cursor = min(count - 1, self._max)
        elif final == "P":
            del line[cursor : cursor + count]
        elif final == "@":
            if cursor < len(line):
                line[cursor:cursor] = " " * min(count, self._max - cursor)
                del line[self._max :]
        elif final == "X":
            end = min(cursor + count, len(line))
            if end > cursor:
                line[cursor:end] = " " * (end - cursor)
        elif final in "HfdEFJ":
            self._complete_visible()
            if final in "Hf":
                column = args[1] if len(args) > 1 else 1
                self._cursor = min(max(column, 1) - 1, self._max)
            elif final in "EF":
                self._cursor = 0
            # d (row only) and J (clear) keep the column.

    # The line.

    def _write(self, run: str) -> None:
        """Write printable characters at the cursor, overwriting, cutting at the width cap."""
        line = self._line
        cursor, n = self._cursor, len(run)
        if cursor + n <= self._max and cursor <= len(line):  # the common case, in one step
            line[cursor : cursor + n] = run
            self._cursor = cursor + n
            return
        pos = 0
        while pos < n:
            if self._cursor >= self._max:
                if line:
                    self._out.append("".join(line))
                    line.clear()
                self._cursor = 0
            cursor = self._cursor
            part = run[pos : pos + self._max - cursor]
            pos += len(part)
            if cursor > len(line):
                line.extend(" " * (cursor - len(line)))
            line[cursor : cursor + len(part)] = part
            self._cursor = cursor + len(part)

    def _complete_visible(self) -> None:
        """End the current line if something on it is visible, and start an empty one."""
        text = "".join(self._line).rstrip(" ")
        if text:
            self._out.append(text)
        self._line.clear()


@dataclass(frozen=True)
class ChunkText:
    """The readable output of one chunk, and whether its raw data may be shipped."""

    index: int
    """The chunk's position in the session, from 0."""
    text: str
    """The lines completed within this chunk, masked, joined with ``\\n``."""
    masked_rules: frozenset[str]
    """Rules that fired on any line this chunk contributed bytes to. For a line completed in
    a later chunk that masking altered, all rules that fired on that chunk's text (the
    masker reports rules per text, not per line)."""
    data_safe: bool
    """False when masking altered a line this chunk contributed bytes to: its raw
    ``events[].data`` would show what the text hides, so it must not be shipped."""


@dataclass
class _Result:
    """A chunk's masked text; ``data_safe`` and ``rules`` still grow while it is held."""

    index: int
    lines: list[str]
    text: str
    rules: frozenset[str]
    data_safe: bool

    def chunk_text(self) -> ChunkText:
        return ChunkText(self.index, self.text, self.rules, self.data_safe)


class ReplayAssembler:
    """Chunks of one session -> one ``ChunkText`` per chunk, masked, in index order.

    ``add`` returns the chunks whose result is final: a chunk that ends inside a line is
    held until a later chunk completes that line (the line is masked only then, whole),
    because whether its raw data is safe depends on how masking treats that line. To bound
    memory, when ``max_held_chunks`` chunks already wait on one line, the next chunk that
    still ends inside it force-completes it (as if a newline ended the line there), so no
    more than ``max_held_chunks`` chunks are ever held, whatever the session prints.
    ``finish`` completes the session: the partial line is attributed to the last chunk.

    ``mask=None`` turns masking off: plain text, ``data_safe`` always True.
    """

    def __init__(
        self,
        mask: Mask | None,
        *,
        max_line_chars: int = DEFAULT_MAX_LINE_CHARS,
        max_held_chunks: int = DEFAULT_MAX_HELD_CHUNKS,
    ) -> None:
        if max_held_chunks < 1:
            raise ValueError(f"max_held_chunks must be at least 1, got {max_held_chunks}")
        self._mask = mask
        self._decoder = TerminalDecoder(max_line_chars)
        self._max_held = max_held_chunks
        # Chunks that contributed bytes to the pending line, in index order. Only the first
        # can have lines of its own: a later one completing a line would have released it.
        self._held: list[_Result] = []
        self._last_index = -1
        self._finished = False

    def add(self, index: int, events: Sequence[bytes]) -> list[ChunkText]:
        """Decode one chunk's events; the chunks whose result is now final, in index order.

        ``index`` must be greater than the previous chunk's: chunks are one byte stream and
        must arrive in order.
        """
        if self._finished:
            raise RuntimeError("add() after finish(): the session is complete")
        if index <= self._last_index:
            raise ValueError(f"chunk {index} after chunk {self._last_index}: chunks must arrive in order")
        self._last_index = index
        lines: list[str] = []
        for data in events:
            lines.extend(self._decoder.feed(data))
        pending = self._decoder.pending
        if pending and len(self._held) >= self._max_held:
            lines.extend(self._decoder.break_line())
            pending = False
        result, first_line_altered = self._masked(index, lines)
        out: list[ChunkText] = []
        if self._held and (lines or not pending):
            # The held chunks' line is complete (it is lines[0]) or was erased unseen.
            out.extend(self._release(first_line_altered, result.rules))
        if pending:
            self._held.append(result)
        else:
            out.append(result.chunk_text())
        return out

    def finish(self) -> list[ChunkText]:
        """Session end: every chunk still held, the partial line attributed to the last one."""
        if self._finished:
            return []
        self._finished = True
        lines = self._decoder.flush()
        if not self._held:
            # Nothing can be pending: the last chunk ended on a line end, or a forced one.
            return []
        last = self._held.pop()
        result, first_line_altered = self._masked(last.index, last.lines + lines)
        # Predecessors of ``last`` contributed only to the partial line, which is the first
        # line of ``last``'s text whenever there are any (see ``_held``).
        out = self._release(first_line_altered, result.rules)
        out.append(result.chunk_text())
        return out

    def _masked(self, index: int, lines: list[str]) -> tuple[_Result, bool]:
        """Mask a chunk's text as a whole: its result, and whether its first line changed.

        The first line is where earlier chunks' bytes can be; it is unaltered when the
        masked text still starts with it followed by its newline (a change anywhere in it,
        or to the newline, counts). Rules that fired without any visible change cannot be
        located, so they count as altering the first line too.
        """
        text = "\n".join(lines)
        if self._mask is None or not lines:
            return _Result(index, lines, text, frozenset(), True), False
        masked, rules = self._mask(text)
        if masked == text and not rules:
            return _Result(index, lines, text, frozenset(), True), False
        first_unaltered = masked != text and len(lines) > 1 and masked.startswith(lines[0] + "\n")
        return _Result(index, lines, masked, frozenset(rules), False), not first_unaltered

    def _release(self, line_altered: bool, rules: frozenset[str]) -> list[ChunkText]:
        """Final results of the held chunks, whose line was altered by masking or not."""
        out = []
        for held in self._held:
            if line_altered:
                held.data_safe = False
                held.rules = held.rules | rules
            out.append(held.chunk_text())
        self._held.clear()
        return out
