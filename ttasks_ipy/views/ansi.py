"""The last lines of a task's output as a terminal would show them, rendered to safe HTML.

``tail_lines(pieces)`` takes the ``(stream, text)`` pieces of
``TaskOutput.tail_mixed()`` and plays their last few kilobytes through a tiny
terminal: ``\\n`` starts a line, ``\\r`` moves back to its start so later text
overwrites it character by character, ``\\b`` steps back, ``ESC[K`` erases, SGR
sequences (``ESC[...m``) set colours and weights; every other control sequence
is dropped. Each character keeps the stream it came from, so stderr can be told
apart. ``lines_html`` turns the result into HTML in which every piece of task
text is escaped: output is untrusted.

The work per call is bounded whatever the task printed: at most ``max_chars``
of raw text are read, and the segments of a line that later ``\\r`` rewrites
hide completely are skipped before any per-character work.
"""
from __future__ import annotations

import functools
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .style import STDERR_MARK, STDERR_TEXT, ansi_colour

#: SGR state: (fg, bg, bold, dim, italic, underline, inverse); colours are CSS strings or None
Style = tuple[str | None, str | None, bool, bool, bool, bool, bool]
PLAIN: Style = (None, None, False, False, False, False, False)

# zero-width markers for "the following text came from stdout / stderr" (private use area)
_OUT, _ERR = "\ue000", "\ue001"
_MARK = {"stdout": _OUT, "stderr": _ERR}

_TOKEN = re.compile(
    r"\x1b\[([0-9;?]*)([@-~])"  # CSI: params, final byte
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC (titles, hyperlinks): dropped
    r"|\x1b.?"  # any other escape (two characters)
    r"|([\r\b\ue000\ue001])"  # cursor controls and stream markers
    r"|([^\x1b\r\b\ue000\ue001]+)"  # text
)
_OSC = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?")
_ZERO_WIDTH = re.compile(r"\x1b\[[0-9;?]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b.?|[\ue000\ue001]")
_CONTROL = re.compile(r"[\x00-\x07\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f]")  # keeps \t \n \r \b and ESC
_TQDM = re.compile(r"(\d{1,3}(?:\.\d+)?)%\|")

#: the 16 ANSI colours as CSS, following the theme (``style.ANSI_LIGHT`` and ``style.ANSI_DARK``)
PALETTE = tuple(ansi_colour(n) for n in range(16))


@dataclass(frozen=True)
class Run:
    """Consecutive characters of one line with the same style and stream."""

    text: str
    style: Style
    stderr: bool


@dataclass(frozen=True)
class Line:
    """One rendered line: its runs, and whether it was cut at ``width``."""

    runs: tuple[Run, ...]
    cut: bool = False

    @property
    def text(self) -> str:
        """The line as plain text."""
        return "".join(r.text for r in self.runs)

    @property
    def stderr(self) -> bool:
        """True when any of it came from stderr."""
        return any(r.stderr for r in self.runs)


def tail_lines(
    pieces: Sequence[tuple[str, str]],
    max_lines: int = 8,
    *,
    max_chars: int = 16_384,
    width: int = 400,
) -> list[Line]:
    """The last ``max_lines`` lines of ``pieces`` as a terminal shows them (a trailing newline ends a line)."""
    raw, complete = _collect(pieces, max_lines + 1, max_chars)
    lines = _play(raw, width)
    if lines and not lines[-1].runs:
        lines.pop()  # the text ended with a newline
    if not complete and len(lines) > 1:
        lines.pop(0)  # the first line was cut by max_chars
    return lines[-max_lines:] if max_lines > 0 else []


def tqdm_percent(lines: Sequence[Line]) -> float | None:
    """The percentage of the last tqdm-style bar (``45%|████  | 45/100``) in ``lines``, or None."""
    for line in reversed(lines):
        found = _TQDM.findall(line.text)
        if found:
            return min(100.0, float(found[-1]))
    return None


def lines_html(lines: Sequence[Line]) -> str:
    """``lines`` as HTML ``<div>``s; stderr lines carry the class ``ttasks-stderr``. All text escaped."""
    out = []
    for line in lines:
        body = "".join(_run_html(r) for r in line.runs) or " "
        if line.cut:
            body += '<span style="opacity:.6">…</span>'
        if line.stderr:
            out.append(
                '<div class="ttasks-stderr" style="background:rgba(229,83,75,.09);'
                f'box-shadow:inset 3px 0 0 {STDERR_MARK};padding-left:6px">'
                f"{body}</div>"
            )
        else:
            out.append(f'<div style="padding-left:6px">{body}</div>')
    return "".join(out)


def strip(text: str) -> str:
    """``text`` without escape sequences or control characters (``\\n`` and ``\\t`` kept)."""
    return _CONTROL.sub("", _ZERO_WIDTH.sub("", _OSC.sub("", text))).replace("\r", "").replace("\b", "")


# ---- collecting ------------------------------------------------------------
def _collect(pieces: Sequence[tuple[str, str]], newlines: int, max_chars: int) -> tuple[str, bool]:
    """The last part of ``pieces`` as one string with stream markers; False if cut by ``max_chars``."""
    taken: list[str] = []
    seen_nl = chars = 0
    complete = True
    for stream, text in reversed(pieces):
        room = max_chars - chars
        if len(text) > room:
            text = text[-room:] if room > 0 else ""
            complete = False
        taken.append(_MARK.get(stream, _OUT) + text)
        chars += len(text)
        seen_nl += text.count("\n")
        if not complete or seen_nl > newlines:
            break
    raw = "".join(reversed(taken))
    if seen_nl > newlines:  # start at a line boundary: drop the part before the first needed line
        cut = _nth_newline_from_end(raw, newlines + 1)
        if cut >= 0:
            # keep the stream marker in force at the cut
            marker = raw[: cut + 1].rfind(_ERR), raw[: cut + 1].rfind(_OUT)
            raw = (_ERR if marker[0] > marker[1] else _OUT) + raw[cut + 1:]
            complete = True
    return raw, complete


def _nth_newline_from_end(s: str, n: int) -> int:
    pos = len(s)
    for _ in range(n):
        pos = s.rfind("\n", 0, pos)
        if pos < 0:
            return -1
    return pos


# ---- the terminal ----------------------------------------------------------
def _play(raw: str, width: int) -> list[Line]:
    raw = _CONTROL.sub("", _OSC.sub("", raw))
    style, err = PLAIN, False
    lines = []
    for text in raw.split("\n"):
        if "\r" not in text and "\b" not in text and "\x1b" not in text:
            lines.append(_fast_line(text, style, err, width))  # the common case: no cursor movement
            mk = max(text.rfind(_OUT), text.rfind(_ERR))
            if mk >= 0:
                err = text[mk] == _ERR
            continue
        line, style, err = _slow_line(text, style, err, width)
        lines.append(line)
    return lines


def _fast_line(text: str, style: Style, err: bool, width: int) -> Line:
    runs = []
    for part in re.split(r"([\ue000\ue001])", text):
        if part == _OUT:
            err = False
        elif part == _ERR:
            err = True
        elif part:
            runs.append(Run(part, style, err))
    return _cap(runs, width)


def _slow_line(text: str, style: Style, err: bool, width: int) -> tuple[Line, Style, bool]:
    cells: list[tuple[str, Style, bool]] = []
    col = 0
    for m in _TOKEN.finditer(_prune(text)):
        params, final, ctrl, chunk = m.group(1), m.group(2), m.group(3), m.group(4)
        if chunk:
            if col > len(cells):
                cells.extend((" ", style, err) for _ in range(col - len(cells)))
            new = [(c, style, err) for c in chunk[: max(0, width + 1 - col)]]
            cells[col:col + len(new)] = new
            col += len(chunk)
        elif ctrl == "\r":
            col = 0
        elif ctrl == "\b":
            col = max(0, col - 1)
        elif ctrl == _OUT:
            err = False
        elif ctrl == _ERR:
            err = True
        elif final == "m":
            style = _sgr(style, params or "0")
        elif final == "K":
            mode = params or "0"
            if mode == "0":
                del cells[col:]
            elif mode == "1":
                cells[:col] = [(" ", style, err)] * min(col, len(cells))
            elif mode == "2":
                cells = [(" ", style, err)] * min(col, len(cells))
        elif final == "G":
            col = max(0, _int(params, 1) - 1)
        elif final == "C":
            col += _int(params, 1)
        elif final == "D":
            col = max(0, col - _int(params, 1))
    runs: list[Run] = []
    for c, st, e in cells[: width + 1]:
        if runs and runs[-1].style == st and runs[-1].stderr == e:
            runs[-1] = Run(runs[-1].text + c, st, e)
        else:
            runs.append(Run(c, st, e))
    return _cap(runs, width), style, err


def _prune(text: str) -> str:
    """Drop the visible text of ``\\r`` segments that later segments overwrite completely.

    A segment is hidden when a later one (free of ``\\b`` and cursor moves) is at
    least as long; its zero-width tokens (colours, stream markers) are kept in
    place so the state that follows is exact.
    """
    segments = text.split("\r")
    if len(segments) < 3:
        return text
    covered = 0
    kept = [""] * len(segments)
    for i in range(len(segments) - 1, -1, -1):
        seg = segments[i]
        visible = _ZERO_WIDTH.sub("", seg)
        if len(visible) > covered or "\b" in seg or "\x1b[" in seg and _moves(seg):
            kept[i] = seg
            if "\b" not in seg and not _moves(seg):
                covered = max(covered, len(visible))
        else:
            kept[i] = "".join(_ZERO_WIDTH.findall(seg))
    return "\r".join(kept)


def _moves(seg: str) -> bool:
    return bool(re.search(r"\x1b\[[0-9;?]*[A-HJKSTf]", seg))


def _cap(runs: list[Run], width: int) -> Line:
    total = 0
    for i, r in enumerate(runs):
        if total + len(r.text) > width:
            head = Run(r.text[: width - total], r.style, r.stderr)
            return Line(tuple([*runs[:i], head] if head.text else runs[:i]), cut=True)
        total += len(r.text)
    return Line(tuple(runs))


def _int(s: str, default: int) -> int:
    try:
        return int(s) if s else default
    except ValueError:
        return default


# ---- SGR -------------------------------------------------------------------
def _sgr(style: Style, params: str) -> Style:
    fg, bg, bold, dim, italic, underline, inverse = style
    codes = [_int(p, 0) for p in params.split(";")]
    i = 0
    while i < len(codes):
        c = codes[i]
        if c == 0:
            fg, bg, bold, dim, italic, underline, inverse = PLAIN
        elif c == 1:
            bold = True
        elif c == 2:
            dim = True
        elif c == 3:
            italic = True
        elif c == 4:
            underline = True
        elif c == 7:
            inverse = True
        elif c == 22:
            bold = dim = False
        elif c == 23:
            italic = False
        elif c == 24:
            underline = False
        elif c == 27:
            inverse = False
        elif 30 <= c <= 37:
            fg = PALETTE[c - 30]
        elif 90 <= c <= 97:
            fg = PALETTE[c - 90 + 8]
        elif c == 39:
            fg = None
        elif 40 <= c <= 47:
            bg = PALETTE[c - 40]
        elif 100 <= c <= 107:
            bg = PALETTE[c - 100 + 8]
        elif c == 49:
            bg = None
        elif c in (38, 48) and i + 1 < len(codes):
            colour, used = _extended(codes[i + 1:])
            if c == 38:
                fg = colour
            else:
                bg = colour
            i += used
        i += 1
    return (fg, bg, bold, dim, italic, underline, inverse)


def _extended(rest: list[int]) -> tuple[str | None, int]:
    """``5;n`` (256 colours) or ``2;r;g;b`` (true colour): the CSS colour and how many codes it used."""
    if rest[0] == 5 and len(rest) >= 2:
        return _xterm256(rest[1]), 2
    if rest[0] == 2 and len(rest) >= 4:
        r, g, b = (max(0, min(255, v)) for v in rest[1:4])
        return f"#{r:02x}{g:02x}{b:02x}", 4
    return None, 1


def _xterm256(n: int) -> str | None:
    if not 0 <= n <= 255:
        return None
    if n < 16:
        return PALETTE[n]
    if n < 232:
        n -= 16
        steps = (0, 95, 135, 175, 215, 255)
        return f"#{steps[n // 36]:02x}{steps[n // 6 % 6]:02x}{steps[n % 6]:02x}"
    v = 8 + (n - 232) * 10
    return f"#{v:02x}{v:02x}{v:02x}"


@functools.lru_cache(maxsize=512)
def _css(style: Style, stderr: bool) -> str:
    fg, bg, bold, dim, italic, underline, inverse = style
    if inverse:
        fg, bg = (bg or "var(--jp-layout-color1,#fff)"), (fg or "var(--jp-ui-font-color1,#1f2328)")
    if fg is None and stderr:
        fg = STDERR_TEXT
    parts = []
    if fg:
        parts.append(f"color:{fg}")
    if bg:
        parts.append(f"background:{bg}")
    if bold:
        parts.append("font-weight:700")
    if dim:
        parts.append("opacity:.7")
    if italic:
        parts.append("font-style:italic")
    if underline:
        parts.append("text-decoration:underline")
    return ";".join(parts)


def _run_html(run: Run) -> str:
    text = html.escape(run.text, quote=False)
    css = _css(run.style, run.stderr)
    return f'<span style="{css}">{text}</span>' if css else text


__all__ = ["PALETTE", "PLAIN", "Line", "Run", "Style", "lines_html", "strip", "tail_lines", "tqdm_percent"]
