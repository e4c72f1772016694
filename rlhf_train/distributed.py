"""Running the same command in several processes (`accelerate launch`): one of them, the
main process, talks to the database and writes the workspace; the others train."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def _state():
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # Under a multi-process launch this joins the process group (gloo on CPUs, NCCL on
    # GPUs); alone it is a no-op. Without cpu=True accelerate forms a group only on CUDA.
    cpu = not torch.cuda.is_available() or parse_flag_from_env("ACCELERATE_USE_CPU")
    return PartialState(cpu=cpu)


def leave_process_group() -> None:
    """Tear down the process group a multi-process launch joined; alone, a no-op.

    Left to interpreter exit, gloo's worker threads can outlive the objects they use and
    the process aborts with "terminate called without an active exception" after its
    work is done, which fails the whole launch.
    """
    # A command that never imported torch joined nothing, and should not pay for the import.
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main_process() -> bool:
    return _state().is_main_process


def from_main_process(compute: Callable[[], T]) -> T:
    """`compute()` run by the main process only, its result handed to every process.

    An exception on the main process is raised there; the other processes exit with
    code 2 without repeating its message.
    """
    state = _state()
    if state.num_processes == 1:
        return compute()
    from accelerate.utils import broadcast_object_list

    box: list[object] = [None, False]
    error: BaseException | None = None
    if state.is_main_process:
        try:
            box[0] = compute()
        except BaseException as exc:  # noqa: BLE001 - re-raised after the broadcast
            error, box[1] = exc, True
    broadcast_object_list(box, from_process=0)
    if error is not None:
        raise error
    if box[1]:
        raise SystemExit(2)
    return box[0]  # type: ignore[return-value]


def process_count() -> int:
    """How many processes run this command: the launch's world size, 1 alone."""
    return _state().num_processes


def process_index() -> int:
    """This process's rank in the launch, 0 alone."""
    return _state().process_index


def gather_to_all(value: T) -> list[T]:
    """`value` of every process, in rank order, in every process (`[value]` alone)."""
    state = _state()
    if state.num_processes == 1:
        return [value]
    import torch.distributed as dist

    gathered: list[T | None] = [None] * state.num_processes
    dist.all_gather_object(gathered, value)
    return gathered  # type: ignore[return-value]
