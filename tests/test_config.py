"""rlhf.toml, RLHF_* variables and flags, in that order, with errors that name the key."""

from __future__ import annotations

import re

import pytest

from rlhf_train.config import Config, default_config_text, known_keys, load_config
from rlhf_train.errors import UserError


def test_defaults_without_a_file(tmp_path) -> None:
    assert load_config(tmp_path, environ={}) == Config()


def test_file_then_environment_then_flags(tmp_path) -> None:
    (tmp_path / "rlhf.toml").write_text(
        "[generation]\nbatch_size = 4\ntemperature = 1\n[round]\noverlap = 5\n"
    )
    config = load_config(
        tmp_path,
        overrides={"generation.batch_size": 2, "generation.seed": None},
        environ={"RLHF_ROUND_OVERLAP": "7", "RLHF_DB_URL": "sqlite:///x.db"},
    )
    assert config.generation.batch_size == 2  # flag beats file
    assert config.generation.temperature == 1.0  # int in TOML accepted as float
    assert config.round.overlap == 7  # environment beats file
    assert config.database.url == "sqlite:///x.db"
    assert config.generation.seed == 0  # a flag left unset changes nothing


@pytest.mark.parametrize(
    ("toml", "environ", "expected"),
    [
        ("[generation]\nbatchsize = 4\n", {}, "Unknown setting 'generation.batchsize'"),
        ("[nonsense]\nx = 1\n", {}, "Unknown setting 'nonsense.x'"),
        ('[generation]\nbatch_size = "four"\n', {}, "Setting generation.batch_size in"),
        ("[generation]\ntop_p = 1.5\n", {}, "must be above 0 and at most 1"),
        ("batch_size = 4\n", {}, "outside a [section]"),
        ("[generation\n", {}, "is not valid TOML"),
        ("", {"RLHF_GENERATION_BATCH_SIZE": "many"}, "RLHF_GENERATION_BATCH_SIZE"),
        ("", {"RLHF_ROUND_GOLD_RATE": "2"}, "must be between 0 and 1"),
    ],
)
def test_bad_settings_name_the_key(tmp_path, toml: str, environ: dict, expected: str) -> None:
    (tmp_path / "rlhf.toml").write_text(toml)
    with pytest.raises(UserError) as caught:
        load_config(tmp_path, environ=environ)
    assert expected in str(caught.value)


def test_written_defaults_parse_back_to_defaults(tmp_path) -> None:
    text = default_config_text()
    for key in known_keys():
        assert f"# {key.split('.')[1]} =" in text
    uncommented = re.sub(r"^# (\w+ = )", r"\1", text, flags=re.MULTILINE)
    (tmp_path / "rlhf.toml").write_text(uncommented)
    assert load_config(tmp_path, environ={}) == Config()
