"""Publishing a model: its folder and its registry row come together or not at all, and a
database that is away for a moment while the row is written costs a wait, not the model."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.models import Model
from rlhf_train.errors import UserError
from rlhf_train.models.publish import NewModel, publish_model, register_folder
from rlhf_train.workspace import Workspace
from rlhf_train.workspace_setup import init_workspace


def _weights_writer(text: str, before_return=lambda: None):
    def write(folder: Path) -> None:
        (folder / "weights.txt").write_text(text, encoding="utf-8")
        before_return()

    return write


def _reward_model(name: str) -> NewModel:
    return NewModel(name=name, kind="reward", metrics={"accuracy": 0.9}, config={"lr": 1e-4})


def _publish(workspace: Workspace, name: str, write) -> Model:
    return publish_model(workspace, _reward_model(name), write)


def _models_named(workspace: Workspace, name: str) -> int:
    with workspace.sessions() as session:
        return session.scalar(select(func.count()).select_from(Model).where(Model.name == name))


@pytest.mark.postgres
def test_a_database_outage_while_the_weights_are_saved_delays_the_registration(
    tmp_path, postgres_url, postgres_outage, capsys
) -> None:
    workspace = Workspace.open(tmp_path / "ws", {"database.url": postgres_url})
    init_workspace(workspace)
    outages = []
    try:
        # The database goes down while the weights are written, so the registration
        # right after meets it down and must wait for it.
        write = _weights_writer("trained", lambda: outages.append(postgres_outage(2.5)))
        model = _publish(workspace, "reward-r1", write)
        outages[0].join()
        assert "trying again" in capsys.readouterr().err
        folder = workspace.models_dir / "reward-r1"
        assert model.path == str(folder)
        assert (folder / "weights.txt").read_text() == "trained"
        with workspace.sessions() as session:
            stored = session.get(Model, model.id)
            assert (stored.name, stored.kind, stored.path) == ("reward-r1", "reward", str(folder))
            assert stored.metrics == {"accuracy": 0.9} and stored.config == {"lr": 1e-4}
    finally:
        workspace.engine.dispose()


def test_registering_the_same_folder_again_returns_the_first_row(workspace) -> None:
    model = _publish(workspace, "reward-r1", _weights_writer("trained"))
    # As a retry does after a commit whose answer was lost with the connection.
    again = register_folder(workspace, Path(model.path), _reward_model("reward-r1"))
    assert again.id == model.id
    assert _models_named(workspace, "reward-r1") == 1


def test_a_name_taken_by_another_folder_is_refused_and_leaves_no_folder(workspace) -> None:
    model = _publish(workspace, "reward-r1", _weights_writer("first"))
    stray = workspace.models_dir / "elsewhere"
    stray.mkdir()
    with pytest.raises(UserError, match="'reward-r1' is already registered"):
        register_folder(workspace, stray, _reward_model("reward-r1"))
    with pytest.raises(UserError, match="'reward-r1' is already registered"):
        _publish(workspace, "reward-r1", _weights_writer("second"))
    assert _models_named(workspace, "reward-r1") == 1
    assert (Path(model.path) / "weights.txt").read_text() == "first"
    assert sorted(p.name for p in workspace.models_dir.iterdir()) == ["elsewhere", "reward-r1"]
