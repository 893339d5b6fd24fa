"""Probes on frozen embeddings: arrays in, accuracies out, hyper-parameters chosen on valid only.

:func:`probe_accuracy` standardises every split with the training split's mean and std, fits one
probe per hyper-parameter on train, picks the one with the best **valid** accuracy (ties: lower
valid cross-entropy, then the earlier grid entry) and reports that probe's test accuracy. The test
split never enters the choice; its accuracy at every grid point is kept in ``grid`` only so a
reader can see how far the valid choice is from the best-on-test one.

* ``logreg``: multinomial logistic regression with an L2 penalty, full-batch L-BFGS in float64.
  It minimises scikit-learn's ``LogisticRegression(C=C)`` objective (lbfgs solver, multinomial
  loss)::

      C · Σ_i CE(W x_i + b, y_i) + ½ ‖W‖²     (the intercept b is not penalised)

  i.e. larger C, weaker regularisation; solutions match scikit-learn's to solver tolerance. The
  problem is strictly convex in W and started from zero, so it has no seed: every seed gives the
  same result. The grid is warm-started from small to large C, with at most ``max_iter=100``
  L-BFGS iterations per C (scikit-learn's default): on separable data a weakly regularised
  optimum lies far out and is not worth chasing for an accuracy.
* ``linear``: a softmax layer trained with mini-batch AdamW (lr 1e-3, batch 64) for a fixed
  number of epochs, one model per weight decay, all trained side by side on the same batches
  (AdamW is element-wise, so this equals separate runs). The selected point is the (weight decay,
  epoch) with the best valid accuracy. ``seed`` draws the initial weights and the batch order.
* ``knn``: cosine k-nearest neighbours on the standardised embeddings, majority vote (ties go to
  the class with the larger summed similarity), k chosen on valid. No seed either.

Everything is pure: no files, no global RNG, float64 or float32 CPU tensors built per call.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["C_GRID", "K_GRID", "PROBES", "SEEDLESS_PROBES", "WD_GRID", "ProbeResult", "probe_accuracy",
           "standardise"]

C_GRID: Tuple[float, ...] = tuple(float(c) for c in np.logspace(-3, 2, 11))
WD_GRID: Tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
K_GRID: Tuple[int, ...] = (1, 3, 5, 7, 11, 15, 21, 31)
PROBES = ("logreg", "linear", "knn")
# Probes whose result does not depend on the seed (deterministic given the data).
SEEDLESS_PROBES = frozenset({"logreg", "knn"})
_PARAM = {"logreg": "C", "linear": "weight_decay", "knn": "k"}


@dataclass
class ProbeResult:
    """The selected probe: its hyper-parameter (``param`` = ``value``), valid accuracy and the
    accuracy on every evaluation split (``tests["test"]`` is :attr:`test_acc`). ``epoch`` is the
    selected epoch (1-based) of the ``linear`` probe. ``grid`` lists, per hyper-parameter, the
    valid accuracy and loss the choice was made on and the evaluation accuracies (information
    only)."""

    probe: str
    seed: int
    param: str
    value: float
    valid_acc: float
    tests: Dict[str, float]
    epoch: Optional[int] = None
    grid: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def test_acc(self) -> float:
        return self.tests["test"]

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ProbeResult":
        return cls(**dict(data))


def standardise(train: np.ndarray, *others: np.ndarray) -> List[np.ndarray]:
    """Every array minus train's per-dimension mean, over train's std (constant dimensions
    keep a std of 1, so they become 0 instead of NaN). Returns float64 arrays."""
    train = np.asarray(train, dtype=np.float64)
    mean = train.mean(0)
    std = train.std(0)
    std = np.where(std > 1e-12 * max(1.0, float(np.abs(mean).max(initial=0.0))), std, 1.0)
    return [(np.asarray(a, dtype=np.float64) - mean) / std for a in (train, *others)]


def _check(name: str, x: np.ndarray, y: np.ndarray, dim: Optional[int]) -> Tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 2:
        raise ValueError(f"{name}_x must be (N, D), got shape {x.shape}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"{name}_y must be ({x.shape[0]},) class indices, got shape {y.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name}_x has {x.shape[1]} dimensions, train_x has {dim}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}_x holds NaN or Inf")
    if len(y) and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0):
        raise ValueError(f"{name}_y must hold non-negative integer class indices")
    return x, y.astype(np.int64)


def _select(rows: Sequence[Mapping[str, Any]]) -> int:
    """Index of the best valid accuracy; ties by lower valid loss, then the first."""
    best = 0
    for i, r in enumerate(rows):
        b = rows[best]
        if r["valid_acc"] > b["valid_acc"] or (r["valid_acc"] == b["valid_acc"] and r["valid_loss"] < b["valid_loss"]):
            best = i
    return best


def probe_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    valid_x: np.ndarray,
    valid_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    probe: str = "logreg",
    seed: int = 0,
    grid: Optional[Sequence[float]] = None,
    extra_tests: Optional[Mapping[str, Tuple[np.ndarray, np.ndarray]]] = None,
    num_classes: Optional[int] = None,
    **options: Any,
) -> ProbeResult:
    """Fit ``probe`` on train for each hyper-parameter of ``grid`` (default :data:`C_GRID`,
    :data:`WD_GRID` or :data:`K_GRID`), select on valid, report test (and ``extra_tests``:
    ``{split: (x, y)}``). ``options``: ``max_iter`` (logreg); ``epochs``, ``lr``, ``batch_size``
    (linear)."""
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {PROBES}, got {probe!r}")
    train_x, train_y = _check("train", train_x, train_y, None)
    if len(train_y) < 2:
        raise ValueError("train needs at least 2 clips")
    dim = train_x.shape[1]
    valid_x, valid_y = _check("valid", valid_x, valid_y, dim)
    if not len(valid_y):
        raise ValueError("valid is empty: hyper-parameters are chosen on it")
    evals = {"test": _check("test", test_x, test_y, dim)}
    for name, (x, y) in (extra_tests or {}).items():
        evals[name] = _check(name, x, y, dim)
    k = num_classes or int(max([train_y.max(), valid_y.max()] + [y.max() for _, y in evals.values() if len(y)])) + 1
    with _one_thread():
        return _probe(train_x, train_y, valid_x, valid_y, evals, k, probe, seed, grid, options)


@contextmanager
def _one_thread():
    """Probe problems are small (10^2-10^4 × 10^2-10^3): torch's intra-op threads cost more
    than they give there, 3-5× on a machine shared with other jobs. One thread, then restore."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _probe(train_x, train_y, valid_x, valid_y, evals, k, probe, seed, grid, options) -> ProbeResult:
    xs = standardise(train_x, valid_x, *(x for x, _ in evals.values()))
    tr, va, ev = xs[0], xs[1], dict(zip(evals, xs[2:]))
    ev_y = {name: y for name, (_, y) in evals.items()}
    if probe == "logreg":
        rows = _logreg_grid(tr, train_y, va, valid_y, ev, ev_y, k, grid or C_GRID, **options)
    elif probe == "linear":
        rows = _linear_grid(tr, train_y, va, valid_y, ev, ev_y, k, grid or WD_GRID, seed=seed, **options)
    else:
        if options:
            raise TypeError(f"knn takes no options, got {sorted(options)}")
        rows = _knn_grid(tr, train_y, va, valid_y, ev, ev_y, k, grid or K_GRID)
    best = rows[_select(rows)]
    return ProbeResult(
        probe=probe,
        seed=int(seed),
        param=_PARAM[probe],
        value=float(best["value"]),
        valid_acc=float(best["valid_acc"]),
        tests={name: float(best[f"{name}_acc"]) for name in evals},
        epoch=best.get("epoch"),
        grid=[{key: v for key, v in r.items()} for r in rows] if probe != "linear" else _linear_summary(rows),
    )


def _accuracy(logits, y) -> float:
    return float((logits.argmax(1) == y).double().mean()) if len(y) else float("nan")


# ------------------------------------------------------------------------------ logistic regression
def _lbfgs(x, y, w, b, C: float, max_iter: int, tol: float, tol_change: float = 1e-10) -> None:
    """Minimise the documented objective over ``w, b`` in place (from their current values)."""
    import torch

    if not C > 0:
        raise ValueError(f"C must be positive, got {C}")
    # sklearn's objective divided by C·n: same minimiser, gradients of order one for L-BFGS.
    penalty = 1.0 / (2.0 * C * x.shape[0])
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=tol,
                            tolerance_change=tol_change, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + penalty * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)


def _zeros(d: int, k: int):
    import torch

    return (torch.zeros(d, k, dtype=torch.float64, requires_grad=True),
            torch.zeros(k, dtype=torch.float64, requires_grad=True))


def _logreg_grid(tr, ytr, va, yva, ev, ev_y, k: int, grid: Sequence[float], max_iter: int = 100,
                 tol: float = 1e-6) -> List[Dict[str, Any]]:
    import torch
    import torch.nn.functional as F

    x, y = torch.from_numpy(tr), torch.from_numpy(ytr)
    xv, yv = torch.from_numpy(va), torch.from_numpy(yva)
    xe = {n: (torch.from_numpy(a), torch.from_numpy(ev_y[n])) for n, a in ev.items()}
    w, b = _zeros(tr.shape[1], k)
    rows = []
    for C in sorted(float(c) for c in grid):
        _lbfgs(x, y, w, b, C, max_iter, tol)  # warm start: w, b carry over from the previous (smaller) C
        with torch.no_grad():
            lv = xv @ w + b
            row = {"value": C, "valid_acc": _accuracy(lv, yv), "valid_loss": float(F.cross_entropy(lv, yv))}
            for name, (xa, ya) in xe.items():
                row[f"{name}_acc"] = _accuracy(xa @ w + b, ya)
        rows.append(row)
    return rows


def fit_logreg(x: np.ndarray, y: np.ndarray, C: float, num_classes: Optional[int] = None, max_iter: int = 1000,
               tol: float = 1e-9) -> Tuple[np.ndarray, np.ndarray]:
    """The minimiser ``(W (D, K), b (K,))`` of the documented objective on ``x`` as given (not
    standardised here), from zero: for checks against other implementations."""
    import torch

    x = np.asarray(x, np.float64)
    w, b = _zeros(x.shape[1], num_classes or int(np.max(y)) + 1)
    with _one_thread():
        _lbfgs(torch.from_numpy(x), torch.from_numpy(np.asarray(y, np.int64)), w, b, float(C), max_iter, tol,
               tol_change=1e-14)
    return w.detach().numpy(), b.detach().numpy()


# ------------------------------------------------------------------------------ AdamW softmax layer
def _linear_grid(tr, ytr, va, yva, ev, ev_y, k: int, grid: Sequence[float], *, seed: int, epochs: int = 100,
                 lr: float = 1e-3, batch_size: int = 64) -> List[Dict[str, Any]]:
    import torch
    import torch.nn.functional as F

    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    gen = torch.Generator().manual_seed(int(seed))
    x = torch.from_numpy(tr).float()
    y = torch.from_numpy(ytr)
    xv, yv = torch.from_numpy(va).float(), torch.from_numpy(yva)
    xe = {n: (torch.from_numpy(a).float(), torch.from_numpy(ev_y[n])) for n, a in ev.items()}
    wds = [float(v) for v in grid]
    d, g = x.shape[1], len(wds)
    bound = 1.0 / math.sqrt(d)  # nn.Linear's default init range
    w0 = (torch.rand(d, k, generator=gen) * 2 - 1) * bound
    b0 = (torch.rand(k, generator=gen) * 2 - 1) * bound
    ws = [torch.nn.Parameter(w0.clone()) for _ in wds]
    bs = [torch.nn.Parameter(b0.clone()) for _ in wds]
    groups = [{"params": [w], "weight_decay": wd} for w, wd in zip(ws, wds)]
    groups += [{"params": [b], "weight_decay": 0.0} for b in bs]
    opt = torch.optim.AdamW(groups, lr=lr)
    rows: List[Dict[str, Any]] = []
    n = x.shape[0]
    for epoch in range(1, epochs + 1):
        order = torch.randperm(n, generator=gen)
        for lo in range(0, n, batch_size):
            idx = order[lo : lo + batch_size]
            logits = torch.einsum("nd,gdk->gnk", x[idx], torch.stack(ws)) + torch.stack(bs)[:, None]
            # Sum over models of each model's mean loss: every model gets its own gradient.
            loss = F.cross_entropy(logits.reshape(-1, k), y[idx].repeat(g), reduction="sum") / len(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            W, B = torch.stack(ws), torch.stack(bs)[:, None]
            lv = torch.einsum("nd,gdk->gnk", xv, W) + B
            le = {name: torch.einsum("nd,gdk->gnk", xa, W) + B for name, (xa, _) in xe.items()}
            for j, wd in enumerate(wds):
                row = {"value": wd, "epoch": epoch, "valid_acc": _accuracy(lv[j], yv),
                       "valid_loss": float(F.cross_entropy(lv[j], yv))}
                for name, (_, ya) in xe.items():
                    row[f"{name}_acc"] = _accuracy(le[name][j], ya)
                rows.append(row)
    return rows


def _linear_summary(rows: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Per weight decay, its best-valid epoch's row (the full epoch × wd table is long)."""
    out = []
    for wd in sorted({r["value"] for r in rows}):
        mine = [r for r in rows if r["value"] == wd]
        out.append(dict(mine[_select(mine)]))
    return out


# ------------------------------------------------------------------------------ k-NN
def _knn_grid(tr, ytr, va, yva, ev, ev_y, k: int, grid: Sequence[float]) -> List[Dict[str, Any]]:
    import torch

    def unit(a):
        t = torch.from_numpy(a)
        return t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)

    xt = unit(tr)
    yt = torch.from_numpy(ytr)
    ks = sorted({int(v) for v in grid if 1 <= int(v) <= len(ytr)}) or [1]
    kmax = ks[-1]

    def votes(a):  # (n, kmax) neighbour labels and similarities, best first
        sims = unit(a) @ xt.T
        top = sims.topk(kmax, dim=1)
        return yt[top.indices], top.values

    def predict(labels, sims, kk):
        onehot = torch.nn.functional.one_hot(labels[:, :kk], k).double()
        score = onehot.sum(1) + 1e-3 * (onehot * sims[:, :kk, None]).sum(1) / kk
        return score

    yv = torch.from_numpy(yva)
    val = votes(va)
    evs = {name: (votes(a), torch.from_numpy(ev_y[name])) for name, a in ev.items()}
    rows = []
    for kk in ks:
        sv = predict(*val, kk)
        # Valid "loss" for ties: minus the winner's vote share (more confident first).
        share = sv.max(1).values / kk
        row = {"value": kk, "valid_acc": _accuracy(sv, yv), "valid_loss": float(-share.mean())}
        for name, (vt, ya) in evs.items():
            row[f"{name}_acc"] = _accuracy(predict(*vt, kk), ya)
        rows.append(row)
    return rows
