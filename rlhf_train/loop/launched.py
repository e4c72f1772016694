"""Running one step of a retraining job under the launcher, as a group of processes.

The launcher (accelerate launch, torchrun...) and the ranks it starts form a process group
of their own, so that a cancel, a stopped worker or a failure stops every rank together and
leaves none behind. Their output passes through this process (into the job's log) and its
tail is kept, to name the rank that failed and its exit code when torchrun reports one.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable

from rlhf_train.errors import UserError

# After SIGTERM, the ranks have this long to record their outcome before SIGKILL.
STOP_GRACE_SECONDS = 20
TAIL_LINES = 400

_ROOT_CAUSE = "Root Cause (first observed failure):"
_RANK = re.compile(r"^\s*rank\s*:\s*(\d+)")
_EXITCODE = re.compile(r"^\s*exitcode\s*:\s*(-?\d+)")


def failed_rank(lines: list[str]) -> tuple[int, int] | None:
    """(rank, exit code) of the first failure torchrun's error summary in `lines` names
    (its "Root Cause" block; else the last failure it lists); None when there is none."""
    start = max((i for i, line in enumerate(lines) if _ROOT_CAUSE in line), default=None)
    search = lines[start:] if start is not None else lines
    rank = code = None
    for line in search:
        if (match := _RANK.match(line)) is not None:
            rank, code = int(match.group(1)), None
        elif (match := _EXITCODE.match(line)) is not None and rank is not None:
            code = int(match.group(1))
            if start is not None:
                break
    return (rank, code) if rank is not None and code is not None else None


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name} (exit code {code})"
    return f"exited with code {code}"


def stop_group(process: subprocess.Popen, grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM to the launched group (the ranks record themselves cancelled), SIGKILL to
    whatever of it is left after `grace` seconds."""
    _signal_group(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(grace)
    _signal_group(process.pid, signal.SIGKILL)
    process.wait()


def _signal_group(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # gone already
        os.killpg(group, signum)


PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int) -> None:
    """Ask Linux to send `signum` to this process when its parent dies (elsewhere, a
    no-op): a rank or launcher whose job process was killed outright must not live on."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
    if os.getppid() == 1:  # the parent died before the request was made
        os.kill(os.getpid(), signum)


# Runs the launcher with a death signal set (it survives exec): the launcher stops its
# ranks when the job process that waits on it is killed, even by SIGKILL.
_GUARD = (
    "import signal, sys; from rlhf_train.loop.launched import die_with_parent; "
    "die_with_parent(signal.SIGTERM); import os; os.execvp(sys.argv[1], sys.argv[1:])"
)


def guarded(command: list[str]) -> list[str]:
    """`command`, started so that it gets SIGTERM when this process dies."""
    return [sys.executable, "-c", _GUARD, *command]


def _pass_through(stream, tail: deque, write: Callable[[str], None]) -> None:
    for line in iter(stream.readline, ""):
        tail.append(line.rstrip("\n"))
        write(line)
    stream.close()


def run_launched(command: list[str], what: str, log_hint: str) -> None:
    """Run `command` (the launcher and its ranks) to its end, in a process group of its own.

    Ctrl-C, SIGTERM (a cancel) or any exception while waiting stops the whole group and is
    raised on; a non-zero exit raises UserError naming the rank that failed and its exit
    code (as torchrun reports it), or the launcher's own exit code. `what` names the step
    in that message ("step optimize of run 7"), `log_hint` where to read more.
    """
    tail: deque[str] = deque(maxlen=TAIL_LINES)

    def write(line: str) -> None:
        sys.stdout.write(line)
        sys.stdout.flush()

    process = subprocess.Popen(
        guarded(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        process_group=0,
    )
    reader = threading.Thread(target=_pass_through, args=(process.stdout, tail, write), daemon=True)
    reader.start()
    try:
        # A timeout, so that a KeyboardInterrupt scheduled by another thread (a cancel seen
        # by the heartbeat) is acted on while the ranks run.
        while True:
            try:
                code = process.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                continue
    except BaseException:
        stop_group(process)
        raise
    finally:
        # The launcher has ended; a rank it left behind must not outlive the step.
        _signal_group(process.pid, signal.SIGKILL)
        reader.join(timeout=10)
    if code == 0:
        return
    failed = failed_rank(list(tail))
    if failed is not None:
        rank, rank_code = failed
        raise UserError(
            f"Rank {rank} of {what} {describe_exit(rank_code)}, so the launcher stopped every "
            f"rank; see {log_hint}, then `rlhf runs retry` resumes it from its last checkpoint."
        )
    raise UserError(
        f"The launcher of {what} {describe_exit(code)}; see {log_hint}, then `rlhf runs retry` "
        "resumes it from its last checkpoint."
    )
