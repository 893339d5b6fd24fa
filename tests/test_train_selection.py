"""audiossl.train.selection: the best epoch, weight averaging and the checkpoint ensemble, and
their state as the training checkpoint stores it."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from audiossl.train.selection import SELECTED_ON_TEST, Ensemble, Selection, WeightAverage, selection_split


def _record(epoch: int, val: float, test: float) -> dict:
    return {"epoch": epoch + 1, "val": {"acc": val}, "test": {"acc": test}}


def test_selection_split_and_label() -> None:
    assert selection_split(True, True) == "test" and selection_split(False, True) == "val"
    assert selection_split(False, False) is None
    labels = [Selection("acc", s).selected_on for s in ("test", "val", None)]
    assert labels == [SELECTED_ON_TEST, "val", "last"] and SELECTED_ON_TEST == "test (optimistic)"


def test_best_on_val_keeps_the_first_of_equals_and_ranks_nan_lowest() -> None:
    sel = Selection("acc", "val")
    kept = [sel.update(e, _record(e, v, 1.0 - v)) for e, v in enumerate([math.nan, 0.5, 0.7, 0.7, 0.2])]
    assert kept == [True, True, True, False, False]
    assert sel.best == {"value": 0.7, "epoch": 3, "metrics": {"val": {"acc": 0.7}, "test": {"acc": pytest.approx(0.3)}}}
    assert sel.value({"acc": None}) == -math.inf and sel.value({}) == -math.inf


def test_without_a_selection_split_the_last_epoch_wins_and_state_round_trips() -> None:
    sel = Selection("acc", None)
    for e in range(3):
        assert sel.update(e, {"epoch": e + 1, "test": {"acc": 0.1}})
    assert sel.best["epoch"] == 3 and sel.best["value"] == 2.0 and sel.best["metrics"]["val"] is None
    again = Selection("acc", None)
    again.load_state(sel.state())
    assert again.best == sel.best and again.best is not sel.best


def test_weight_average_of_the_range_over_the_selected_state() -> None:
    model = nn.Linear(2, 1)
    model.register_buffer("count", torch.tensor(7))  # not floating point: taken from the selected state
    wa = WeightAverage(2, 3)
    assert wa.averaged(model, model.state_dict()) is None
    for epoch, value in ((1, 100.0), (2, 1.0), (3, 2.0), (4, 100.0)):
        with torch.no_grad():
            model.weight.fill_(value)
            model.bias.fill_(value)
        wa.add(epoch, model)
    assert wa.count == 2 and wa.sum["weight"].dtype == torch.float64
    selected = {k: v.clone() for k, v in model.state_dict().items()}
    selected["count"] = torch.tensor(3)
    avg = wa.averaged(model, selected)
    assert torch.equal(avg.weight, torch.full((1, 2), 1.5)) and int(avg.count) == 3 and avg is not model
    assert float(model.weight.detach()[0, 0]) == 100.0
    restored = WeightAverage(2, 3)
    restored.load_state(wa.state())
    assert restored.count == 2 and torch.equal(restored.sum["bias"], wa.sum["bias"])
    none = WeightAverage(None, None)
    none.add(1, model)
    assert none.state() == {"wa_sum": None, "wa_count": 0}


def test_ensemble_row_is_the_metrics_of_the_mean_scores() -> None:
    targets = {"val": torch.tensor([[1.0, 0.0], [0.0, 1.0]]), "test": torch.tensor([[1.0, 0.0]])}
    ens = Ensemble(True)
    assert ens.row(targets.get) is None
    ens.add_epoch({"val": torch.tensor([[0.9, 0.1], [0.8, 0.2]]), "test": torch.tensor([[0.2, 0.8]])})
    ens.add_epoch({"val": torch.tensor([[0.9, 0.1], [0.0, 1.0]]), "test": torch.tensor([[1.0, 0.0]])})
    row = ens.row(targets.get)
    assert row["name"] == "ensemble" and row["epochs"] == [1, 2]
    assert row["metrics"]["val"]["acc"] == 1.0 and row["metrics"]["test"]["acc"] == 1.0  # test: 0.6 vs 0.4
    assert ens.sum["val"].dtype == torch.float64
    restored = Ensemble(True)
    restored.load_state(ens.state())
    assert restored.count == 2 and torch.equal(restored.sum["test"], ens.sum["test"])
    only_test = Ensemble(True)
    only_test.add_epoch({"test": torch.tensor([[0.2, 0.8]])})
    assert only_test.row(targets.get)["metrics"]["val"] is None
    off = Ensemble(False)
    off.add_epoch({"test": torch.tensor([[0.2, 0.8]])})
    assert off.count == 0 and off.row(targets.get) is None and off.state() == {"ens_sum": {"val": None, "test": None},
                                                                              "ens_count": 0}
