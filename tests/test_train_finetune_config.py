"""audiossl.train.finetune_config: family defaults by source prefix, the probe's own defaults,
precedence of the YAML over them, and the checks of a configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from audiossl.train.finetune_config import FinetuneConfig, family_defaults, load_config


def _d(**top) -> dict:
    d = {"model": {"checkpoint": "x.pt"},
         "data": {"store": "s.h5", "manifest": "m.csv", "split_column": "fold", "test_values": [1]}}
    for k, v in top.items():
        if isinstance(v, dict):
            d.setdefault(k, {}).update(v)
        else:
            d[k] = v
    return d


def test_family_defaults_match_by_prefix_longest_first() -> None:
    assert family_defaults("maeast_patch_base")["optim"]["optimizer"] == "adam"
    assert family_defaults("mae_vit_base")["model"]["strip_final_norm"] is True
    assert family_defaults("audiomae_tiny")["optim"]["layer_decay"] == 0.75
    assert family_defaults("jepa")["model"]["pooling"] == family_defaults("ijepa_vit")["model"]["pooling"] == "mean"
    assert family_defaults("nothing_known") == {}
    a = family_defaults("eat_base")
    a["optim"]["lr"] = 1.0
    assert family_defaults("eat_base")["optim"]["lr"] == 5e-5  # a copy, not the table


def test_the_probe_keeps_only_the_family_pooling() -> None:
    probe = family_defaults("eat_base", "linprobe")
    assert probe["model"]["pooling"] == "cls" and probe["model"]["head"] == "bn_linear"
    assert probe["optim"]["layer_decay"] is None and probe["augment"]["mixup"] == 0.0
    assert "pooling" not in family_defaults("unknown", "linprobe")["model"]


def test_yaml_over_family_defaults(tmp_path: Path) -> None:
    cfg = FinetuneConfig.from_dict(_d(optim={"lr": 1e-3}), source="eat_base")
    assert cfg.optim.lr == 1e-3 and cfg.optim.layer_decay == 0.65 and cfg.model.pooling == "cls"
    path = tmp_path / "c.yaml"
    path.write_text("model: {init: random, preset: ssast_tiny_patch}\n"
                    "data: {store: s.h5, manifest: m.csv, split_column: fold, test_values: [1]}\n")
    cfg = load_config(path, ["--optim.lr", "5e-4"], mode="linprobe", epochs=None)
    assert cfg.mode == "linprobe" and cfg.optim.lr == 5e-4 and cfg.model.pooling == "mean" and cfg.epochs == 30


@pytest.mark.parametrize("change, message", [
    (dict(mode="probe"), "mode: 'probe' is not one of finetune, linprobe"),
    (dict(nope=1), "unknown config keys"),
    (dict(optim={"lrr": 1}), "optim.lrr"),
    (dict(wa_start=2), "set both wa_start and wa_end"),
    (dict(wa_start=3, wa_end=2), "wa_start <= wa_end"),
    (dict(data={"train": "t.h5"}), "either data.store"),
    (dict(data={"val_fraction": 1.0}), "val_fraction"),
    (dict(model={"init": "random"}), "model.preset: not set"),
    (dict(precision="fp8"), "precision: 'fp8' is not one of"),
])
def test_bad_configurations_are_named(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FinetuneConfig.from_dict(_d(**change))
