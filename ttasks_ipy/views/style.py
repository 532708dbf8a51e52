"""The look shared by every widget view: status colours, badges, bars, clocks. Pure functions returning HTML.

Colours follow the JupyterLab theme. Structure uses the ``--jp-*`` CSS
variables with light fallbacks (Notebook 7, VS Code, nbconvert). Status and
ANSI colours are ``--ttasks-*`` variables whose fallbacks are the light
palette; :data:`THEME` sets the dark palette where the page says its theme is
dark (JupyterLab and Notebook 7 mark ``<body data-jp-theme-light="false">``,
VS Code ``<body class="vscode-dark">``). Both palettes keep text at 4.5:1 or
more against the theme's card and output backgrounds, and status marks (a
card's edge, a bar) at 3:1 or more (WCAG AA); ``tests/test_views.py`` checks
every pair. Every argument that may come from a task is escaped here.
"""
from __future__ import annotations

import html

#: status word -> (strong colour, soft background) on a light theme
STATUS_COLOURS: dict[str, tuple[str, str]] = {
    "pending": ("#59636e", "#eaeef2"),
    "queued": ("#59636e", "#eaeef2"),
    "running": ("#0969da", "#ddf4ff"),
    "stalled": ("#9a6700", "#fff8c5"),
    "succeeded": ("#1a7f37", "#dafbe1"),
    "failed": ("#cf222e", "#ffebe9"),
    "cancelled": ("#bc4c00", "#fff1e5"),
    "blocked": ("#8250df", "#fbefff"),
}

#: the same on a dark theme
DARK_STATUS_COLOURS: dict[str, tuple[str, str]] = {
    "pending": ("#9198a1", "#2a2f36"),
    "queued": ("#9198a1", "#2a2f36"),
    "running": ("#4493f8", "#142a45"),
    "stalled": ("#d29922", "#3b2e10"),
    "succeeded": ("#3fb950", "#14301d"),
    "failed": ("#ff7b72", "#3f1a1b"),
    "cancelled": ("#e0823d", "#3d2414"),
    "blocked": ("#ab7df8", "#2d2245"),
}

#: text on a strong status colour (a graph's verdict), light and dark
ON_STRONG = ("#ffffff", "#0d1117")

#: the 16 ANSI colours of output tails, light and dark theme
ANSI_LIGHT = (
    "#24292f", "#cf222e", "#116329", "#7d4e00", "#0969da", "#8250df", "#1b7c83", "#59636e",
    "#57606a", "#a40e26", "#1a7f37", "#633c01", "#0a5cc2", "#6639ba", "#136061", "#424a53",
)
ANSI_DARK = (
    "#9198a1", "#ff7b72", "#3fb950", "#d29922", "#58a6ff", "#bc8cff", "#39c5cf", "#b1bac4",
    "#a4acb6", "#ffa198", "#56d364", "#e3b341", "#79c0ff", "#d2a8ff", "#56d4dd", "#ffffff",
)
#: stderr lines of a tail: (text, marker), light and dark
STDERR_LIGHT = ("#b3261e", "#e5534b")
STDERR_DARK = ("#ff9492", "#f85149")


def _var(name: str, light: str) -> str:
    return f"var(--ttasks-{name},{light})"


def ansi_colour(n: int) -> str:
    """The CSS colour of ANSI colour ``n`` (0-15), following the theme."""
    return _var(f"ansi-{n}", ANSI_LIGHT[n])


STDERR_TEXT = _var("stderr", STDERR_LIGHT[0])
STDERR_MARK = _var("stderr-mark", STDERR_LIGHT[1])
VERDICT_TEXT = _var("on-strong", ON_STRONG[0])


def _dark_rules() -> str:
    rules = [f"--ttasks-{s}-fg:{fg};--ttasks-{s}-bg:{bg}" for s, (fg, bg) in DARK_STATUS_COLOURS.items()]
    rules += [f"--ttasks-ansi-{i}:{c}" for i, c in enumerate(ANSI_DARK)]
    rules += [f"--ttasks-stderr:{STDERR_DARK[0]}", f"--ttasks-stderr-mark:{STDERR_DARK[1]}",
              f"--ttasks-on-strong:{ON_STRONG[1]}"]
    return ";".join(rules)


#: the dark palette, set where the page's theme is dark (shown once per view, harmless when repeated)
_DARK = 'body[data-jp-theme-light="false"]', "body.vscode-dark"
#: Cancel buttons: ipywidgets styles them inline with one colour, the dark theme's is set here
_DARK_CANCEL = ",".join(f"{b} .ttasks-cancel" for b in _DARK)
THEME = (
    f"<style>{','.join(_DARK)}{{{_dark_rules()}}}"
    f"{_DARK_CANCEL}{{color:{DARK_STATUS_COLOURS['failed'][0]}!important;"
    f"border-color:{DARK_STATUS_COLOURS['failed'][0]}66!important}}</style>"
)

#: the order statuses are counted in
STATUS_ORDER = ("running", "stalled", "queued", "pending", "succeeded", "failed", "cancelled", "blocked")

FONT = "var(--jp-ui-font-family,-apple-system,BlinkMacSystemFont,'Segoe UI',Helvetica,Arial,sans-serif)"
MONO = "var(--jp-code-font-family,SFMono-Regular,Menlo,Consolas,'Liberation Mono',monospace)"
TEXT = "var(--jp-ui-font-color1,#1f2328)"
MUTED = "var(--jp-ui-font-color2,#656d76)"
SURFACE = "var(--jp-layout-color1,#ffffff)"
SUNKEN = "var(--jp-layout-color2,#f6f8fa)"
#: the background of output tails: the theme's code background
CODE_BG = "var(--jp-cell-editor-background,#f6f8fa)"
BORDER = "var(--jp-border-color2,#d0d7de)"

#: lets an HTML widget's content shrink to its row, so wide content scrolls or is cut instead of
#: widening the view past the output area (ipywidgets gives ``.widget-html-content`` no min-width)
FIT = (
    "<style>.ttasks-card .widget-html-content,.ttasks-graph .widget-html-content,"
    ".ttasks-dashboard .widget-html-content{flex:1 1 auto;min-width:0;line-height:normal}</style>"
) + THEME


def esc(text: object) -> str:
    """``text`` HTML-escaped (quotes too, so it is safe in attributes)."""
    return html.escape(str(text), quote=True)


def colours(status: str) -> tuple[str, str]:
    """The (strong, soft) CSS colours of ``status``, following the theme."""
    key = status if status in STATUS_COLOURS else "pending"
    fg, bg = STATUS_COLOURS[key]
    return _var(f"{key}-fg", fg), _var(f"{key}-bg", bg)


def badge(status: str, colour_of: str | None = None) -> str:
    """A rounded status pill saying ``status``, in the colours of ``colour_of`` (default: ``status``)."""
    fg, bg = colours(colour_of or status)
    return (
        f'<span class="ttasks-badge" style="display:inline-block;padding:0 8px;border-radius:10px;'
        f"font-size:11px;font-weight:600;line-height:18px;letter-spacing:.02em;color:{fg};background:{bg};"
        f'border:1px solid {fg}">{esc(status)}</span>'
    )


def chip(text: str) -> str:
    """A small monospace label (the task kind)."""
    return (
        f'<span style="font-family:{MONO};font-size:11px;line-height:16px;padding:0 5px;border-radius:4px;'
        f'color:{TEXT};background:{SUNKEN};border:1px solid {BORDER}">{esc(text)}</span>'
    )


def bar(percent: float | None, status: str, *, height: int = 6) -> str:
    """A progress bar: filled to ``percent``, or striped across when the amount is unknown."""
    fg, _ = colours(status)
    track = f"flex:1;height:{height}px;border-radius:{height // 2}px;background:{SUNKEN};overflow:hidden;" \
            f"box-shadow:inset 0 0 0 1px {BORDER}"
    if percent is None:
        fill = (
            f"width:100%;height:100%;opacity:.55;background:repeating-linear-gradient(-45deg,{fg} 0 6px,"
            f"transparent 6px 12px)"
        )
        width = ""
    else:
        width = f"{percent:.1f}"
        fill = f"width:{width}%;height:100%;background:{fg};border-radius:{height // 2}px"
    return (
        f'<div style="{track}"><div class="ttasks-bar" data-percent="{width}" style="{fill}"></div></div>'
    )


def clock(seconds: float) -> str:
    """A running clock with whole seconds: ``7s``, ``4m 05s``, ``1h 02m``."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def duration(seconds: float) -> str:
    """A finished duration: ``0.25s``, ``12.3s``, ``4m 05s``, ``1h 02m``."""
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    return clock(seconds)


def shorten(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis (not escaped)."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


__all__ = [
    "ANSI_DARK", "ANSI_LIGHT", "CODE_BG", "DARK_STATUS_COLOURS", "ON_STRONG", "STDERR_DARK", "STDERR_LIGHT",
    "STDERR_MARK", "STDERR_TEXT", "THEME", "VERDICT_TEXT", "ansi_colour",
    "BORDER", "FIT", "FONT", "MONO", "MUTED", "STATUS_COLOURS", "STATUS_ORDER", "SUNKEN", "SURFACE", "TEXT",
    "badge", "bar", "chip", "clock", "colours", "duration", "esc", "shorten",
]
