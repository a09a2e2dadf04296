"""Reports as HTML pages: Markdown rendered (no raw ``**``), tables, code, a warning set apart."""

from __future__ import annotations

from html.parser import HTMLParser

from autodeeplab.engine.html import markdown_page


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_a_report_renders_its_markdown_as_html() -> None:
    text = (
        "# Search report\n\n**Warning:** the path margin is 0.02 nats, under 0.5.\n\n"
        "A `code` word and a [link](report_search/beta.png).\n\n"
        "| epoch | val mIoU |\n| --- | --- |\n| 1 | 0.25 |\n\n"
        '![beta](report_search/beta.png)\n\n```json\n{"path": [0, 1]}\n```\n'
    )
    page = markdown_page(text, "Auto-DeepLab search report")
    parser = _Tags()
    parser.feed(page)
    tags = [tag for tag, _ in parser.tags]
    shown = "".join(parser.text)
    assert "**" not in shown and "```" not in shown and "| ---" not in shown
    for tag in ("h1", "strong", "code", "a", "table", "th", "td", "img", "pre", "style"):
        assert tag in tags, tag
    warning = [attrs for tag, attrs in parser.tags if tag == "p" and attrs.get("class")]
    assert warning == [{"class": "warning"}]
    assert '<img alt="beta" src="report_search/beta.png"' in page
    assert (
        page.startswith("<!doctype html>") and "<title>Auto-DeepLab search report</title>" in page
    )


def test_text_is_escaped_not_interpreted() -> None:
    page = markdown_page("a <script>alert(1)</script> & b\n\n<div>x</div>", "t <x>")
    assert "<title>t &lt;x&gt;</title>" in page
    assert "<script>" not in page and "<div>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; b" in page
