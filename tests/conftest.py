"""Shared fixtures: databases on SQLite and PostgreSQL, workspaces, tiny policies."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from tests.tiny_models import build_tiny_policy  # noqa: E402

torch.set_num_threads(max(1, min(2, len(os.sched_getaffinity(0)))))

PG_URL_VARIABLE = "RLHF_TEST_PG_URL"
# The browser tests' fixtures (Chromium, app servers, their databases), one definition
# for every browser test module.
pytest_plugins = ("tests.browser_fixtures",)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings from the developer's shell must not leak into tests."""
    for name in list(os.environ):
        if name.startswith("RLHF_") and name != PG_URL_VARIABLE:
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    """Training commands set torch's thread count; the tests after them keep theirs."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _postgres_server_url() -> str:
    url = os.environ.get(PG_URL_VARIABLE)
    if url:
        return url
    if os.environ.get("CI"):
        pytest.fail(f"{PG_URL_VARIABLE} is not set under CI; run the tests through `make test`.")
    pytest.skip(f"{PG_URL_VARIABLE} not set (`make test` starts a throwaway PostgreSQL)")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    server = make_url(_postgres_server_url())
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


END_CONNECTIONS = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"


@pytest.fixture
def postgres_outage(postgres_url: str) -> Iterator[Callable[[float], threading.Thread]]:
    """`start(seconds)`: refuse every connection to the `postgres_url` database and end
    the open ones, for `seconds`, in a background thread that is returned started. The
    call returns once the database is down."""
    name = make_url(postgres_url).database
    admin = create_engine(
        make_url(postgres_url).set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    outages: list[threading.Thread] = []

    def start(seconds: float) -> threading.Thread:
        down = threading.Event()

        def outage() -> None:
            with admin.connect() as connection:
                connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
                connection.execute(text(END_CONNECTIONS), {"n": name})
                down.set()
                time.sleep(seconds)
                connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))

        thread = threading.Thread(target=outage)
        thread.start()
        down.wait(timeout=30)
        outages.append(thread)
        return thread

    try:
        yield start
    finally:
        for thread in outages:
            thread.join()
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def workspace(tmp_path: Path, db_url: str):
    """An initialized workspace whose database is `db_url`."""
    from rlhf_train.workspace import Workspace
    from rlhf_train.workspace_setup import init_workspace

    opened = Workspace.open(tmp_path / "ws", {"database.url": db_url})
    init_workspace(opened)
    yield opened
    opened.engine.dispose()


@pytest.fixture
def sqlite_workspace(tmp_path: Path):
    """An initialized workspace on its own SQLite file (for tests of non-database logic)."""
    from rlhf_train.workspace import Workspace
    from rlhf_train.workspace_setup import init_workspace

    opened = Workspace.open(tmp_path / "ws")
    init_workspace(opened)
    yield opened
    opened.engine.dispose()


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_policy(tmp_path_factory.mktemp("tiny-policy"), seed=0)


@pytest.fixture(scope="session")
def tiny_policy_v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second, differently initialised policy, to play the newer policy of a round."""
    return build_tiny_policy(tmp_path_factory.mktemp("tiny-policy-v2"), seed=1)
