"""A report's Markdown as a styled HTML page, for a browser (Python-Markdown renders it).

The search and run reports are written as Markdown first (readable in a terminal, diffable);
their ``.html`` twin is this page: the same text rendered with tables, code and emphasis,
figures scaled to the window, wide tables scrolled, and a warning paragraph set apart.
"""

from __future__ import annotations

import html

import markdown

__all__ = ["markdown_page"]

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;line-height:1.5;
color:#1f2328;max-width:1200px;margin:2em auto;padding:0 1.5em}
h1{border-bottom:1px solid #d0d7de;padding-bottom:.3em}
h2{margin-top:1.8em;border-bottom:1px solid #eaeef2;padding-bottom:.2em}
img{max-width:100%;height:auto;border:1px solid #eaeef2;border-radius:4px}
table{border-collapse:collapse;display:block;overflow-x:auto;margin:1em 0}
td,th{border:1px solid #d0d7de;padding:4px 10px;text-align:left}
th{background:#f6f8fa}tr:nth-child(even) td{background:#fbfcfd}
code{background:#f6f8fa;padding:.1em .3em;border-radius:4px;font-size:90%}
pre{background:#f6f8fa;padding:1em;overflow-x:auto;border-radius:6px}
pre code{padding:0;background:none}
p.warning{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:.6em 1em}
"""


def markdown_page(text: str, title: str) -> str:
    """The whole HTML document for the Markdown ``text`` (tables and fenced code included)."""
    renderer = markdown.Markdown(extensions=["tables", "fenced_code"], output_format="html")
    # Report text comes from files a user gave (class names, paths): raw HTML in it is shown
    # as text, never run, so the HTML passes of Python-Markdown are taken out.
    renderer.preprocessors.deregister("html_block")
    renderer.inlinePatterns.deregister("html")
    body = renderer.convert(text)
    # A paragraph that opens with a bold "Warning:" is the report's alarm: set it apart.
    body = body.replace(
        "<p><strong>Warning:</strong>", '<p class="warning"><strong>Warning:</strong>'
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>\n"
        f"{body}\n</body></html>\n"
    )
