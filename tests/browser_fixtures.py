"""The browser tests' fixtures: headless Chromium, pages in fresh contexts, app servers
on copies of one template database. Registered for every test by tests/conftest.py
(pytest_plugins), so each browser test module uses them by name."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine, session_factory, transaction
from db.models import Judgment, Pair, Prompt, Sample, User
from db.users import create_user
from rlhf_train.rounds.generate import generate_round
from tests.browser import CHROMIUM, CHROMIUM_ARGS, PASSWORD, VIEWPORT, log_in, streamlit_server
from tests.helpers import round_request, store_prompts

N_PAIRS = 10


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        launched.close()


@pytest.fixture
def new_page(browser: Browser) -> Iterator:
    """Pages in fresh browser contexts (no shared cookies or storage), closed afterwards."""
    contexts = []

    def open_page() -> Page:
        context = browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(20_000)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    """Start the app on a database URL; every server is stopped after the test."""
    with ExitStack() as servers:
        logs = iter(tmp_path / f"streamlit-{n}.log" for n in itertools.count())

        def start(db_url: str) -> str:
            return servers.enter_context(streamlit_server(db_url, next(logs)))

        yield start


def set_texts(session: Session) -> None:
    """Replace the tiny model's random bytes by texts that name their pair and sample."""
    for pair in session.scalars(select(Pair).order_by(Pair.id)):
        pair.sample_a.text = f"Answer {pair.sample_a_id} to pair {pair.id}"
        pair.sample_b.text = f"Answer {pair.sample_b_id} to pair {pair.id}"


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory, tiny_policy: Path) -> Path:
    """A SQLite database with round 1 (overlap 3) of N_PAIRS pairs, generated once per
    module by the tiny policy; each test works on its own copy."""
    from rlhf_train.workspace import Workspace
    from rlhf_train.workspace_setup import init_workspace

    workspace = Workspace.open(tmp_path_factory.mktemp("browser-template") / "ws")
    init_workspace(workspace)
    store_prompts(workspace, [f"Prompt number {i}: say something." for i in range(N_PAIRS)])
    generate_round(workspace, round_request(tiny_policy, n_prompts=N_PAIRS), False)
    with transaction(workspace.sessions) as session:
        set_texts(session)
        assert session.query(Pair).count() == N_PAIRS
    workspace.engine.dispose()
    return workspace.root / "prefloop.db"


@dataclass
class AppDb:
    url: str
    sessions: sessionmaker[Session]
    base_url: str = ""

    def add_user(self, name: str, role: str = "annotator") -> int:
        with transaction(self.sessions) as session:
            return create_user(session, name, role, PASSWORD).id

    def logged_in(self, new_page, name: str, role: str = "annotator") -> tuple[int, Page]:
        """A new user `name` and a fresh page logged in as them: (user id, page)."""
        user_id = self.add_user(name, role)
        page = new_page()
        log_in(page, self.base_url, name)
        return user_id, page


def _copy_database(source: Path, target: Path) -> None:
    """Make `target` hold what `source` holds; safe while the app has `target` open."""
    with sqlite3.connect(source) as origin, sqlite3.connect(target, timeout=30) as copy:
        origin.backup(copy)
    origin.close()
    copy.close()


@pytest.fixture(scope="module")
def shared_app(tmp_path_factory: pytest.TempPathFactory, template_db: Path) -> Iterator[AppDb]:
    """One app server for the tests that need no server of their own."""
    folder = tmp_path_factory.mktemp("browser-app")
    path = folder / "app.db"
    _copy_database(template_db, path)
    engine = make_engine(f"sqlite:///{path}")
    with streamlit_server(f"sqlite:///{path}", folder / "streamlit.log") as base_url:
        yield AppDb(f"sqlite:///{path}", session_factory(engine), base_url)
    engine.dispose()


@pytest.fixture
def app_db(shared_app: AppDb, template_db: Path) -> AppDb:
    """The shared app, its database reset to the template: no users, no judgments."""
    _copy_database(template_db, Path(shared_app.url.removeprefix("sqlite:///")))
    with shared_app.sessions() as session:
        assert session.scalar(select(User.id).limit(1)) is None
    return shared_app


@pytest.fixture
def own_app_db(tmp_path: Path, template_db: Path, serve) -> Iterator[AppDb]:
    """A copy of the template database with a server of its own, started for this test."""
    path = tmp_path / "app.db"
    _copy_database(template_db, path)
    engine = make_engine(f"sqlite:///{path}")
    yield AppDb(f"sqlite:///{path}", session_factory(engine), serve(f"sqlite:///{path}"))
    engine.dispose()


def stored_judgments(
    sessions: sessionmaker[Session], annotator_id: int | None = None
) -> list[dict]:
    """Judgments with what their pair stored: prompt and the texts of samples A and B."""
    with sessions() as session:
        query = (
            select(Judgment, Pair, Prompt.text)
            .join(Pair, Pair.id == Judgment.pair_id)
            .join(Prompt, Prompt.id == Pair.prompt_id)
            .order_by(Judgment.id)
        )
        if annotator_id is not None:
            query = query.where(Judgment.annotator_id == annotator_id)
        rows = []
        for judgment, pair, prompt in session.execute(query).all():
            texts = dict(
                session.execute(
                    select(Sample.id, Sample.text).where(
                        Sample.id.in_([pair.sample_a_id, pair.sample_b_id])
                    )
                ).all()
            )
            rows.append(
                {
                    "pair_id": pair.id,
                    "prompt": prompt,
                    "A": texts[pair.sample_a_id],
                    "B": texts[pair.sample_b_id],
                    "choice": judgment.choice,
                    "left_sample": judgment.left_sample,
                    "strength": judgment.strength,
                    "flags": judgment.flags,
                    "rationale": judgment.rationale,
                }
            )
        return rows
