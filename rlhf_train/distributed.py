"""Running the same command in several processes (`accelerate launch`): one of them, the
main process, talks to the database and writes the workspace; the others train."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def _state():
    from accelerate import PartialState

    # Under `accelerate launch` this joins the process group; alone it is a no-op.
    return PartialState()


def is_main_process() -> bool:
    return _state().is_main_process


def from_main_process(compute: Callable[[], T]) -> T:
    """`compute()` run by the main process only, its result handed to every process.

    An exception on the main process is raised there; the others get None and fail on
    their own when they use it, rather than waiting forever.
    """
    state = _state()
    if state.num_processes == 1:
        return compute()
    from accelerate.utils import broadcast_object_list

    box: list[object] = [None]
    error: BaseException | None = None
    if state.is_main_process:
        try:
            box[0] = compute()
        except BaseException as exc:  # noqa: BLE001 - re-raised after the broadcast
            error = exc
    broadcast_object_list(box, from_process=0)
    if error is not None:
        raise error
    return box[0]  # type: ignore[return-value]
