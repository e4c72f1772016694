"""Benchmark what an annotator waits for: from pressing Enter on the annotate page to the
next pair on screen, in headless Chromium against the real app server (`rlhf serve`'s
Streamlit command).

A SQLite (default) or PostgreSQL (`--pg`, from RLHF_TEST_PG_URL) workspace holds one open
round of `--pairs` pairs (overlap 2). For 1 annotator, then for `--annotators` (default 8)
at once on the same server, each page chooses "left" (key 1) and presses Enter as soon as
its pair can be judged, all pages first, then each waits for its next pair. The page
itself measures each wait (the page's clock read just before Enter, a DOM observer when
the prompt on screen changed: performance.now() in the browser, so the driver's waits for
the other pages do not count). Prints median and p95 per load and writes bench/results/
annotate_browser.json. Run from the repository root:

    python bench/annotate_browser.py
    scripts/with_postgres.sh .venv/bin/python bench/annotate_browser.py --pg
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import datetime as dt
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import machine, write_json
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from db.engine import make_engine, session_factory, transaction  # noqa: E402
from db.models import Model, Pair, Prompt, Round, Sample  # noqa: E402
from db.users import create_user  # noqa: E402
from migrations.runner import upgrade  # noqa: E402
from tests.browser import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    PASSWORD,
    VIEWPORT,
    log_in,
    streamlit_server,
    wait_for_pair,
)

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "annotate_browser.json"
# Installed in each page once: the ms from each Enter to the next change of the prompt.
_STOPWATCH = """
() => {
  window.__waits = [];
  window.__pressed = null;
  const prompt = () => {
    const box = document.querySelector('.st-key-prompt [data-testid="stText"]');
    return box ? box.innerText : null;
  };
  let last = prompt();
  new MutationObserver(() => {
    const now = prompt();
    if (now !== null && now !== last && window.__pressed !== null) {
      window.__waits.push(performance.now() - window.__pressed);
      window.__pressed = null;
    }
    if (now !== null) last = now;
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Enter to the next pair, in a browser")
    parser.add_argument("--annotators", type=int, default=8, help="pages at once (default 8)")
    parser.add_argument("--submits", type=int, default=15, help="submits per page (default 15)")
    parser.add_argument("--pairs", type=int, default=400, help="pairs in the round")
    parser.add_argument("--pg", action="store_true", help="PostgreSQL from RLHF_TEST_PG_URL")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if min(args.annotators, args.submits, args.pairs) < 1:
        parser.error("counts must be positive")
    if args.pg and not os.environ.get("RLHF_TEST_PG_URL"):
        parser.error("--pg needs RLHF_TEST_PG_URL (run through scripts/with_postgres.sh)")
    return args


def build(url: str, pairs: int, names: list[str]) -> None:
    """One open round of `pairs` pairs with distinct prompts, and the annotators."""
    engine = make_engine(url)
    upgrade(engine)
    with transaction(session_factory(engine)) as session:
        policy = Model(kind="policy", name="bench", path="/bench")
        session.add(policy)
        session.flush()
        round_ = Round(number=1, policy_id=policy.id, overlap=2, gold_rate=0.0)
        session.add(round_)
        session.flush()
        for number in range(pairs):
            prompt = Prompt(
                text=f"Question {number}: which answer?",
                source="bench",
                content_hash=f"bench-{number}",
            )
            session.add(prompt)
            session.flush()
            samples = [
                Sample(
                    prompt_id=prompt.id,
                    policy_id=policy.id,
                    round_id=round_.id,
                    text=f"Answer {side} to question {number}.",
                    decoding={},
                    seed=0,
                    token_count=6,
                    finished=True,
                )
                for side in "AB"
            ]
            session.add_all(samples)
            session.flush()
            session.add(
                Pair(
                    round_id=round_.id,
                    prompt_id=prompt.id,
                    sample_a_id=samples[0].id,
                    sample_b_id=samples[1].id,
                )
            )
        for name in names:
            create_user(session, name, "annotator", PASSWORD)
    engine.dispose()


def measure(browser, base: str, names: list[str], submits: int) -> list[float]:
    """ms from Enter to the next pair on screen, for `names` submitting at once."""
    contexts = [browser.new_context(viewport=VIEWPORT) for _ in names]
    pages = [context.new_page() for context in contexts]
    for context in contexts:
        context.set_default_timeout(60_000)
    for page, name in zip(pages, names, strict=True):
        log_in(page, base, name)
        wait_for_pair(page)
        page.evaluate(_STOPWATCH)
    for done in range(1, submits + 1):
        for page in pages:
            page.keyboard.press("1")
            # The page's clock at Enter: a key listener on the page would miss keys that
            # the key handler's frame takes first.
            page.evaluate("window.__pressed = performance.now()")
            page.keyboard.press("Enter")
        for page in pages:
            page.wait_for_function("(n) => window.__waits.length >= n", arg=done)
            wait_for_pair(page)
    waits = [wait for page in pages for wait in page.evaluate("window.__waits")]
    for context in contexts:
        context.close()
    return waits


def main() -> int:
    args = parse_args()
    names = [f"annotator{n}" for n in range(1 + args.annotators)]
    figures: dict[str, object] = {"pairs": args.pairs, "submits_per_page": args.submits}
    with tempfile.TemporaryDirectory(prefix="bench-annotate-browser-") as folder:
        url = os.environ["RLHF_TEST_PG_URL"] if args.pg else f"sqlite:///{folder}/app.db"
        build(url, args.pairs, names)
        with (
            streamlit_server(url, Path(folder) / "streamlit.log") as base,
            sync_playwright() as playwright,
        ):
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            for label, group in (("single", names[:1]), (f"at_once_{args.annotators}", names[1:])):
                waits = measure(browser, base, group, args.submits)
                figures |= {
                    f"{label}_waits": len(waits),
                    f"{label}_enter_to_next_p50_ms": round(float(np.percentile(waits, 50)), 1),
                    f"{label}_enter_to_next_p95_ms": round(float(np.percentile(waits, 95)), 1),
                }
                print(
                    f"{label}: {len(waits)} submits, Enter to next pair on screen: median "
                    f"{figures[f'{label}_enter_to_next_p50_ms']} ms, p95 "
                    f"{figures[f'{label}_enter_to_next_p95_ms']} ms",
                    flush=True,
                )
            browser.close()
    figures |= {
        "backend": "postgresql" if args.pg else "sqlite",
        "machine": machine(("streamlit", "playwright")),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    out = args.out
    if args.pg and out == DEFAULT_OUT:
        out = out.with_name("annotate_browser_pg.json")
    write_json(out, figures)
    print(f"Wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
