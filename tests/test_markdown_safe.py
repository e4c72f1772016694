"""annotate_app.markdown_safe: every input gives HTML of allowed tags and attributes only,
with all of the response's text escaped; images, links and raw HTML become text."""

from __future__ import annotations

import time
from html.parser import HTMLParser

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from annotate_app.markdown_safe import (
    ALLOWED_ATTRIBUTES,
    ALLOWED_TAGS,
    CLASSES,
    MAX_INDENTED,
    render_markdown,
)

VOID = {"br", "hr"}


class _Collect(HTMLParser):
    """The tags, attributes and text of an HTML string, and whether its tags balance."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []
        self.text: list[str] = []
        self.open: list[str] = []
        self.balanced = True
        self.comments_or_declarations = 0

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append(tag)
        self.attributes.extend(attrs)
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag) -> None:
        if not self.open or self.open.pop() != tag:
            self.balanced = False

    def handle_data(self, data) -> None:
        self.text.append(data)

    def handle_comment(self, data) -> None:
        self.comments_or_declarations += 1

    def handle_decl(self, decl) -> None:
        self.comments_or_declarations += 1

    def handle_pi(self, data) -> None:
        self.comments_or_declarations += 1


def _parsed(markup: str) -> _Collect:
    collect = _Collect()
    collect.feed(markup)
    collect.close()
    return collect


def _assert_safe(markup: str) -> _Collect:
    parsed = _parsed(markup)
    assert set(parsed.tags) <= ALLOWED_TAGS, set(parsed.tags) - ALLOWED_TAGS
    for name, value in parsed.attributes:
        assert name in ALLOWED_ATTRIBUTES, (name, value)
        if name == "class":
            assert value in CLASSES, value
        else:
            assert value is not None and value.isdigit(), (name, value)
    assert parsed.balanced and not parsed.open, markup
    assert parsed.comments_or_declarations == 0
    assert parsed.tags[0] == "div"
    return parsed


# Text that exercises the parser: Markdown and HTML syntax, addresses, entities, bidi
# controls, emoji and right-to-left letters, and plain words.
_PIECES = st.sampled_from(
    [
        "#",
        "## ",
        "- ",
        "1. ",
        "> ",
        "*",
        "_",
        "**",
        "~~",
        "`",
        "```",
        "    ",
        "\n",
        "\n\n",
        "|",
        "|-|",
        "[",
        "]",
        "(",
        ")",
        "![",
        "<",
        ">",
        "</",
        "<script>",
        "<img src=x onerror=alert(1)>",
        '" onmouseover="x',
        "style=",
        "javascript:alert(1)",
        "data:text/html,<b>x</b>",
        "http://127.0.0.1:1/x.png",
        "&lt;",
        "&#x202E;",
        "&amp;",
        "&quot;",
        "\u202e",
        "\u2067",
        "مرحبا",
        "שלום",
        "👍🏽",
        "word",
        " ",
        "\\",
        "[x]: http://e.com",
        "<http://a.b>",
        "{",
        "'",
    ]
)
_MARKDOWN = st.lists(_PIECES | st.text(max_size=8), max_size=60).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_MARKDOWN)
def test_every_input_gives_only_allowed_tags_and_attributes(text: str) -> None:
    parsed = _assert_safe(render_markdown(text))
    shown = "".join(parsed.text)
    # Every bidi control is revealed, whether typed or written as an entity.
    assert "\u202e" not in shown and "\u2067" not in shown


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_unicode_text_is_safe(text: str) -> None:
    _assert_safe(render_markdown(text))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyzαβγأبت", min_size=1, max_size=10),
        min_size=1,
        max_size=30,
    ),
    st.lists(st.sampled_from(["- ", "> ", "# ", "1. ", "*", "**", "`", "\n", "\n\n", " "])),
)
def test_plain_words_all_stay_readable(words: list[str], markup: list[str]) -> None:
    """Words among Markdown markers are all shown: markup changes how, never whether."""
    pieces = []
    for n, word in enumerate(words):
        pieces.append(markup[n % len(markup)] if markup else " ")
        pieces.append(word)
    shown = "".join(_assert_safe(render_markdown(" ".join(pieces))).text)
    for word in words:
        assert word in shown, (word, shown)


def test_what_renders() -> None:
    markup = render_markdown(
        "# Title\n\nSome *emphasis*, **strong**, ~~struck~~ and `code`.\n\n"
        "- one\n- two\n\n3. three\n4. four\n\n> quoted\n\n"
        "| left | right |\n|:-----|------:|\n| 1 | 2 |\n\n"
        "    indented code\n\n```python\nprint('fenced')\n```\n\n---\nline one\nline two"
    )
    parsed = _assert_safe(markup)
    for tag in ("h1", "em", "strong", "s", "code", "ul", "ol", "li", "blockquote"):
        assert tag in parsed.tags, tag
    for tag in ("table", "th", "td", "pre", "hr", "br"):
        assert tag in parsed.tags, tag
    assert '<ol start="3">' in markup
    assert '<th class="md-left">left</th>' in markup
    assert '<td class="md-right">2</td>' in markup
    assert "<pre><code>indented code\n</code></pre>" in markup
    assert '<span class="md-lang">python</span>' in markup
    assert "print(&#x27;fenced&#x27;)" in markup


def test_raw_html_is_text() -> None:
    source = (
        '<script>window.pwned=1</script><img src="http://x/y" onerror="alert(1)">'
        '<iframe src="http://x"></iframe><style>body{display:none}</style>'
        '<div style="position:fixed;inset:0">cover</div>'
    )
    markup = render_markdown(source)
    parsed = _assert_safe(markup)
    assert parsed.tags == ["div", "p"]
    assert "".join(parsed.text) == source


def test_images_and_links_are_text_with_their_address() -> None:
    markup = render_markdown(
        "![a *kitten*](http://127.0.0.1:9/cat.png) [click](https://example.com/a?b=1) "
        "[js](javascript:alert(1)) [data](data:text/html,hi) <https://auto.link>"
    )
    parsed = _assert_safe(markup)
    shown = "".join(parsed.text)
    assert "[image: a kitten] (http://127.0.0.1:9/cat.png)" in shown
    assert "click (https://example.com/a?b=1)" in shown
    # markdown-it refuses these addresses as links, so they stay as typed.
    assert "[js](javascript:alert(1))" in shown
    assert "[data](data:text/html,hi)" in shown
    assert "https://auto.link" in shown and "(https://auto.link)" not in shown
    assert not {"a", "img"} & set(parsed.tags)


def test_bidi_controls_are_revealed_in_every_piece_of_text() -> None:
    shown = "".join(
        _parsed(render_markdown("a\u202eb `c\u202ed` &#x202E; [e\u2067](http://x)")).text
    )
    assert "\u202e" not in shown and "\u2067" not in shown
    assert shown.count("\u27e6U+202E\u27e7") == 3


def test_deep_nesting_keeps_every_word() -> None:
    lists = "\n".join("  " * depth + f"- item{depth}" for depth in range(50))
    quotes = ">" * 50 + " deepest"
    for source, last in ((lists, "item49"), (quotes, "deepest")):
        markup = render_markdown(source)
        assert last in "".join(_assert_safe(markup).text)
        assert "shown as plain text" not in markup
    # Deep lists stop indenting past MAX_INDENTED levels, so they stay in the box.
    assert render_markdown(lists).count('class="md-flat"') == 50 - MAX_INDENTED
    # Deeper than the parser follows: all of it, as plain text, with a note.
    too_deep = ">" * 500 + " bottom"
    parsed = _assert_safe(render_markdown(too_deep))
    assert "Nested too deeply" in "".join(parsed.text)
    assert too_deep in "".join(parsed.text)


def test_slow_inputs_fall_back_to_plain_text_quickly() -> None:
    for source in ("![" * 10_000, "[" * 20_000, "x" * 150_000):
        render_markdown.cache_clear()
        started = time.perf_counter()
        parsed = _assert_safe(render_markdown(source))
        assert time.perf_counter() - started < 1.0
        assert source in "".join(parsed.text)
        assert "shown as plain text" in "".join(parsed.text)


def test_a_long_response_renders_in_well_under_a_second() -> None:
    source = ("Some **bold** text with `code` and [a link](http://x). " * 400)[:20_000]
    render_markdown.cache_clear()
    started = time.perf_counter()
    parsed = _assert_safe(render_markdown(source))
    assert time.perf_counter() - started < 1.0
    assert "shown as plain text" not in "".join(parsed.text)
