"""WCAG contrast ratios measured in the page, for the browser test's light and dark theme checks.

``page.evaluate(CONTRAST_JS, selector)`` returns one record per pair it measures
under the elements matching ``selector``: ``kind`` (``text``, ``badge``,
``edge``, ``bar``, ``node``), a ``label``, the colour as shown and the colour it
is shown on (``#rrggbb``, alpha and opacity composited), their ``ratio`` and the
``need`` of WCAG AA (4.5 for text, 3 for marks).
"""
from __future__ import annotations

#: WCAG contrast of what the views draw, from the page's computed styles: every element with text of its own
#: (and SVG text on its node), against the background it is drawn on (alpha and opacity composited), and
#: the status marks (a card's edge, a progress bar on its track, a graph node's outline)
CONTRAST_JS = """
(roots) => {
  const parse = (c) => {
    const m = c && c.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, bottom) => [0, 1, 2].map(i => top[i] * top[3] + bottom[i] * (1 - top[3])).concat([1]);
  const lum = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
  };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const backdrop = (el) => {
    const layers = [];
    for (let e = el; e && e.nodeType === 1; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let bg = [255, 255, 255, 1];
    for (let i = layers.length - 1; i >= 0; i--) bg = over(layers[i], bg);
    return bg;
  };
  const opacity = (el) => {
    let o = 1;
    for (let e = el; e && e.nodeType === 1; e = e.parentElement) o *= parseFloat(getComputedStyle(e).opacity);
    return o;
  };
  const hex = (c) => '#' + c.slice(0, 3).map(v => Math.round(v).toString(16).padStart(2, '0')).join('');
  const out = [];
  const check = (el, kind, fgRaw, bg, need, label) => {
    const fg = parse(fgRaw);
    if (!fg) return;
    fg[3] *= opacity(el);
    const shown = over(fg, bg);
    out.push({kind, label: label.slice(0, 40), fg: hex(shown), bg: hex(bg), ratio: ratio(shown, bg), need});
  };
  for (const root of document.querySelectorAll(roots)) {
    for (const el of [root, ...root.querySelectorAll('*')]) {
      if (el.closest('svg') || !el.getClientRects().length) continue;  // drawn apart, or not shown
      const own = [...el.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent).join('').trim();
      if (own) check(el, el.closest('.ttasks-badge') ? 'badge' : 'text', getComputedStyle(el).color,
                     backdrop(el), 4.5, own);
    }
    for (const body of [root].filter(r => r.classList.contains('ttasks-card-body'))) {
      check(body, 'edge', getComputedStyle(body).borderLeftColor, backdrop(body), 3, body.dataset.task || '');
    }
    for (const barEl of root.querySelectorAll('.ttasks-bar[data-percent]:not([data-percent=""])')) {
      check(barEl, 'bar', getComputedStyle(barEl).backgroundColor, backdrop(barEl.parentElement), 3, 'bar');
    }
    for (const node of root.querySelectorAll('g.ttasks-node')) {
      const rect = node.querySelector('rect');
      const page = backdrop(node.closest('svg').parentElement);
      const fill = over(parse(getComputedStyle(rect).fill), page);
      check(rect, 'node', getComputedStyle(rect).stroke, page, 3, node.dataset.name);
      for (const t of node.querySelectorAll('text')) {
        check(t, 'text', getComputedStyle(t).fill, fill, 4.5, t.textContent);
      }
    }
  }
  return out;
}
"""


__all__ = ["CONTRAST_JS"]
