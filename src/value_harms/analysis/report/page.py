"""The page builder: every heading, paragraph, table and figure goes into the markdown and the HTML report at once."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Iterable

import pandas as pd

from value_harms.analysis.report.format import (
    escape_html,
    html_table,
    markdown_table,
)
from value_harms.core.names import slug


class Page:
    """Writes the same content as Markdown and as HTML."""

    def __init__(self, title: str, fig_dir_rel: str):
        self.md: list[str] = [f"# {title}", ""]
        self.html: list[str] = [f"<h1>{escape_html(title)}</h1>"]
        self.fig_dir_rel = fig_dir_rel

    def h2(self, text: str) -> None:
        anchor = slug(text.lower())
        self.md += [f"## {text}", ""]
        self.html.append(f'<h2 id="{anchor}">{escape_html(text)}</h2>')

    def h3(self, text: str) -> None:
        self.md += [f"### {text}", ""]
        self.html.append(f"<h3>{escape_html(text)}</h3>")

    def p(self, text: str) -> None:
        self.md += [text, ""]
        self.html.append(f"<p>{escape_html(text)}</p>")

    def bullets(self, items: Iterable[str]) -> None:
        items = list(items)
        if not items:
            return
        self.md += [f"- {t}" for t in items] + [""]
        self.html.append("<ul>" + "".join(f"<li>{escape_html(t)}</li>" for t in items) + "</ul>")

    def warn(self, text: str) -> None:
        self.md += [f"> **⚠ Warning:** {text}", ""]
        self.html.append(f'<div class="warn"><strong>⚠ Warning:</strong> {escape_html(text)}</div>')

    def table(self, df: pd.DataFrame, columns: Iterable[str] | None = None, *, details: str | None = None) -> None:
        if df is None or not len(df.columns):
            return
        cols = list(columns) if columns is not None else None
        if details is None:
            self.md += [markdown_table(df, cols), ""]
            self.html.append(html_table(df, cols))
        else:  # long tables: collapsed in HTML, under a heading line in Markdown
            self.md += [f"<details><summary>{details}</summary>", "", markdown_table(df, cols), "", "</details>", ""]
            self.html.append(f"<details><summary>{escape_html(details)}</summary>{html_table(df, cols)}</details>")

    def figure(self, path: Path, caption: str) -> None:
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        self.md += [f"![{caption}]({self.fig_dir_rel}/{Path(path).name})", ""]
        self.html.append(
            f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}"/>'
            f"<figcaption>{escape_html(caption)}</figcaption></figure>"
        )


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1150px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #333}h2{border-bottom:1px solid #bbb;margin-top:2em}
.tbl{overflow-x:auto;margin:0.8em 0}
table{border-collapse:collapse;font-size:0.85em}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}tr:nth-child(even){background:#fafafa}
.warn{background:#fff3cd;border:2px solid #d39e00;border-left:8px solid #d39e00;padding:0.8em 1em;
margin:1em 0;font-size:1.05em}
figure{margin:1em 0}img{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-size:0.85em;color:#555}
code{background:#f4f4f4;padding:0 3px}details{margin:0.6em 0}
"""
