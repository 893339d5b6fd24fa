"""Representation benchmark: frozen embeddings → probes, with the baselines in the same run.

.. code-block:: python

    from audiossl.evaluate import evaluate, standard_representations, probe_accuracy

    specs = standard_representations({"eat": "exp/eat/model.pt"}, layers=["all"])  # + random, fbank
    results = evaluate({"lid": "tasks/lid/manifest.csv"}, specs, probe="logreg", seeds=3, out="exp/eval")
    results.tasks["lid"].row("eat").test_mean

    # on arrays (e.g. per-layer probes of saved checkpoints during a pretraining study)
    r = probe_accuracy(train_x, train_y, valid_x, valid_y, test_x, test_y, probe="logreg")
    r.test_acc, r.valid_acc, r.value  # C chosen on valid

Protocol: each task is a manifest with train / valid / test splits and one label per clip
(:mod:`.tasks`); each representation gives an ``(N, D)`` matrix per split, cached per
(representation, task) (:mod:`.representations`, :mod:`.cache`); embeddings are standardised
with train's statistics and probed with hyper-parameters chosen on valid accuracy, test accuracy
reported (:mod:`.probes`); mean ± sample std over seeds, tables, chart and margins
(:mod:`.results`, :mod:`.report`). ``audiossl evaluate`` is the command line.
"""

from audiossl.evaluate.probes import C_GRID, K_GRID, PROBES, WD_GRID, ProbeResult, fit_logreg, probe_accuracy, standardise
from audiossl.evaluate.representations import RepresentationSpec, fbank_stats, parse_layers, random_payload
from audiossl.evaluate.results import Results, RowResult, TaskResult
from audiossl.evaluate.runner import evaluate, standard_representations
from audiossl.evaluate.tasks import EvaluateError, Split, Task, load_task, task_from_manifest

__all__ = [
    "C_GRID",
    "K_GRID",
    "PROBES",
    "WD_GRID",
    "EvaluateError",
    "ProbeResult",
    "RepresentationSpec",
    "Results",
    "RowResult",
    "Split",
    "Task",
    "TaskResult",
    "evaluate",
    "fbank_stats",
    "fit_logreg",
    "load_task",
    "parse_layers",
    "probe_accuracy",
    "random_payload",
    "standard_representations",
    "standardise",
    "task_from_manifest",
]
