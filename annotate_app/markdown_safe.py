"""Model output rendered as Markdown that is safe by construction.

The response is parsed by markdown-it (CommonMark with tables and strikethrough, raw
HTML disabled) and the token stream is walked here: each token becomes one tag from a
fixed allow-list, or escaped text. Nothing of the response reaches the page except as
text: no attribute is copied from it (the only attributes are the `class` names and the
`start` number written below), images become "[image: ALT] (ADDRESS)" and links
"TEXT (ADDRESS)" as text, so the browser loads and follows nothing. Bidirectional
controls are revealed (annotate_app.display) in every piece of text, entities included.

What would lose text or take long falls back to the whole response as plain text, with a
note saying why: nesting deeper than the parser follows (it drops what lies beyond), and
inputs whose link syntax makes parsing quadratic (many "[" in a long text).

STYLE is the stylesheet that bounds what the tags can do (headings no larger than the
page's own text headings, code and tables scroll sideways, deep lists stop indenting);
the page includes it once. Streamlit itself (st.html) adds no safety that this module
relies on.
"""

from __future__ import annotations

from functools import lru_cache
from html import escape

from markdown_it import MarkdownIt
from markdown_it.token import Token

from annotate_app.display import reveal_bidi

WRAPPER_CLASS = "md-safe"
# How deep block containers (lists, quotes) nest before the parser stops following; 50
# nested lists are 100 levels (list and item) plus the paragraph.
MAX_NESTING = 120
# Lists and quotes deeper than this stop indenting, so the text stays in the box.
MAX_INDENTED = 8
MAX_CHARS = 100_000
# markdown-it's link parsing takes time in (number of "[") x (length): 2e7 is ~0.5 s.
MAX_BRACKET_WORK = 20_000_000

ALLOWED_TAGS = frozenset(
    [
        "div",
        "p",
        "br",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "ul",
        "ol",
        "li",
        "blockquote",
        "pre",
        "code",
        "em",
        "strong",
        "s",
        "hr",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        "span",
    ]
)
CLASSES = frozenset(
    [
        WRAPPER_CLASS,
        "md-flat",
        "md-table",
        "md-left",
        "md-center",
        "md-right",
        "md-link",
        "md-image",
        "md-address",
        "md-lang",
        "md-plain",
        "md-note",
    ]
)
# Every attribute the renderer writes, by name; values are checked where written.
ALLOWED_ATTRIBUTES = frozenset(["class", "start"])

# Block tokens whose _open/_close become the same-named tag.
_SIMPLE_BLOCKS = {
    "paragraph": "p",
    "list_item": "li",
    "thead": "thead",
    "tbody": "tbody",
    "tr": "tr",
}
_CONTAINERS = {"bullet_list": "ul", "ordered_list": "ol", "blockquote": "blockquote"}
_INLINE_TAGS = {"em": "em", "strong": "strong", "s": "s"}
_ALIGN = {"text-align:left": "md-left", "text-align:center": "md-center"}
_ALIGN["text-align:right"] = "md-right"

STYLE = f"""
.{WRAPPER_CLASS} {{ contain: content; overflow-wrap: anywhere; line-height: 1.5;
  max-width: 100%; overflow-x: auto; font-size: 1rem; }}
.{WRAPPER_CLASS} h1, .{WRAPPER_CLASS} h2, .{WRAPPER_CLASS} h3, .{WRAPPER_CLASS} h4,
.{WRAPPER_CLASS} h5, .{WRAPPER_CLASS} h6 {{ font-size: 1.05rem; font-weight: 700;
  margin: 0.6em 0 0.3em 0; padding: 0; line-height: 1.3; scroll-margin: 0; }}
.{WRAPPER_CLASS} h1 {{ font-size: 1.3rem; }}
.{WRAPPER_CLASS} h2 {{ font-size: 1.2rem; }}
.{WRAPPER_CLASS} h3 {{ font-size: 1.1rem; }}
.{WRAPPER_CLASS} p, .{WRAPPER_CLASS} li, .{WRAPPER_CLASS} h1, .{WRAPPER_CLASS} h2,
.{WRAPPER_CLASS} h3, .{WRAPPER_CLASS} h4, .{WRAPPER_CLASS} h5, .{WRAPPER_CLASS} h6,
.{WRAPPER_CLASS} td, .{WRAPPER_CLASS} th {{ unicode-bidi: plaintext; }}
.{WRAPPER_CLASS} p {{ margin: 0 0 0.5em 0; }}
.{WRAPPER_CLASS} ul, .{WRAPPER_CLASS} ol {{ margin: 0 0 0.5em 0; padding-left: 1.4em; }}
.{WRAPPER_CLASS} blockquote {{ margin: 0 0 0.5em 0; padding-left: 0.7em;
  border-left: 3px solid rgba(128, 128, 128, 0.5); }}
.{WRAPPER_CLASS} .md-flat {{ padding-left: 0.2em; margin-left: 0; }}
.{WRAPPER_CLASS} pre {{ overflow-x: auto; white-space: pre; overflow-wrap: normal;
  max-width: 100%; padding: 0.5em; margin: 0 0 0.5em 0;
  background: rgba(128, 128, 128, 0.12); border-radius: 0.25rem; }}
.{WRAPPER_CLASS} code, .{WRAPPER_CLASS} .md-address, .{WRAPPER_CLASS} .md-lang {{
  font-family: "Source Code Pro", monospace; font-size: 0.9em; }}
.{WRAPPER_CLASS} .md-plain {{ white-space: pre-wrap; }}
.{WRAPPER_CLASS} .md-table {{ overflow-x: auto; max-width: 100%; margin: 0 0 0.5em 0; }}
.{WRAPPER_CLASS} table {{ border-collapse: collapse; }}
.{WRAPPER_CLASS} th, .{WRAPPER_CLASS} td {{ border: 1px solid rgba(128, 128, 128, 0.5);
  padding: 0.2em 0.5em; }}
.{WRAPPER_CLASS} .md-left {{ text-align: left; }}
.{WRAPPER_CLASS} .md-center {{ text-align: center; }}
.{WRAPPER_CLASS} .md-right {{ text-align: right; }}
.{WRAPPER_CLASS} .md-link {{ text-decoration: underline dotted; }}
.{WRAPPER_CLASS} .md-address, .{WRAPPER_CLASS} .md-lang, .{WRAPPER_CLASS} .md-note,
.{WRAPPER_CLASS} .md-image {{ color: rgba(110, 110, 110, 1); }}
.{WRAPPER_CLASS} .md-note {{ font-size: 0.85em; font-style: italic; }}
"""


def _parser() -> MarkdownIt:
    # html False: raw HTML in the response is text. No linkify: a bare address is text.
    options = {"html": False, "breaks": True, "maxNesting": MAX_NESTING}
    return MarkdownIt("commonmark", options).enable(["table", "strikethrough"])


_MD = _parser()


def _text(text: str) -> str:
    return escape(reveal_bidi(text), quote=True)


def _open(tag: str, css: str | None = None) -> str:
    return f'<{tag} class="{css}">' if css else f"<{tag}>"


def _plain(text: str, reason: str) -> str:
    return (
        f'<div class="{WRAPPER_CLASS}"><p class="md-note">{_text(reason)}</p>'
        f'<div class="md-plain">{_text(text)}</div></div>'
    )


def _alt_text(token: Token) -> str:
    """An image's alt text: the text of its (parsed) children, markup left out."""
    parts: list[str] = []
    for child in token.children or []:
        if child.type == "image":
            parts.append(_alt_text(child))
        elif child.children is None and child.content:
            parts.append(child.content)
    return "".join(parts) or token.content


def _address(address: str) -> str:
    return f' <span class="md-address">({_text(address)})</span>'


def _inline(children: list[Token]) -> str:
    out: list[str] = []
    links: list[str | None] = []  # the open links' addresses (None: an autolink's)
    for token in children:
        kind = token.type
        if kind == "text":
            out.append(_text(token.content))
        elif kind in ("softbreak", "hardbreak"):
            out.append("<br>")
        elif kind == "code_inline":
            out.append(f"<code>{_text(token.content)}</code>")
        elif kind.endswith(("_open", "_close")) and kind.rsplit("_", 1)[0] in _INLINE_TAGS:
            name, side = kind.rsplit("_", 1)
            tag = _INLINE_TAGS[name]
            out.append(f"<{tag}>" if side == "open" else f"</{tag}>")
        elif kind == "link_open":
            out.append('<span class="md-link">')
            # An autolink (<http://...>) shows its address as its text already.
            autolink = token.markup == "autolink"
            links.append(None if autolink else str(token.attrs.get("href", "")))
        elif kind == "link_close" and links:
            address = links.pop()
            out.append("</span>")
            if address is not None:
                out.append(_address(address))
        elif kind == "image":
            out.append(f'<span class="md-image">[image: {_text(_alt_text(token))}]</span>')
            out.append(_address(str(token.attrs.get("src", ""))))
        elif token.content:  # anything else (html_inline if ever enabled): as text
            out.append(_text(token.content))
    out.extend("</span>" for _ in links)  # never left open, however the stream ends
    return "".join(out)


def _cell(token: Token) -> str:
    css = _ALIGN.get(str(token.attrs.get("style", "")))
    return _open(token.tag if token.tag in ("th", "td") else "td", css)


def _blocks(tokens: list[Token]) -> str:
    out: list[str] = []
    depth = 0  # lists and quotes open around the current token
    for token in tokens:
        kind = token.type
        base, _, side = kind.rpartition("_")
        if kind == "inline":
            out.append(_inline(token.children or []))
        elif base in _SIMPLE_BLOCKS and side in ("open", "close"):
            if token.hidden:  # the paragraphs of a tight list item
                continue
            tag = _SIMPLE_BLOCKS[base]
            out.append(f"<{tag}>" if side == "open" else f"</{tag}>")
        elif base in _CONTAINERS and side in ("open", "close"):
            tag = _CONTAINERS[base]
            if side == "close":
                depth -= 1
                out.append(f"</{tag}>")
                continue
            depth += 1
            css = "md-flat" if depth > MAX_INDENTED else None
            start = token.attrs.get("start")
            if tag == "ol" and isinstance(start, int) and start != 1:
                flat = f' class="{css}"' if css else ""
                out.append(f'<ol start="{int(start)}"{flat}>')
            else:
                out.append(_open(tag, css))
        elif base == "heading" and side in ("open", "close"):
            tag = token.tag if token.tag in ("h1", "h2", "h3", "h4", "h5", "h6") else "h6"
            out.append(f"<{tag}>" if side == "open" else f"</{tag}>")
        elif kind in ("fence", "code_block"):
            language = token.info.strip() if kind == "fence" else ""
            if language:
                out.append(f'<span class="md-lang">{_text(language)}</span>')
            out.append(f"<pre><code>{_text(token.content)}</code></pre>")
        elif kind == "table_open":
            out.append('<div class="md-table"><table>')
        elif kind == "table_close":
            out.append("</table></div>")
        elif kind in ("th_open", "td_open"):
            out.append(_cell(token))
        elif kind in ("th_close", "td_close"):
            out.append(f"</{token.tag if token.tag in ('th', 'td') else 'td'}>")
        elif kind == "hr":
            out.append("<hr>")
        elif token.content:  # anything else (html_block if ever enabled): as text
            out.append(f"<p>{_text(token.content)}</p>")
    return "".join(out)


def _too_slow(text: str) -> bool:
    return len(text) > MAX_CHARS or text.count("[") * len(text) > MAX_BRACKET_WORK


@lru_cache(maxsize=256)
def render_markdown(text: str) -> str:
    """`text` (untrusted) as HTML: a <div class="md-safe"> holding only tags of
    ALLOWED_TAGS, attributes of ALLOWED_ATTRIBUTES (class names of CLASSES, a numeric
    ol start) and escaped text. Every input gives such output, and no input is lost
    except Markdown's own syntax (markers, link titles, reference definitions)."""
    if _too_slow(text):
        return _plain(
            text,
            "Too long or too full of brackets to render as Markdown quickly; shown as plain text.",
        )
    try:
        tokens = _MD.parse(text)
    except RecursionError:
        tokens = None
    # At its nesting limit the parser drops the rest of the text, so reaching it means
    # showing all of it as it is instead.
    if tokens is None or any(token.level >= MAX_NESTING - 1 for token in tokens):
        return _plain(text, "Nested too deeply to render as Markdown; shown as plain text.")
    return f'<div class="{WRAPPER_CLASS}">{_blocks(tokens)}</div>'
