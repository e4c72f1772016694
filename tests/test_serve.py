"""`rlhf serve` starts the Streamlit app; the page shows the round's pair count."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from db.engine import transaction
from rlhf_train.cli import main
from rlhf_train.rounds.generate import generate_round
from tests.browser import free_port, running_server
from tests.helpers import round_request, store_prompts

APP = Path(__file__).resolve().parents[1] / "annotate_app" / "app.py"


@pytest.fixture
def round_ready(workspace, tiny_policy):
    store_prompts(workspace, [f"Prompt {i}" for i in range(5)])
    report = generate_round(workspace, round_request(tiny_policy), progress=False)
    return workspace, report


def test_logged_in_annotator_sees_a_pair(round_ready, monkeypatch) -> None:
    from db.login_tokens import issue_token
    from db.users import create_user

    workspace, _report = round_ready
    with transaction(workspace.sessions) as session:
        user_id = create_user(session, "ann", "annotator", "password-123").id
        token = issue_token(session, user_id)
    monkeypatch.setenv("RLHF_DB_URL", workspace.db_url)
    app = AppTest.from_file(str(APP), default_timeout=30)
    app.session_state["login_token"] = token
    app.run()
    assert not app.exception
    assert [title.value for title in app.title] == ["Annotate"]
    assert app.text[0].value.startswith("Prompt ")  # the prompt, as plain text
    assert app.button(key="choice_left").label == "Left is better `1`"  # its key shown


def test_serve_answers_http(sqlite_workspace, tmp_path) -> None:
    port = free_port()
    environment = dict(os.environ, RLHF_DB_URL=sqlite_workspace.db_url)
    command = [
        sys.executable,
        "-m",
        "rlhf_train.cli",
        "--workspace",
        str(sqlite_workspace.root),
        "serve",
        "--port",
        str(port),
    ]
    log = tmp_path / "serve.log"
    with (
        running_server(command, port, environment, log) as url,
        urllib.request.urlopen(f"{url}/_stcore/health") as reply,
    ):
        assert reply.read() == b"ok"


def test_serve_on_a_taken_port_is_refused(sqlite_workspace, capsys) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["--workspace", str(sqlite_workspace.root), "serve", "--port", str(port)])
    assert code == 2
    assert f"Port {port} on localhost is taken" in capsys.readouterr().err


def test_serve_runs_a_worker_that_ends_with_it(sqlite_workspace, tmp_path) -> None:
    """The worker `rlhf serve` starts beside the app stops once the app's process is gone."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from rlhf_train.workspace import Workspace\n"
        "from rlhf_train.loop.worker import start_beside\n"
        "print(start_beside(Workspace.open(Path(sys.argv[1]))).pid, flush=True)\n"
        "import time; time.sleep(3)\n"
    )
    environment = dict(os.environ, RLHF_DB_URL=sqlite_workspace.db_url)
    parent = subprocess.run(
        [sys.executable, "-c", script, str(sqlite_workspace.root)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
    )
    worker_pid = int(parent.stdout.split()[0])
    log = sqlite_workspace.logs_dir / "worker.log"
    deadline = time.monotonic() + 30
    while _alive(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(worker_pid)
    text = log.read_text()
    assert "waiting for retraining jobs" in text  # it did run while the parent lived
    assert "The app that started this worker stopped; so does the worker." in text


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for its new parent to reap it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status
