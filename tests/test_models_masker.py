"""audiossl/models/masker.py: a learned masker trained around a frozen MAE."""

from __future__ import annotations

import copy
from typing import Dict

import pytest
import torch

from audiossl.masking.learned import temperature
from audiossl.models.mae import MAE, audiomae_tiny, mae_config
from audiossl.models.masker import (
    MASKER_PRESETS,
    AdaptiveMasker,
    AdaptiveMaskerConfig,
    adversary_weight,
    masker_config,
)
from audiossl.checkpoint import CheckpointError, native_payload

LOG_KEYS = {
    "loss", "keep_fraction", "rec_error_learned", "rec_error_random", "rec_error_ratio", "reg_mean", "reg_entropy",
    "score_std", "temperature", "adversary_weight",
}


def spec(B: int = 2, T: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(B, 1, T, 128, generator=torch.Generator().manual_seed(seed))


def tiny(**overrides) -> AdaptiveMasker:
    torch.manual_seed(0)  # parameter init only
    return AdaptiveMasker(masker_config("masker_audiomae_tiny", **overrides))


def randomise_scorer(model: AdaptiveMasker, seed: int = 0, scale: float = 1.0) -> None:
    """Give the zero-initialised output layer weights, so scores differ between patches."""
    with torch.no_grad():
        model.masker.fc2.weight.normal_(0.0, scale, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("name", sorted(MASKER_PRESETS))
def test_presets_round_trip_through_dicts(name: str) -> None:
    cfg = masker_config(name)
    assert AdaptiveMaskerConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.ratio == cfg.mae.mask_ratio  # compared where the MAE was trained


@pytest.mark.parametrize("name", sorted(MASKER_PRESETS))
def test_every_preset_builds_on_the_meta_device_and_rebuilds_from_its_config(name: str) -> None:
    with torch.device("meta"):
        model = AdaptiveMasker(masker_config(name))
        again = AdaptiveMasker(AdaptiveMaskerConfig.from_dict(model.config.to_dict()))
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in again.state_dict().items()}
    assert model.masker.norm.normalized_shape == (model.config.mae.encoder.embed_dim,)


def test_base_preset_is_audiomae_base_at_its_ratio() -> None:
    cfg = masker_config("masker_audiomae_base")
    assert cfg.mae == mae_config("audiomae_base")
    assert cfg.ratio == 0.8 and cfg.anneal_steps == 2000
    assert (cfg.adversary_start, cfg.adversary_end) == (1.0, 1.0)


def test_overrides_reach_the_mae_and_its_encoder() -> None:
    cfg = masker_config("masker_audiomae_tiny", mask_ratio=0.5, mae={"norm_pix_loss": False, "encoder": {"depth": 1}})
    assert cfg.ratio == 0.5 and cfg.mae.norm_pix_loss is False and cfg.mae.encoder.depth == 1
    assert cfg.mae.encoder.embed_dim == 64  # untouched encoder fields stay the preset's
    with pytest.raises(ValueError, match="unknown masker preset"):
        masker_config("masker_nope")
    with pytest.raises(ValueError, match="unknown AdaptiveMaskerConfig fields"):
        masker_config("masker_mae_tiny", tau=1.0)
    with pytest.raises(ValueError):
        masker_config("masker_mae_tiny", adversary_end=2.0)
    with pytest.raises(ValueError):
        masker_config("masker_mae_tiny", explore_fraction=1.5)


# ---------------------------------------------------------------------------------------- protocol
def test_forward_reports_the_mae_loss_under_both_masks() -> None:
    model = tiny()
    randomise_scorer(model)
    x = spec()
    model.on_step(3, 100)
    out = model(x, generator=0)
    N, K = 4 * 8, int(32 * (1 - 0.8))  # (64, 128) input, patch 16: 4×8 grid; AudioMAE keeps int(N·0.2)
    assert out.mask.mask.shape == out.random_mask.mask.shape == out.scores.shape == (2, N)
    assert out.mask.num_keep == out.random_mask.num_keep == K
    assert bool((out.mask.mask.sum(1) == N - K).all()) and bool((out.random_mask.mask.sum(1) == N - K).all())
    logs = out.logs()
    assert set(logs) == LOG_KEYS
    assert logs["keep_fraction"] == K / N == 0.1875
    # Same metric as the MAE's own loss, computed by the MAE on each mask separately.
    with torch.no_grad():
        for key, mask in (("rec_error_learned", out.mask), ("rec_error_random", out.random_mask)):
            torch.testing.assert_close(logs[key], model.mae(x, mask=mask).loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logs["rec_error_ratio"], logs["rec_error_learned"] / logs["rec_error_random"])
    assert logs["temperature"] == pytest.approx(temperature(3, start=1.0, end=0.5, anneal_steps=50))
    assert logs["adversary_weight"] == 1.0
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert not out.mask.mask.equal(out.random_mask.mask)


@pytest.mark.parametrize("name, x, keep", [
    ("masker_audiomae_tiny", torch.randn(3, 96, 128), 9 / 48),  # (B, T, F) audio: 6×8 grid, int(48·0.2) kept
    ("masker_mae_tiny", torch.randn(3, 3, 32, 32), 4 / 16),  # RGB, patch 8: 4×4 grid at MAE's 0.75
])
def test_audio_and_image_presets_run(name: str, x: torch.Tensor, keep: float) -> None:
    torch.manual_seed(0)
    out = AdaptiveMasker(masker_config(name))(x, generator=0)
    assert out.keep_fraction == keep and out.random_mask.num_keep == out.mask.num_keep
    assert torch.isfinite(out.loss)


def test_input_that_is_not_whole_patches_is_refused() -> None:
    with pytest.raises(ValueError, match="multiples of the patch"):
        tiny()(torch.randn(2, 1, 60, 128))


def test_gradients_reach_the_masker_only() -> None:
    model = tiny()
    randomise_scorer(model)
    model.on_step(0, 10)
    model(spec(), generator=0).loss.backward()
    assert [p for p in model.trainable_parameters()] == list(model.masker.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.masker.parameters())
    assert all(not p.requires_grad and p.grad is None for p in model.mae.parameters())
    assert model.no_weight_decay() == set()


def test_train_mode_keeps_the_mae_in_eval_mode() -> None:
    model = tiny()
    model.train()
    assert model.masker.training and not model.mae.training
    assert not any(m.training for m in model.mae.modules())
    model.eval()
    assert not model.masker.training


def test_untrained_masker_matches_random_masking_statistics() -> None:
    """Zero-initialised scores: the learned mask is a uniform draw, so both errors estimate the
    same expectation (here over 64 clips; they differ by sampling noise only)."""
    model = tiny()
    out = model(spec(B=64, seed=1), generator=0)
    assert float(out.scores.detach().abs().max()) == 0.0
    assert float(out.logs()["rec_error_ratio"]) == pytest.approx(1.0, abs=0.02)


def test_eval_is_the_deterministic_top_k_and_exploration_is_random() -> None:
    model = tiny(explore_fraction=0.5)
    randomise_scorer(model, scale=1000.0)  # rank 13 beats rank 14 by >= 50, far beyond the logistic noise
    x = spec()
    model.eval()
    with torch.no_grad():
        a, b = model(x, generator=1), model(x, generator=2)
        top = a.scores.topk(26, dim=1).indices
    assert a.mask.mask.equal(b.mask.mask)
    assert bool(a.mask.mask.gather(1, top).all())
    model.train()
    with torch.no_grad():
        c, d = model(x, generator=1), model(x, generator=2)
    explore = round(26 * 0.5)
    # The 13 best-scored patches are always hidden; the other 13 hidden ones are drawn at random.
    best = top[:, : 26 - explore]
    assert bool(c.mask.mask.gather(1, best).all()) and bool(d.mask.mask.gather(1, best).all())
    assert not c.mask.mask.equal(d.mask.mask)
    assert int(c.mask.mask.gather(1, top).sum()) < 2 * 26


# ---------------------------------------------------------------------------------------- schedule
def test_adversary_weight_ramp() -> None:
    kw = dict(start=-1.0, end=1.0, ramp_fraction=0.3)
    assert adversary_weight(0, 100, **kw) == -1.0
    assert adversary_weight(15, 100, **kw) == pytest.approx(0.0)  # neutral half-way up the ramp
    assert adversary_weight(30, 100, **kw) == 1.0 == adversary_weight(99, 100, **kw)
    assert adversary_weight(None, 100, **kw) == 1.0
    assert adversary_weight(0, 100, start=1.0, end=1.0, ramp_fraction=0.0) == 1.0


def test_on_step_drives_temperature_and_sign() -> None:
    model = tiny(adversary_start=-1.0, adversary_end=1.0, ramp_fraction=0.5)
    x = spec()
    seen = []
    for step in (0, 25, 50, 60):
        model.on_step(step, 100)
        out = model(x, generator=0)
        seen.append((out.temperature, out.adversary_weight))
    assert [a for _, a in seen] == pytest.approx([-1.0, 0.0, 1.0, 1.0])
    assert [t for t, _ in seen] == pytest.approx([temperature(s, anneal_steps=50) for s in (0, 25, 50, 60)])
    with pytest.raises(ValueError):
        model.on_step(0, 0)


# ---------------------------------------------------------------------------------------- frozen MAE
def test_mae_is_bit_identical_after_optimizer_steps() -> None:
    model = tiny()
    before = copy.deepcopy(model.mae.state_dict())
    masker_before = copy.deepcopy(model.masker.state_dict())
    # Even an optimizer handed every parameter, with weight decay, must not move the MAE.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    g = torch.Generator().manual_seed(0)
    for step in range(3):
        model.on_step(step, 3)
        opt.zero_grad()
        model(spec(seed=step), generator=g).loss.backward()
        opt.step()
    after = model.mae.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(masker_before[k], v) for k, v in model.masker.state_dict().items())


def _mae_payload(**overrides) -> Dict:
    torch.manual_seed(1)
    return native_payload(audiomae_tiny(**overrides), family="mae")


def test_load_pretrained_copies_the_weights_and_keeps_them_frozen() -> None:
    model = tiny()
    # Fields that do not change a frozen MAE: its ratio, drop-path, the grid of a sin-cos table.
    ckpt = _mae_payload(mask_ratio=0.5, encoder={"drop_path": 0.1, "pos_grid": (32, 8)})
    model.load_pretrained(ckpt)
    assert all(torch.equal(v, ckpt["model"][k]) for k, v in model.mae.state_dict().items())
    assert all(not p.requires_grad for p in model.mae.parameters()) and not model.mae.training


def test_load_pretrained_refuses_what_does_not_fit() -> None:
    model = tiny()
    with pytest.raises(CheckpointError, match="family 'eat'"):
        model.load_pretrained({**_mae_payload(), "family": "eat"})
    with pytest.raises(CheckpointError, match=r"encoder\.depth: checkpoint 1 vs 2"):
        model.load_pretrained(_mae_payload(encoder={"depth": 1}))
    with pytest.raises(CheckpointError, match="^mae.pt: .*norm_pix_loss: checkpoint False vs True"):
        model.load_pretrained(_mae_payload(norm_pix_loss=False), path="mae.pt")
    broken = _mae_payload()
    broken["model"] = {k: v for k, v in broken["model"].items() if k != "decoder_pred.bias"}
    with pytest.raises(CheckpointError, match="decoder_pred.bias"):
        model.load_pretrained(broken)


def test_a_masker_checkpoint_rebuilds_the_same_masker() -> None:
    model = tiny()
    randomise_scorer(model)
    payload = native_payload(model, family="masker")
    rebuilt = AdaptiveMasker(AdaptiveMaskerConfig.from_dict(payload["config"]))
    rebuilt.load_state_dict(payload["model"])
    model.eval()
    rebuilt.eval()
    x = spec()
    with torch.no_grad():
        assert model(x, generator=0).mask.mask.equal(rebuilt(x, generator=0).mask.mask)


# ---------------------------------------------------------------------------------------- learning
@pytest.fixture(scope="module")
def speech_and_mae(speech_fbank_batch):
    """Real speech and a tiny AudioMAE trained on it for 30 steps, as a native checkpoint.

    Raw-pixel targets (``norm_pix_loss`` off): with per-patch standardisation every patch of a
    briefly trained MAE is about equally hard (measured best-possible adversarial mask: only 3 %
    above random), too little to test on; on raw log-mel the best choice is 12 % above random."""
    x = speech_fbank_batch(64, (0, 96))
    torch.manual_seed(0)
    mae = audiomae_tiny(norm_pix_loss=False)
    opt = torch.optim.Adam(mae.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        opt.zero_grad()
        mae(x, generator=g).loss.backward()
        opt.step()
    return x, native_payload(mae, family="mae")


def _train_masker(x: torch.Tensor, ckpt: Dict, steps: int, **overrides) -> AdaptiveMasker:
    model = tiny(mae={"norm_pix_loss": False}, **overrides)
    model.load_pretrained(ckpt)
    opt = torch.optim.Adam(model.trainable_parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for step in range(steps):
        model.on_step(step, steps)
        out = model(x, generator=g)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    return model


def _ratio(model: AdaptiveMasker, x: torch.Tensor) -> float:
    """Learned (deterministic, eval) error over the mean error of 8 random masks at the same ratio."""
    model.eval()
    with torch.no_grad():
        outs = [model(x, generator=100 + i) for i in range(8)]
    random_error = torch.stack([o.rec_error_random for o in outs]).mean()
    return float(outs[0].rec_error_learned / random_error)


def test_adversary_hides_what_the_mae_cannot_fill_in_and_partner_the_opposite(speech_and_mae) -> None:
    x, ckpt = speech_and_mae
    adversary = _ratio(_train_masker(x, ckpt, 40), x)
    partner = _ratio(_train_masker(x, ckpt, 40, adversary_start=-1.0, adversary_end=-1.0), x)
    # Measured 1.093 (adversary) and 0.861 (partner); an untrained masker 0.996; the best possible
    # masks (each clip's patches ranked by their error over 200 random masks) 1.12 and 0.84.
    assert adversary > 1.05, adversary
    assert partner < 0.9, partner
