"""hear-validator (hearvalidator 2021.0.2), the real one, over ``audiossl.hear``: a randomly
initialised native checkpoint of every family's tiny preset, at every sample rate the module
claims (:data:`audiossl.hear.HEAR_SAMPLE_RATES`).

The command line (``hear-validator audiossl.hear -m CKPT -d cpu``) is run once, as a user would;
the rest go through the same ``ValidateModel("audiossl.hear", CKPT, device)()`` that the command
calls, in one interpreter (each command line costs a tensorflow import). Every rule the validator
has is checked there: ``load_model`` and a torch module, ``sample_rate`` among its accepted
rates, int embedding sizes, float32 embeddings of the right shapes for 16 sounds of 2 s
(timestamps) and 8 of 3.74 s (scene), timestamps evenly spaced to within 1e-3 ms. Its one
warning (a hop over 50 ms: 16-frame patches step 160 ms; ``upsample=4`` gives 40 ms) is reported.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("hearvalidator", reason="hearvalidator is not installed: run bash scripts/test.sh --interop")
pytest.importorskip("tensorflow", reason="tensorflow (imported by hearvalidator) is not installed: bash scripts/test.sh --interop")

from audiossl.hear import HEAR_SAMPLE_RATES  # noqa: E402

pytestmark = pytest.mark.interop

PRESETS = ("eat_tiny", "maeast_patch_tiny", "maeast_frame_tiny", "ssast_tiny_patch", "ssast_tiny_frame",
           "audiomae_tiny", "ijepa_audio_tiny")
# mae_tiny and ijepa_tiny are the image presets (3 channels, 32/64 px); their families' audio
# presets above stand for them.

DRIVER = r"""
import contextlib, io, json, sys, time, warnings
import torch
torch.set_num_threads(1)
from hearvalidator.validate import ValidateModel
results = {"acceptable_sample_rates": list(ValidateModel.ACCEPTABLE_SAMPLE_RATE), "runs": {}}
for path in sys.argv[2:]:
    out, start = io.StringIO(), time.time()
    with contextlib.redirect_stdout(out), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ValidateModel("audiossl.hear", path, device="cpu")()
            error = None
        except BaseException as e:  # the validator's ModelError is a BaseException
            error = f"{type(e).__name__}: {e}"
    log = out.getvalue()
    results["runs"][path] = {
        "error": error, "seconds": time.time() - start,
        "warnings": [str(w.message) for w in caught if "hearvalidator" in (w.filename or "")],
        "log": [l for l in log.splitlines() if l.startswith("  - ") and "Module" not in l],
    }
json.dump(results, open(sys.argv[1], "w"), indent=1)
"""


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, native_checkpoint):
    """Every preset at every rate with no recorded representation (upstream's choice: CLS for
    EAT, the token mean otherwise), and at 16 kHz with what ``audiossl pretrain`` records
    (``meta.embed``: bands of the top-two-block mean), keyed ``(preset, "recorded")``."""
    from audiossl.models.registry import embedding_of, family_of

    root = tmp_path_factory.mktemp("hearvalidator")
    ckpts = {(p, sr): native_checkpoint(root / f"{p}_{sr}.pt", p, sr) for p in PRESETS for sr in HEAR_SAMPLE_RATES}
    for p in PRESETS:
        ckpts[(p, "recorded")] = native_checkpoint(root / f"{p}_recorded.pt", p, 16000,
                                                   meta={"embed": embedding_of(family_of(p))})
    return root, ckpts


@pytest.fixture(scope="module")
def validated(checkpoints, run_client):
    root, ckpts = checkpoints
    (root / "driver.py").write_text(DRIVER)
    run_client([str(root / "driver.py"), str(root / "results.json"), *map(str, ckpts.values())], cwd=root)
    results = json.loads((root / "results.json").read_text())
    return results, {key: results["runs"][str(path)] for key, path in ckpts.items()}


def test_the_command_line(checkpoints, run_client, figure):
    root, ckpts = checkpoints
    # hearvalidator.validate is what the hear-validator console script runs (its main()).
    out = run_client(["-m", "hearvalidator.validate", "audiossl.hear", "-m", str(ckpts[("eat_tiny", 16000)]), "-d", "cpu"],
                     cwd=root)
    assert "\nLooks good!\n" in out, out[-2000:]
    hop = [l for l in out.splitlines() if "Interval between timestamps" in l]
    figure("hear-validator eat_tiny 16 kHz", hop[0].strip(" -"))


def test_module_claims_only_rates_the_validator_accepts(validated):
    results, _ = validated
    assert set(HEAR_SAMPLE_RATES) <= set(results["acceptable_sample_rates"])


@pytest.mark.parametrize("sample_rate", HEAR_SAMPLE_RATES)
@pytest.mark.parametrize("preset", PRESETS)
def test_validator_passes(validated, preset, sample_rate, figure):
    run = validated[1][(preset, sample_rate)]
    assert run["error"] is None, "\n".join([run["error"], *run["log"]])
    assert any(f"Model sample rate is: {sample_rate}" in l for l in run["log"])
    shapes = [l.split(": ", 1)[1] for l in run["log"] if "Received" in l]
    hop = [l.split(" is ", 1)[1] for l in run["log"] if "Interval" in l]
    figure("validated", f"timestamps {shapes[0]}, scene {shapes[2]}, hop {hop[0]}"
           + (" (validator warns: hop > 50 ms)" if run["warnings"] else ""))


@pytest.mark.parametrize("preset", PRESETS)
def test_validator_passes_the_recorded_representation(checkpoints, validated, preset, figure):
    """The representation a checkpoint pretrained here records (``bands``: the frequency bands
    concatenated, F' × D for patch tokens; one band for frame tokens) passes too, with scene and
    timestamp embeddings of the same width."""
    from audiossl.embed import Embedder

    run = validated[1][(preset, "recorded")]
    assert run["error"] is None, "\n".join([run["error"], *run["log"]])
    emb = Embedder.from_checkpoint(checkpoints[1][(preset, "recorded")])
    assert emb.pooling == "bands" and emb.output_dim == emb.embed_dim * emb.num_bands
    assert (emb.num_bands == 1) == ("frame" in preset)
    shapes = [l.split(": ", 1)[1] for l in run["log"] if "Received" in l]
    assert shapes[0].endswith(f", {emb.output_dim}])") and shapes[2].endswith(f", {emb.output_dim}])"), shapes
    figure("validated (recorded representation)", f"{preset}: timestamps {shapes[0]}, scene {shapes[2]}")
