"""The shared HTML report builder: self-contained (inline PNG, no network), escaped, written atomically."""

import base64
import re

import numpy as np
import pandas as pd

from brainfm_cli.io.report import HtmlReport, figure_png, new_figure

from conftest import leftovers


def _figure():
    fig = new_figure(3, 2)
    fig.subplots().plot(np.arange(5), np.arange(5) ** 2)
    return fig


def test_report_is_self_contained_and_escaped(tmp_path):
    rep = HtmlReport("A <b>title</b> & more")
    rep.paragraph("1 < 2 & 3 > 2").note("careful <script>alert(1)</script>").bullets(["x < y", 3])
    rep.table(pd.DataFrame({"model": ["fc", "emb<1>"], "r2": [0.123456, float("nan")], "n": [10, 10]}),
              caption="scores")
    rep.figure(_figure(), caption="a plot")
    rep.code("brainfm probe emb.tsv --target 'age'")
    html = rep.render()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "A &lt;b&gt;title&lt;/b&gt; &amp; more" in html and "1 &lt; 2 &amp; 3 &gt; 2" in html
    assert "<td>0.123</td>" in html and "<td>n/a</td>" in html and "<td>10</td>" in html
    assert '<td class="text">emb&lt;1&gt;</td>' in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html) and "http" not in html.split("<body>")[1]
    png = base64.b64decode(re.search(r'data:image/png;base64,([A-Za-z0-9+/=]+)"', html).group(1))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    out = rep.write(tmp_path / "r" / "report.html")
    assert out.read_text() == html and not leftovers(tmp_path)


def test_figures_render_identically_twice():
    assert figure_png(_figure()) == figure_png(_figure())  # reports are byte-reproducible
