"""audiossl.train.evaluation: scores, predictions over batches and over cached embeddings, and
the JSON form of metric dicts."""

from __future__ import annotations

import math

import torch
from torch import nn

from audiossl.train.evaluation import class_scores, embed, json_clean, predict, predict_features


class _Model(nn.Module):
    """Pools a (B, 1, T, F) batch to (B, F) and maps it to two logits, like a Classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, 2)
        self.dropout = nn.Dropout(0.9)  # evaluation must be in eval mode: no dropout

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x.mean(dim=(1, 2)))

    def forward_head(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _batches() -> list:
    g = torch.Generator().manual_seed(0)
    return [{"fbank": torch.randn(n, 4, 3, generator=g), "labels": torch.eye(2)[:n], "ids": [f"c{i}" for i in range(n)]}
            for n in (2, 1)]


def test_scores_are_softmax_or_sigmoid() -> None:
    logits = torch.tensor([[1.0, 3.0]], dtype=torch.float16)
    assert torch.allclose(class_scores(logits, "ce"), torch.tensor([[1.0, 3.0]]).softmax(-1))
    assert torch.allclose(class_scores(logits, "bce"), torch.tensor([[1.0, 3.0]]).sigmoid())
    assert class_scores(logits, "ce").dtype == torch.float32


def test_predictions_from_batches_and_from_embeddings_agree() -> None:
    torch.manual_seed(0)
    model = _Model().train()
    cpu = torch.device("cpu")
    z, t, ids = embed(model, _batches(), cpu, None)
    assert z.shape == (3, 3) and ids == ["c0", "c1", "c0"] and not model.training
    model.train()
    s, t2 = predict(model, _batches(), cpu, None, "ce")
    s2, t3 = predict_features(model.train(), z, t, cpu, "ce")
    assert torch.allclose(s, s2) and torch.equal(t, t2) and t3 is t
    assert torch.allclose(s.sum(dim=1), torch.ones(3))


def test_json_clean_turns_non_finite_floats_to_none() -> None:
    x = {"acc": 0.5, "mAP": math.nan, "ap": [1.0, math.inf, -math.inf], "n": (1, 2), "name": "x"}
    assert json_clean(x) == {"acc": 0.5, "mAP": None, "ap": [1.0, None, None], "n": [1, 2], "name": "x"}
