"""Which model a fine-tuning run reports, and the two it reports beside it.

* :class:`Selection`: the epoch with the best selection metric (``acc`` or ``mAP``, higher is
  better) on the selection split: ``"val"``, or ``"test"`` for the optimistic upstream protocol
  (reported as ``"test (optimistic)"``); without either, the last epoch (``"last"``).
* :class:`WeightAverage`: the mean of the weights after epochs ``wa_start..wa_end`` (1-based,
  inclusive) over the selected model's other tensors (``results.json``'s ``weight_average``).
* :class:`Ensemble`: the mean of every epoch's predicted scores, AST's checkpoint ensemble.

Each keeps its running state in the plain form the training checkpoint stores (``best``;
``wa_sum``, ``wa_count``; ``ens_sum``, ``ens_count``), so a resumed run goes on with the sums
the interrupted one had.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, Dict, Mapping, Optional

from torch import Tensor, nn

from audiossl.checkpoint import load_state_dict
from audiossl.train.metrics import classification_metrics

SELECTED_ON_TEST = "test (optimistic)"


def selection_split(select_on_test: bool, has_val: bool) -> Optional[str]:
    if select_on_test:
        return "test"
    return "val" if has_val else None


class Selection:
    """The best epoch so far; ``best`` is ``{"value", "epoch" (1-based), "metrics": {"val", "test"}}``."""

    def __init__(self, metric: str, split: Optional[str]) -> None:
        self.metric = metric
        self.split = split
        self.best: Dict[str, Any] = {"value": None, "epoch": None, "metrics": None}

    @property
    def selected_on(self) -> str:
        return {"test": SELECTED_ON_TEST, "val": "val", None: "last"}[self.split]

    def value(self, metrics: Mapping[str, float]) -> float:
        v = metrics.get(self.metric)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return -math.inf
        return float(v)

    def update(self, epoch: int, record: Mapping[str, Any]) -> bool:
        """Keep epoch ``epoch`` (0-based) of ``record`` if it is the best so far; True if kept.
        Without a selection split the value is the epoch index, so the last epoch wins."""
        value = self.value(record[self.split]) if self.split is not None else float(epoch)
        if self.best["value"] is None or value > self.best["value"]:
            self.best = {"value": value, "epoch": epoch + 1,
                         "metrics": {"val": record.get("val"), "test": record.get("test")}}
            return True
        return False

    def state(self) -> Dict[str, Any]:
        return {"best": self.best}

    def load_state(self, train: Mapping[str, Any]) -> None:
        self.best = dict(train["best"])


class WeightAverage:
    """Running double-precision sums of the floating-point weights of epochs ``start..end``."""

    def __init__(self, start: Optional[int], end: Optional[int]) -> None:
        self.start, self.end = start, end
        self.sum: Optional[Dict[str, Tensor]] = None
        self.count = 0

    def add(self, epoch: int, model: nn.Module) -> None:
        """Add the weights after epoch ``epoch`` (1-based) if it is in the averaged range."""
        if self.start is None or not self.start <= epoch <= self.end:
            return
        sd = {k: v.detach().double().cpu() for k, v in model.state_dict().items() if v.is_floating_point()}
        self.sum = sd if self.sum is None else {k: self.sum[k] + sd[k] for k in sd}
        self.count += 1

    def averaged(self, model: nn.Module, base: Mapping[str, Tensor]) -> Optional[nn.Module]:
        """A copy of ``model`` holding ``base`` (the selected state dict) with the averaged
        tensors in place of its floating-point ones; None if no epoch was added."""
        if self.sum is None or not self.count:
            return None
        avg = copy.deepcopy(model)
        state = dict(base)
        state.update({k: (v / self.count).to(state[k].dtype) for k, v in self.sum.items()})
        load_state_dict(avg, state)
        return avg

    def state(self) -> Dict[str, Any]:
        return {"wa_sum": self.sum, "wa_count": self.count}

    def load_state(self, train: Mapping[str, Any]) -> None:
        self.sum, self.count = train.get("wa_sum"), int(train.get("wa_count", 0))


class Ensemble:
    """Running sums of each evaluation split's scores, one term per epoch."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.sum: Dict[str, Optional[Tensor]] = {"val": None, "test": None}
        self.count = 0

    def add_epoch(self, scores: Mapping[str, Tensor]) -> None:
        if not self.enabled:
            return
        for name, s in scores.items():
            prev = self.sum[name]
            self.sum[name] = s.double() if prev is None else prev + s.double()
        self.count += 1

    def row(self, targets: Callable[[str], Tensor]) -> Optional[Dict[str, Any]]:
        """``results.json``'s ``ensemble`` row: the metrics of the mean scores against
        ``targets(split)``; None when disabled or before the first epoch."""
        if not (self.enabled and self.count):
            return None
        metrics = {}
        for name in ("val", "test"):
            s = self.sum.get(name)
            metrics[name] = None if s is None else classification_metrics(s / self.count, targets(name))
        return {"name": "ensemble", "epochs": [1, self.count], "metrics": metrics}

    def state(self) -> Dict[str, Any]:
        return {"ens_sum": self.sum, "ens_count": self.count}

    def load_state(self, train: Mapping[str, Any]) -> None:
        self.sum, self.count = dict(train.get("ens_sum") or {}), int(train.get("ens_count", 0))
