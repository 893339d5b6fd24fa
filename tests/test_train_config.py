"""audiossl.train.config: YAML with recipe floats, --section.key overrides, unknown-key checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from audiossl.train.config import apply_overrides, check_keys, read_config, yaml_loader


def test_recipe_floats_without_a_dot_are_floats() -> None:
    import yaml

    d = yaml.load("lr: 5e-4\nblr: 1.5e-4\nname: 1e\nsteps: 10\n", Loader=yaml_loader())
    assert d == {"lr": 5e-4, "blr": 1.5e-4, "name": "1e", "steps": 10}
    assert isinstance(d["lr"], float)


def test_overrides_nest_parse_yaml_scalars_and_leave_the_input_alone() -> None:
    base = {"optim": {"lr": 1.0}, "steps": 3}
    out = apply_overrides(base, ["--optim.lr", "1e-3", "--steps=10", "--data.batch-size", "4", "--optim.betas",
                                 "[0.8, 0.9]", "--flag", "true"])
    assert out == {"optim": {"lr": 1e-3, "betas": [0.8, 0.9]}, "steps": 10, "data": {"batch_size": 4}, "flag": True}
    assert base == {"optim": {"lr": 1.0}, "steps": 3}
    for bad in (["--steps"], ["steps", "1"], ["--"], ["--steps.x", "1"]):
        with pytest.raises(ValueError):
            apply_overrides({"steps": 3}, bad)


def test_unknown_keys_are_named_with_their_section() -> None:
    @dataclass
    class Section:
        lr: float = 0.1

    check_keys(Section, {"lr": 1}, "optim.")
    with pytest.raises(ValueError, match=r"\['optim.lrr'\]; known: \['optim.lr'\]"):
        check_keys(Section, {"lrr": 1}, "optim.")


def test_read_config_applies_overrides_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("steps: 3\noptim: {lr: 1e-2}\n")
    assert read_config(path, ["--steps", "4"], "a test config") == {"steps": 4, "optim": {"lr": 1e-2}}
    assert read_config(None, ["--steps", "4"], "a test config") == {"steps": 4}
    (tmp_path / "empty.yaml").write_text("")
    assert read_config(tmp_path / "empty.yaml", [], "a test config") == {}
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ValueError, match="a test config is a YAML mapping"):
        read_config(tmp_path / "list.yaml", [], "a test config")
