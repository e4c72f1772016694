"""One response in a box of its own, as its round shows responses: plain text or safe
Markdown (annotate_app/markdown_safe.py). Every page that shows model output to judge
draws it with `show_response`, so the two modes look and behave alike everywhere.

The box's key names it in the page (CSS class st-key-KEY): the page bounds its height
and scrolls it inside itself, so that the buttons below stay on screen however long
the response is.
"""

from __future__ import annotations

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from annotate_app.display import reveal_bidi
from annotate_app.markdown_safe import STYLE, render_markdown

# Once per page that shows responses, inside its own <style> block.
RESPONSE_STYLE = STYLE


def show_text(text: str, mode: str) -> None:
    """`text` (untrusted model output) in the current container: with st.text (never
    HTML or Markdown) in "text" mode, as allow-listed HTML in "markdown" mode; either way
    with bidirectional controls shown as markers."""
    if mode == "markdown":
        st.html(render_markdown(text))
    else:
        st.text(reveal_bidi(text))


def show_response(parent: DeltaGenerator, title: str, text: str, mode: str, key: str) -> None:
    """A bordered box in `parent` keyed `key`: the title (ours, never model output) in
    bold, then the response as `mode` says."""
    with parent.container(border=True, key=key):
        st.markdown(f"**{title}**")
        show_text(text, mode)
