"""The fine-tuning / linear-probe engine on a small labelled store of clearly different sounds
(tones, noise, clicks) synthesised with numpy and precomputed with the real front end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from audiossl.checkpoint import load_checkpoint, native_payload, save_checkpoint
from audiossl.models.registry import build_model
from audiossl.train.finetune import FinetuneConfig, Finetuner, finetune, finetune_param_groups

SR = 16000
CLASSES = ("tone", "noise", "click")
PER_CLASS = 8  # 2 per fold, 4 folds


def _sound(kind: str, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(SR) / SR
    if kind == "tone":
        return 0.3 * np.sin(2 * np.pi * rng.uniform(300, 3000) * t)
    if kind == "noise":
        return 0.1 * rng.standard_normal(SR)
    x = np.zeros(SR)
    x[:: int(rng.integers(800, 2000))] = 0.9
    return x


def _build(root: Path, multi: bool) -> tuple:
    from audiossl.data.manifest import Manifest, label_map_from_labels, read_manifest, write_manifest
    from audiossl.data.store import compute_stats, precompute, write_normalizer

    rng = np.random.default_rng(0)
    rows = []
    for c, kind in enumerate(CLASSES):
        for i in range(PER_CLASS):
            labels = (kind,)
            x = _sound(kind, rng)
            if multi and i % 2:  # every other clip also has a tone in it
                other = CLASSES[(c + 1) % 3]
                x = x + _sound(other, rng)
                labels = tuple(sorted({kind, other}))
            path = root / f"{kind}_{i}.wav"
            sf.write(str(path), x.astype(np.float32), SR)
            rows.append({"id": f"{kind}_{i}", "path": str(path), "labels": labels, "fold": i % 4 + 1})
    table = pd.DataFrame(rows)
    manifest = Manifest(table, label_map_from_labels(table["labels"]))
    write_manifest(manifest, root / "manifest.csv")
    store = root / "store.h5"
    precompute(read_manifest(root / "manifest.csv"), store, workers=1, progress=False)
    write_normalizer(store, compute_stats(store, progress=False).to_normalizer())
    return store, root / "manifest.csv"


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("tones"), multi=False)


@pytest.fixture(scope="module")
def multilabel(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("mixes"), multi=True)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "eat_tiny.pt"
    save_checkpoint(path, native_payload(build_model("eat_tiny"), family="eat", target_length=96,
                                         meta={"preset": "eat_tiny"}))
    return path


def _cfg(store, manifest, ckpt, out, **top):
    d = {
        "model": {"checkpoint": str(ckpt)},
        "data": {"store": str(store), "manifest": str(manifest), "split_column": "fold", "test_values": [1],
                 "target_length": 96, "batch_size": 6, "eval_batch_size": 32, "num_workers": 0, "val_fraction": 0.2},
        "epochs": 3, "out": str(out), "progress": False, "device": "cpu",
    }
    for k, v in top.items():
        if isinstance(v, dict):
            d.setdefault(k, {}).update(v)
        else:
            d[k] = v
    return FinetuneConfig.from_dict(d, source="eat_tiny")


def test_linprobe_reaches_high_accuracy_and_writes_outputs(labelled, pretrained, tmp_path):
    store, manifest = labelled
    cfg = _cfg(store, manifest, pretrained, tmp_path / "probe", mode="linprobe", epochs=30,
               optim={"lr": 1e-2})
    res = finetune(cfg)
    assert res["task"] == "linprobe" and res["init"] == "pretrained" and res["selected_on"] == "val"
    assert res["num_test_clips"] == 6 and res["num_train_clips"] + res["num_val_clips"] == 18
    assert res["metrics"]["test"]["acc"] >= 5 / 6
    ids = (tmp_path / "probe" / "test_clips.txt").read_text().split()
    assert sorted(ids) == sorted(f"{k}_{i}" for k in CLASSES for i in (0, 4))
    assert json.loads((tmp_path / "probe" / "results.json").read_text()) == res
    assert len((tmp_path / "probe" / "metrics.jsonl").read_text().splitlines()) == 30
    model = load_checkpoint(tmp_path / "probe" / "model.pt")
    assert model["family"] == "classifier" and model["config"]["head"] == "bn_linear"
    assert cfg.optim.layer_decay is None and cfg.model.head == "bn_linear"


def test_finetune_loss_falls_and_extras(labelled, pretrained, tmp_path):
    store, manifest = labelled
    cfg = _cfg(store, manifest, pretrained, tmp_path / "ft", epochs=8, wa_start=2, wa_end=4,
               optim={"lr": 3e-3, "warmup": 0}, augment={"specaug_ratio": None, "roll": False})
    res = finetune(cfg)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.8 * losses[0]
    assert [e["name"] for e in res["extra"]] == ["weight_average", "ensemble"]
    assert res["extra"][0]["epochs"] == [2, 4] and res["extra"][1]["epochs"] == [1, 8]
    assert 0.0 <= res["extra"][1]["metrics"]["test"]["acc"] <= 1.0
    assert (tmp_path / "ft" / "model_wa.pt").is_file()
    # EAT defaults were applied (family table) under the explicit overrides.
    assert cfg.optim.layer_decay == 0.65 and cfg.optim.layer_decay_style == "eat"
    assert cfg.augment.label_smoothing == 0.1 and cfg.model.drop_path == 0.1 and cfg.optim.betas == [0.9, 0.95]


def test_selection_on_val_vs_test_is_labelled(labelled, pretrained, tmp_path):
    store, manifest = labelled
    res = finetune(_cfg(store, manifest, pretrained, tmp_path / "t", mode="linprobe", epochs=5, select_on_test=True))
    assert res["selected_on"] == "test (optimistic)"
    tests = [json.loads(line)["test"]["acc"] for line in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()]
    assert res["metrics"]["test"]["acc"] == max(tests)
    assert res["selected_epoch"] == tests.index(max(tests)) + 1
    res = finetune(_cfg(store, manifest, pretrained, tmp_path / "last", mode="linprobe", epochs=2,
                        data={"val_fraction": 0.0}))
    assert res["selected_on"] == "last" and res["selected_epoch"] == 2 and res["metrics"]["val"] is None


def test_eat_layer_decay_quirk_and_mae_groups(labelled, pretrained, tmp_path):
    store, manifest = labelled
    cfg = _cfg(store, manifest, pretrained, tmp_path / "g")
    trainer = Finetuner(cfg)
    scale = {n: g["lr_scale"] for g in trainer.groups for n in g["names"]}
    d = 0.65  # eat_tiny has depth 2: block i gets d ** (2 - i)
    assert scale["encoder.blocks.0.attn.qkv.weight"] == pytest.approx(d ** 2)
    assert scale["encoder.blocks.1.attn.qkv.weight"] == pytest.approx(d)
    for name in ("encoder.patch_embed.proj.weight", "encoder.cls_token", "encoder.norm_pre.weight",
                 "fc_norm.weight", "head.weight"):
        assert scale[name] == 1.0, name
    cfg.optim.layer_decay_style = "mae"
    mae = {n: g["lr_scale"] for g in finetune_param_groups(trainer.model, cfg.optim) for n in g["names"]}
    assert mae["encoder.patch_embed.proj.weight"] == pytest.approx(d ** 3) and mae["head.weight"] == 1.0
    wd = {n: g["weight_decay"] for g in trainer.groups for n in g["names"]}
    # EAT's fine-tuning exempts only 1-D parameters and biases: its 3-D cls token is decayed
    assert wd["encoder.cls_token"] == 0.05 and wd["head.bias"] == 0.0 and wd["head.weight"] == 0.05
    trainer.model.config.source = "audiomae"
    assert "encoder.cls_token" in trainer.model.no_weight_decay()


def test_resume_after_a_stop_gives_the_same_result(labelled, pretrained, tmp_path, monkeypatch):
    store, manifest = labelled
    kw = dict(epochs=3, optim={"lr": 1e-3}, augment={"mixup": 0.5}, wa_start=1, wa_end=3)
    full = finetune(_cfg(store, manifest, pretrained, tmp_path / "full", **kw))

    calls = {"n": 0}
    original = Finetuner.save

    def stop_after_first(self):
        path = original(self)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(Finetuner, "save", stop_after_first)
    with pytest.raises(KeyboardInterrupt):
        finetune(_cfg(store, manifest, pretrained, tmp_path / "cut", **kw))
    monkeypatch.setattr(Finetuner, "save", original)
    assert len((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()) == 1
    resumed = finetune(_cfg(store, manifest, pretrained, tmp_path / "cut", **kw), resume=True)
    assert (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()[-1].split('"seconds"')[0] == \
        (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()[-1].split('"seconds"')[0]
    assert resumed["metrics"] == full["metrics"] and resumed["extra"] == full["extra"]


def test_multilabel_uses_bce_and_map(multilabel, pretrained, tmp_path):
    store, manifest = multilabel
    res = finetune(_cfg(store, manifest, pretrained, tmp_path / "ml", mode="linprobe", epochs=20, optim={"lr": 1e-2}))
    assert res["loss"] == "bce" and res["select_metric"] == "mAP"
    assert res["metrics"]["test"]["mAP"] > 0.75  # 0.81 measured; chance is the ~0.5 prevalence


def test_random_init_reports_its_preset(labelled, tmp_path):
    store, manifest = labelled
    d = {"model": {"init": "random", "preset": "eat_tiny"},
         "data": {"store": str(store), "manifest": str(manifest), "split_column": "fold", "test_values": [2],
                  "target_length": 96, "batch_size": 6, "num_workers": 0},
         "mode": "linprobe", "epochs": 1, "out": str(tmp_path / "r"), "progress": False, "device": "cpu"}
    res = finetune(FinetuneConfig.from_dict(d, source="eat_tiny"))
    assert res["init"] == "random" and res["checkpoint"] is None and res["model"] == "eat_tiny"


def test_linprobe_command_with_random_init(labelled, tmp_path):
    import argparse

    from audiossl.commands import linprobe

    store, manifest = labelled
    conf = tmp_path / "conf.yaml"
    conf.write_text(f"data:\n  store: {store}\n  manifest: {manifest}\n  split_column: fold\n  test_values: [3]\n"
                    "  target_length: 96\n  batch_size: 6\n  num_workers: 0\nepochs: 2\nprogress: false\ndevice: cpu\n")
    parser = argparse.ArgumentParser()
    linprobe.add_arguments(parser)
    args, extra = parser.parse_known_args(["--config", str(conf), "--model", "eat_tiny", "--out", str(tmp_path / "o"),
                                           "--optim.lr", "5e-3"])
    args.overrides = extra
    assert linprobe.run(args) == 0
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["task"] == "linprobe" and res["init"] == "random" and res["split"]["test_values"] == [3]
    cfg = FinetuneConfig.from_dict(__import__("yaml").safe_load((tmp_path / "o" / "config.yaml").read_text()))
    assert cfg.optim.lr == 5e-3 and cfg.mode == "linprobe"


def test_step_schedule_decays_after_the_configured_epochs(labelled, pretrained, tmp_path):
    store, manifest = labelled
    cfg = _cfg(store, manifest, pretrained, tmp_path / "s", epochs=4,
               optim={"lr": 1e-3, "warmup": 0, "schedule": "step", "step_start": 2, "step_every": 1, "step_gamma": 0.5})
    trainer = Finetuner(cfg)
    spe = trainer.steps_per_epoch
    lrs = [trainer.schedule(e * spe) for e in range(4)]
    assert lrs == pytest.approx([1e-3, 1e-3, 5e-4, 2.5e-4])


def test_names_importable_before_the_engine_was_split_still_are():
    import audiossl.train.finetune as ft
    from audiossl import checkpoint
    from audiossl.train import config, finetune_config, finetune_data, loop, selection

    homes = {finetune_config: ("FAMILY_FINETUNE", "LINPROBE_DEFAULTS", "MODES", "LOSSES", "family_defaults",
                               "FtDataConfig", "FtModelConfig", "FtOptimConfig", "AugmentConfig", "FinetuneConfig",
                               "resolve_source", "load_config"),
             finetune_data: ("Split", "holdout", "split_data"),
             selection: ("SELECTED_ON_TEST",),
             loop: ("PRECISIONS", "TrainingError"),
             config: ("apply_overrides", "yaml_loader"),
             checkpoint: ("CheckpointError", "load_checkpoint", "native_payload", "save_checkpoint")}
    for home, names in homes.items():
        for name in names:
            assert getattr(ft, name) is getattr(home, name), name
