"""What the widget views share: layouts and styles made once, and one way to assign traits.

Every ipywidgets widget normally opens its own ``Layout`` (and style) model;
the views here share a few instances instead, so a task card costs three
widget models, not eight. Shared instances are never changed after creation.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import ipywidgets as widgets
from ipywidgets.widgets.widget_string import HTMLStyle

W = TypeVar("W", bound=widgets.Widget)


_LAYOUTS: dict[str, dict[str, str]] = {
    # a card: the HTML fills the row, the Cancel button sits over its top-right corner
    "card": {"width": "100%", "max_width": "900px", "align_items": "flex-start", "margin": "2px 0"},
    "card_html": {"flex": "1 1 auto", "width": "auto", "min_width": "0", "margin": "0"},
    "cancel": {
        "width": "78px", "height": "26px", "flex": "0 0 auto", "margin": "9px 12px 0 -90px",
        "border": "1px solid #cf222e66", "padding": "0",
    },
    "hidden": {"display": "none"},
    "column": {"width": "100%", "max_width": "1100px", "margin": "2px 0"},
    "row": {"align_items": "center", "margin": "4px 0 0 0"},
    "fill": {"flex": "1 1 auto", "width": "auto", "min_width": "0", "margin": "0"},
    "name_box": {"width": "200px", "margin": "0 6px 0 0"},
    "button": {"width": "auto", "height": "28px", "margin": "0 6px 0 0"},
}
_shared: dict[str, widgets.Widget] = {}


def _once(key: str, make: Callable[[], W]) -> W:
    """The shared widget ``key``, made again if someone closed it (``Widget.close_all``)."""
    w = _shared.get(key)
    if w is None or w.comm is None:
        w = _shared[key] = make()
    return w  # type: ignore[return-value]


def layout(name: str) -> widgets.Layout:
    """The shared ``Layout`` called ``name`` (one of ``_LAYOUTS``)."""
    return _once("layout:" + name, lambda: widgets.Layout(**_LAYOUTS[name]))


def html_style() -> HTMLStyle:
    """The shared style of every HTML widget here."""
    return _once("html_style", HTMLStyle)


def cancel_style() -> widgets.ButtonStyle:
    """The shared style of Cancel buttons: quiet until needed."""
    return _once(
        "cancel_style",
        lambda: widgets.ButtonStyle(button_color="transparent", text_color="#cf222e", font_weight="600"),
    )


class _LateHTML(widgets.HTML):
    """An HTML widget whose comm opens with ``open_late``, not when it is made."""

    _late = True

    def open(self) -> None:
        if not self._late:
            super().open()

    def open_now(self) -> None:
        """Open the comm now, with the state the widget has (once)."""
        if self._late:
            self._late = False
            super().open()


def html_widget(value: str, layout_name: str = "fill", *, late: bool = False) -> widgets.HTML:
    """An HTML widget on the shared layout and style (``late``: its comm opens with ``open_late``)."""
    return (_LateHTML if late else widgets.HTML)(value=value, layout=layout(layout_name), style=html_style())


def open_late(widget: widgets.Widget) -> None:
    """Open the comm of a ``late`` widget now, with the state it has (nothing for one already open)."""
    if isinstance(widget, _LateHTML):
        widget.open_now()


def assign(widget: widgets.Widget, **traits: Any) -> int:
    """Set the ``traits`` that differ, in one message; return 1 if a message was sent, else 0."""
    changed = {k: v for k, v in traits.items() if getattr(widget, k) != v}
    if not changed:
        return 0
    with widget.hold_sync():
        for k, v in changed.items():
            setattr(widget, k, v)
    return 1


def is_closed(widget: widgets.Widget) -> bool:
    """True once ``widget`` was closed (its comm is gone)."""
    return widget.comm is None


__all__ = ["assign", "cancel_style", "html_style", "html_widget", "is_closed", "layout", "open_late"]
