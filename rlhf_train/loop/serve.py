"""`rlhf serve`: run the Streamlit app against a workspace's database."""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
from pathlib import Path

from rlhf_train.errors import UserError
from rlhf_train.workspace import Workspace


def app_script() -> Path:
    """The script `streamlit run` is given: annotate_app/asgi.py, which serves the app
    together with the endpoint that sets the HttpOnly login cookie."""
    # Found without importing: rlhf_train does not depend on the app's code.
    spec = importlib.util.find_spec("annotate_app")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("The annotate_app package is missing; reinstall prefloop (make up).")
    return Path(next(iter(spec.submodule_search_locations))) / "asgi.py"


def check_port_free(port: int, address: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address if address != "localhost" else "127.0.0.1", port))
        except OSError as exc:
            raise UserError(
                f"Port {port} on {address} is taken ({exc.strerror}); stop what runs there or "
                "pass --port with a free port."
            ) from exc


def streamlit_command(port: int, address: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app_script()),
        "--server.port",
        str(port),
        "--server.address",
        address,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        # No "Deploy" button and developer menu for annotators.
        "--client.toolbarMode",
        "minimal",
    ]


def app_environment(workspace: Workspace) -> dict[str, str]:
    """The environment the app runs in: it finds the workspace and database from it."""
    environment = dict(os.environ)
    environment["RLHF_WORKSPACE"] = str(workspace.root)
    environment["RLHF_DB_URL"] = workspace.db_url
    return environment


def serve(workspace: Workspace, port: int, address: str, with_worker: bool = True) -> int:
    """Replace this process with the Streamlit server; returns only if that fails.

    With `with_worker`, a `rlhf worker` runs beside it (and ends with it), so a lead's
    "Start retraining" is picked up without another command.
    """
    check_port_free(port, address)
    if with_worker:
        from rlhf_train.loop.worker import start_beside

        start_beside(workspace)
        print(
            f"A worker runs retraining jobs beside the app; its output: "
            f"{workspace.logs_dir / 'worker.log'}",
            flush=True,
        )
    print(f"Serving the annotation app at http://{address}:{port} (Ctrl+C stops it).", flush=True)
    command = streamlit_command(port, address)
    # exec rather than a child process: a signal meant for `rlhf serve` (Ctrl+C, a
    # supervisor's SIGTERM) then reaches the server itself and leaves no orphan.
    os.execve(command[0], command, app_environment(workspace))
