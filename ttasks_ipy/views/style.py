"""The look shared by every widget view: status colours, badges, bars, clocks. Pure functions returning HTML.

Colours work on light and dark JupyterLab themes: structure uses the
``--jp-*`` CSS variables with light fallbacks (Notebook 7, VS Code), status
colours are fixed. Every argument that may come from a task is escaped here.
"""
from __future__ import annotations

import html

#: status word -> (strong colour, soft background)
STATUS_COLOURS: dict[str, tuple[str, str]] = {
    "pending": ("#6e7781", "#eaeef2"),
    "queued": ("#6e7781", "#eaeef2"),
    "running": ("#0969da", "#ddf4ff"),
    "stalled": ("#9a6700", "#fff8c5"),
    "succeeded": ("#1a7f37", "#dafbe1"),
    "failed": ("#cf222e", "#ffebe9"),
    "cancelled": ("#bc4c00", "#fff1e5"),
    "blocked": ("#8250df", "#fbefff"),
}

#: the order statuses are counted in
STATUS_ORDER = ("running", "stalled", "queued", "pending", "succeeded", "failed", "cancelled", "blocked")

FONT = "var(--jp-ui-font-family,-apple-system,BlinkMacSystemFont,'Segoe UI',Helvetica,Arial,sans-serif)"
MONO = "var(--jp-code-font-family,SFMono-Regular,Menlo,Consolas,'Liberation Mono',monospace)"
TEXT = "var(--jp-ui-font-color1,#1f2328)"
MUTED = "var(--jp-ui-font-color2,#656d76)"
SURFACE = "var(--jp-layout-color1,#ffffff)"
SUNKEN = "var(--jp-layout-color2,#f6f8fa)"
BORDER = "var(--jp-border-color2,#d0d7de)"

#: lets an HTML widget's content shrink to its row, so wide content scrolls or is cut instead of
#: widening the view past the output area (ipywidgets gives ``.widget-html-content`` no min-width)
FIT = (
    "<style>.ttasks-card .widget-html-content,.ttasks-graph .widget-html-content,"
    ".ttasks-dashboard .widget-html-content{flex:1 1 auto;min-width:0;line-height:normal}</style>"
)


def esc(text: object) -> str:
    """``text`` HTML-escaped (quotes too, so it is safe in attributes)."""
    return html.escape(str(text), quote=True)


def colours(status: str) -> tuple[str, str]:
    """The (strong, soft) colours of ``status``."""
    return STATUS_COLOURS.get(status, STATUS_COLOURS["pending"])


def badge(status: str, colour_of: str | None = None) -> str:
    """A rounded status pill saying ``status``, in the colours of ``colour_of`` (default: ``status``)."""
    fg, bg = colours(colour_of or status)
    return (
        f'<span class="ttasks-badge" style="display:inline-block;padding:0 8px;border-radius:10px;'
        f"font-size:11px;font-weight:600;line-height:18px;letter-spacing:.02em;color:{fg};background:{bg};"
        f'border:1px solid {fg}33">{esc(status)}</span>'
    )


def chip(text: str) -> str:
    """A small monospace label (the task kind)."""
    return (
        f'<span style="font-family:{MONO};font-size:11px;line-height:16px;padding:0 5px;border-radius:4px;'
        f'color:{MUTED};background:{SUNKEN};border:1px solid {BORDER}">{esc(text)}</span>'
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
    "BORDER", "FIT", "FONT", "MONO", "MUTED", "STATUS_COLOURS", "STATUS_ORDER", "SUNKEN", "SURFACE", "TEXT",
    "badge", "bar", "chip", "clock", "colours", "duration", "esc", "shorten",
]
