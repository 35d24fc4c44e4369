"""A small self-contained HTML report: headings, text, tables and matplotlib figures embedded as base64 PNG.

Shared by the commands that write a report (``probe``, later ``forecast`` and ``perturb``). The page carries its CSS
inline and references no network resource, so it opens offline and can be archived as one file.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import pandas as pd

from brainfm_cli import __version__
from brainfm_cli.io.files import atomic_write

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 72em; padding: 0 1em; color: #1b1b1b; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #bbb; }
h3 { font-size: 1.05em; }
.table { max-width: 100%; overflow-x: auto; margin: .3em 0 .8em; }
p.caption { font-weight: 600; margin: .8em 0 0; }
table { border-collapse: collapse; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f0f0f0; }
td { white-space: nowrap; }
td.text, th.text { text-align: left; }
figure { margin: 1em 1.5em 1em 0; display: inline-block; vertical-align: top; max-width: 100%; }
figcaption { font-size: .9em; color: #444; }
figure img { display: block; width: 100%; height: auto; }
pre { background: #f6f6f6; padding: .6em; overflow-x: auto; white-space: pre-wrap; }
.note { background: #fff7e0; border-left: 4px solid #e0a800; padding: .4em .8em; margin: .6em 0; }
footer { margin-top: 3em; font-size: .85em; color: #666; }
"""


def figure_png(fig, dpi: int = 100) -> bytes:
    """Render a matplotlib ``Figure`` to PNG bytes with the Agg canvas (no display, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def new_figure(width: float = 5.0, height: float = 4.0):
    """A fresh matplotlib ``Figure`` drawn with Agg; safe in worker processes and never shown on screen."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


class HtmlReport:
    """Build a report piece by piece, then ``render()`` it or ``write(path)`` it atomically."""

    def __init__(self, title: str):
        self.title = title
        self._parts: list[str] = []

    def heading(self, text: str, level: int = 2) -> "HtmlReport":
        self._parts.append(f"<h{level}>{html.escape(text)}</h{level}>")
        return self

    def paragraph(self, text: str) -> "HtmlReport":
        self._parts.append(f"<p>{html.escape(text)}</p>")
        return self

    def note(self, text: str) -> "HtmlReport":
        """A highlighted remark the reader should not miss (dropped data, a warning about the result)."""
        self._parts.append(f'<div class="note">{html.escape(text)}</div>')
        return self

    def bullets(self, items) -> "HtmlReport":
        rows = "".join(f"<li>{html.escape(str(i))}</li>" for i in items)
        self._parts.append(f"<ul>{rows}</ul>")
        return self

    def code(self, text: str) -> "HtmlReport":
        self._parts.append(f"<pre>{html.escape(text)}</pre>")
        return self

    def table(self, df: pd.DataFrame, caption: str | None = None, float_format: str = "{:.3g}",
              numeric: tuple[str, ...] = ()) -> "HtmlReport":
        """A DataFrame as an HTML table: numbers right-aligned and formatted, text left-aligned, NaN as ``n/a``.

        ``numeric`` names columns of numbers already formatted as text (e.g. ``"0.41 – 0.62"``), aligned as numbers.
        A table wider than the page scrolls inside its own box."""
        def cell(value, tag, column):
            if isinstance(value, float):
                text = "n/a" if value != value else float_format.format(value)
                return f"<{tag}>{text}</{tag}>"
            if value is None:
                return f"<{tag}>n/a</{tag}>"
            number = (isinstance(value, int) and not isinstance(value, bool)) or column in numeric
            klass = "" if number else ' class="text"'
            return f"<{tag}{klass}>{html.escape(str(value))}</{tag}>"

        head = "".join(f'<th class="text">{html.escape(str(c))}</th>' for c in df.columns)
        body = "".join("<tr>" + "".join(cell(_plain(v), "td", c) for v, c in zip(row, df.columns)) + "</tr>"
                       for row in df.itertuples(index=False, name=None))
        cap = f'<p class="caption">{html.escape(caption)}</p>' if caption else ""  # the page's width, not the table's
        self._parts.append(f'{cap}<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
                           f"</table></div>")
        return self

    def figure(self, fig, caption: str | None = None, dpi: int = 100) -> "HtmlReport":
        """Embed a matplotlib figure as an inline PNG (``data:`` URI). The figure is as wide as its image, so its
        caption wraps under it, also when figures sit side by side."""
        png = figure_png(fig, dpi=dpi)
        width = int.from_bytes(png[16:20], "big")  # the PNG header's IHDR width, in pixels
        data = base64.b64encode(png).decode("ascii")
        alt = html.escape(caption or "figure")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self._parts.append(f'<figure style="width: {width}px"><img alt="{alt}" src="data:image/png;base64,{data}">'
                           f"{cap}</figure>")
        return self

    def render(self) -> str:
        body = "\n".join(self._parts)
        return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
                f"<title>{html.escape(self.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
                f"<h1>{html.escape(self.title)}</h1>\n{body}\n"
                f"<footer>brainfm {html.escape(__version__)}</footer>\n</body>\n</html>\n")

    def write(self, path: str | Path) -> Path:
        with atomic_write(path) as fh:
            fh.write(self.render())
        return Path(path)


def _plain(value):
    """numpy scalars as Python ones, so the table formats them like numbers."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return value.item()
        except (ValueError, AttributeError):
            return value
    return value
