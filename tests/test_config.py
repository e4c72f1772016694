"""rlhf.toml, RLHF_* variables and flags, in that order, with errors that name the key."""

from __future__ import annotations

import argparse
import re

import pytest

from rlhf_train.cli import main
from rlhf_train.config import (
    Config,
    default_config_text,
    known_keys,
    load_config,
    render_value,
    sections,
    setting_field,
    setting_help,
)
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


def test_every_setting_declares_its_help_and_its_default_passes_its_check() -> None:
    # Checks live on the fields themselves, so none can name a key that does not exist;
    # this makes sure each field was declared with setting() and is consistent with itself.
    for key in known_keys():
        item = setting_field(key)
        assert item is not None, key
        assert len(item.metadata["help"]) > 10, key
        check = item.metadata["check"]
        if check is not None:
            assert check.test(item.default), f"{key}'s default fails its own check"
            assert check.must_be, key
    for name, section in sections().items():
        # A dataclass without a docstring gets its signature as __doc__.
        assert section.__doc__ and not section.__doc__.startswith(section.__name__), name


def test_section_classes_share_one_naming_convention() -> None:
    assert all(section.__name__.endswith("Settings") for section in sections().values())


def test_a_check_rejects_a_value_and_says_what_it_must_be(tmp_path) -> None:
    (tmp_path / "rlhf.toml").write_text("[ppo]\ngamma = 1.5\n")
    with pytest.raises(UserError, match=r"Setting ppo\.gamma in .* is 1\.5; it must be between"):
        load_config(tmp_path, environ={})


def test_rlhf_init_writes_every_key_with_its_help_and_loads_back_to_the_defaults(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("RLHF_DB_URL", f"sqlite:///{tmp_path / 'ws.db'}")
    assert main(["--workspace", str(tmp_path / "ws"), "init"]) == 0
    text = (tmp_path / "ws" / "rlhf.toml").read_text(encoding="utf-8")
    flat = " ".join(line.removeprefix("# ") for line in text.splitlines())
    for name in sections():
        assert f"\n[{name}]\n" in text
    for key in known_keys():
        section, name = key.split(".")
        item = setting_field(key)
        assert f"# {name} = {render_value(item.default)}\n" in text, key
        help_text = item.metadata["help"]
        assert help_text[0].upper() + help_text[1:] in flat, key
    assert load_config(tmp_path / "ws", environ={}) == Config()  # all commented out
    (tmp_path / "ws" / "rlhf.toml").write_text("[round]\noverlap = 5\n")
    assert main(["--workspace", str(tmp_path / "ws"), "init"]) == 0
    assert (tmp_path / "ws" / "rlhf.toml").read_text() == "[round]\noverlap = 5\n"


def test_setting_help_names_the_default_and_the_key() -> None:
    text = setting_help("generation.temperature")
    assert text.startswith(setting_field("generation.temperature").metadata["help"])
    assert text.endswith("; must be above 0 (default: 0.9; setting generation.temperature)")
    assert '(default: "auto"; setting runtime.device)' in setting_help("runtime.device")
    assert "(default: true;" in setting_help("ppo.normalize_rewards")
    with pytest.raises(KeyError, match="generation.temprature"):
        setting_help("generation.temprature")


def test_every_setting_help_is_valid_argparse_help() -> None:
    parser = argparse.ArgumentParser()
    for key in known_keys():
        parser.add_argument("--" + key.replace(".", "-").replace("_", "-"), help=setting_help(key))
    text = " ".join(parser.format_help().split())  # argparse expands "%" here
    assert "(default: 1e-05; setting optimize.learning_rate)" in text
