"""audiossl/models/eat.py against hand computations: EMA formula and schedule, teacher targets,
decoder blocks, the utterance-frame loss and its weighting, closed-form parameter counts and a
short training run on real speech."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from audiossl.masking.base import MaskInfo
from audiossl.models.eat import (
    EAT,
    EAT_PRESETS,
    Decoder2d,
    EATConfig,
    eat_base,
    eat_config,
    eat_large,
    eat_tiny,
    ema_decay,
    run_scaled_ema,
)
from audiossl.models.encoder import family_config


def spec(B: int = 2, T: int = 128, seed: int = 0) -> torch.Tensor:
    return torch.randn(B, 1, T, 128, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def build(**kw) -> EAT:
    torch.manual_seed(0)
    return eat_tiny(**kw).double()


# ---------------------------------------------------------------------------------------- EMA
def test_ema_schedule_values() -> None:
    assert ema_decay(0) == pytest.approx(0.9998, abs=1e-15)
    assert ema_decay(50_000) == pytest.approx(0.9998 + 0.5 * (0.99999 - 0.9998), abs=1e-15)
    assert ema_decay(50_000) == pytest.approx(0.999895, abs=1e-12)
    assert ema_decay(100_000) == 0.99999
    assert ema_decay(200_000) == 0.99999
    assert ema_decay(150_000, anneal_end_step=150_000) == 0.99999
    model = build(ema_decay=0.5, ema_end_decay=0.9, ema_anneal_end_step=10)
    assert model.ema_decay(5) == pytest.approx(0.7)
    with pytest.raises(ValueError):
        ema_decay(-1)


def test_run_scaled_ema_keeps_the_schedule_per_fraction_of_the_run() -> None:
    # At the reference length (or with no length) the schedule is the one written.
    assert run_scaled_ema(0.9998, 0.99999, 100_000, 400_000, 400_000) == (0.9998, 0.99999, 100_000)
    assert run_scaled_ema(0.9998, 0.99999, 100_000, 400_000, None) == (0.9998, 0.99999, 100_000)
    assert run_scaled_ema(0.9998, 0.99999, 100_000, None, 2_000) == (0.9998, 0.99999, 100_000)
    start, end, anneal = run_scaled_ema(0.9998, 0.99999, 100_000, 400_000, 2_000)
    assert anneal == 500
    assert start == pytest.approx(0.9998**200) and start == pytest.approx(0.961, abs=1e-3)
    assert end == pytest.approx(0.998, abs=1e-3)
    # What the teacher keeps of itself over the whole run is the reference run's.
    assert end**2_000 == pytest.approx(0.99999**400_000, rel=1e-9)
    # A 1 200-update run with the written numbers moves its teacher only ~21 % of the way; shaped, ~all.
    assert 1 - 0.9998**1_200 == pytest.approx(0.213, abs=1e-3)
    with pytest.raises(ValueError):
        run_scaled_ema(0.9, 0.99, 10, 400_000, 0)


def test_eat_teacher_update_follows_the_run_length() -> None:
    assert build().config.ema_reference_steps is None  # upstream's absolute schedule by default
    assert build().ema_decay(500, 2_000) == pytest.approx(ema_decay(500))
    model = build(ema_reference_steps=400_000)
    assert model.ema_decay(0) == pytest.approx(0.9998)  # no run length: as written
    assert model.ema_decay(0, 400_000) == pytest.approx(0.9998)
    assert model.ema_decay(0, 2_000) == pytest.approx(0.9998**200)
    assert model.ema_decay(500, 2_000) == pytest.approx(0.99999**200)
    assert model.update_teacher(1_000, 2_000) == pytest.approx(0.99999**200)
    with pytest.raises(ValueError, match="ema_reference_steps"):
        build(ema_reference_steps=0)


def test_update_teacher_is_the_ema_formula() -> None:
    model = build(ema_decay=0.9, ema_end_decay=0.99, ema_anneal_end_step=10)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()), dtype=p.dtype))
    model.encoder.patch_embed.proj.bias.requires_grad_(False)  # frozen: copied, not averaged
    before = {n: p.clone() for n, p in model.teacher.named_parameters()}
    student = dict(model.encoder.named_parameters())
    tau = model.update_teacher(5)
    assert tau == pytest.approx(0.945)
    for name, p_t in model.teacher.named_parameters():
        if name == "patch_embed.proj.bias":
            want = student[name]
        else:
            want = 0.945 * before[name] + 0.055 * student[name]
        torch.testing.assert_close(p_t, want, rtol=1e-12, atol=1e-12, msg=name)
    assert not torch.equal(model.teacher.blocks[0].mlp.fc1.weight, student["blocks.0.mlp.fc1.weight"])


def test_teacher_starts_as_student_copy_and_gets_no_grad() -> None:
    model = build()
    for (n_s, p_s), (n_t, p_t) in zip(model.encoder.named_parameters(), model.teacher.named_parameters()):
        assert n_s == n_t and torch.equal(p_s, p_t) and p_s.data_ptr() != p_t.data_ptr()
        assert not p_t.requires_grad
    model.train()
    assert model.encoder.training and not model.teacher.training
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    snapshot = [p.clone() for p in model.teacher.parameters()]
    out = model(spec(), generator=0)
    out.loss.backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert not out.targets.requires_grad
    assert model.encoder.cls_token.grad is not None and model.decoder.proj.weight.grad is not None
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(snapshot, model.teacher.parameters()))


# ---------------------------------------------------------------------------------------- targets
def test_batch_target_norm_keeps_what_tells_clips_apart() -> None:
    """Instance norm (upstream) removes each clip's per-channel mean, so the utterance target
    (the tokens' mean) is near one vector for every clip; "batch" keeps the clip means."""
    x = spec(B=4, seed=5)
    inst, batch = build(), build(target_norm="batch")
    batch.teacher.load_state_dict(inst.teacher.state_dict())
    ffn = inst.teacher(x, return_ffn=True).ffn
    layers = [f[:, 1:] for f in ffn[-2:]]
    y = sum((f - f.mean((0, 1), keepdim=True)) / torch.sqrt(f.var((0, 1), unbiased=False, keepdim=True) + 1e-5)
            for f in layers) / 2
    want = F.layer_norm(y, y.shape[-1:], eps=1e-5)
    torch.testing.assert_close(batch.make_targets(x), want, rtol=1e-9, atol=1e-9)
    spread = {name: float(m.make_targets(x).mean(1).std(0).mean()) for name, m in (("instance", inst), ("batch", batch))}
    assert spread["batch"] > 3 * spread["instance"], spread
    with pytest.raises(ValueError, match="target_norm"):
        build(target_norm="layer")


def test_targets_by_hand() -> None:
    model = build(average_top_k_layers=1)
    # Make teacher differ from the student so the test sees which one runs.
    model.update_teacher(0)
    with torch.no_grad():
        for p in model.teacher.parameters():
            p.mul_(1.1)
    x = spec(seed=4)
    ffn = model.teacher(x, return_ffn=True).ffn
    for k in (1, 2):
        model.config.average_top_k_layers = k
        layers = [f[:, 1:] for f in ffn[-k:]]
        normed = []
        for f in layers:  # instance norm over tokens, biased variance, eps 1e-5
            mean = f.mean(1, keepdim=True)
            var = ((f - mean) ** 2).mean(1, keepdim=True)
            normed.append((f - mean) / torch.sqrt(var + 1e-5))
        y = sum(normed) / k
        mean = y.mean(-1, keepdim=True)
        var = ((y - mean) ** 2).mean(-1, keepdim=True)
        want = (y - mean) / torch.sqrt(var + 1e-5)
        got = model.make_targets(x)
        assert got.shape == (2, 64, 64)
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    # Targets are of the full clip (no mask) and of the teacher, not the student.
    assert not torch.allclose(model.make_targets(x), _targets_of(model.encoder, x))


def _targets_of(encoder, x):
    f = encoder(x, return_ffn=True).ffn[-1][:, 1:]
    y = F.instance_norm(f.transpose(1, 2), eps=1e-5).transpose(1, 2)
    return F.layer_norm(y, y.shape[-1:], eps=1e-5)


# ---------------------------------------------------------------------------------------- decoder
def test_decoder_block_by_hand() -> None:
    torch.manual_seed(0)
    dec = Decoder2d(32, dim=32, depth=2, kernel=3, groups=4).double()
    x = torch.randn(3, 4 * 8, 32, dtype=torch.float64)
    h = x.reshape(3, 4, 8, 32)  # time-major tokens -> (B, H, W, C)
    for conv in dec.blocks:
        c = F.conv2d(h.permute(0, 3, 1, 2), conv.weight, conv.bias, padding=1, groups=4).permute(0, 2, 3, 1)
        mean = c.mean(-1, keepdim=True)
        var = ((c - mean) ** 2).mean(-1, keepdim=True)
        c = (c - mean) / torch.sqrt(var + 1e-5)
        h = h + 0.5 * c * (1 + torch.erf(c / math.sqrt(2)))
    want = h.reshape(3, 32, 32) @ dec.proj.weight.T + dec.proj.bias
    torch.testing.assert_close(dec(x, (4, 8)), want)
    assert dec.blocks[0].weight.shape == (32, 8, 3, 3)


def test_decoder_shapes_and_params() -> None:
    dec = Decoder2d(48, dim=32, depth=3, kernel=5, groups=16)
    assert dec(torch.randn(2, 6 * 8, 48), (6, 8)).shape == (2, 48, 48)
    even = Decoder2d(32, dim=32, depth=2, kernel=4, groups=16)  # SamePad2d crop
    assert even(torch.randn(2, 5 * 8, 32), (5, 8)).shape == (2, 40, 32)
    with pytest.raises(ValueError, match="grid"):
        dec(torch.randn(2, 40, 48), (6, 8))
    model = build()
    out = model(spec(T=256), generator=0)
    assert out.pred.shape == (2 * 4, 16 * 8, 64) and out.grid == (16, 8)
    assert out.mask.batch_size == 8 and out.mask.num_keep == int(128 * (1 - 0.8))


def test_decoder_input_is_student_tokens_plus_small_noise() -> None:
    model = build(decoder_noise_std=0.01)
    seen = {}
    model.decoder.register_forward_pre_hook(lambda mod, args: seen.update(x=args[0]))
    x = spec(T=256, seed=1)
    out = model(x, generator=3)
    _, tokens = model.forward_encoder(x, out.mask)
    dec_in = seen["x"]
    torch.testing.assert_close(out.mask.gather_visible(dec_in), tokens)
    noise = out.mask.gather_masked(dec_in)
    assert noise.std().item() == pytest.approx(0.01, rel=0.05)
    assert noise.mean().abs().item() < 1e-3


# ---------------------------------------------------------------------------------------- loss
@pytest.mark.parametrize("faithful", [True, False])
def test_loss_by_hand(faithful: bool) -> None:
    model = build(faithful_utterance_weight=faithful, cls_loss=0.5)
    B, k, D = 2, 4, 64
    out = model(spec(seed=7), generator=11)
    y16 = out.targets.repeat_interleave(k, dim=0)
    frame_terms, utter_terms = [], []
    for r in range(B * k):
        for n in range(out.mask.num_tokens):
            if out.mask.mask[r, n]:
                frame_terms.append(((out.pred[r, n] - y16[r, n]) ** 2).sum() / math.sqrt(D))
        utter_terms.append(((out.cls[r] - y16[r].mean(0)) ** 2).sum() / math.sqrt(D))
    frame = torch.stack(frame_terms).mean()
    utter = torch.stack(utter_terms).mean()
    assert len(frame_terms) == B * k * out.mask.num_masked
    torch.testing.assert_close(out.frame_loss, frame)
    torch.testing.assert_close(out.utterance_loss, utter)
    weight = 0.5 * (B * k if faithful else 1)
    assert out.utterance_weight == weight
    torch.testing.assert_close(out.loss, frame + weight * utter)
    # The cls output is the student's prefix row on the visible tokens.
    cls, _ = model.forward_encoder(spec(seed=7), out.mask)
    torch.testing.assert_close(out.cls, cls)


def test_explicit_mask_is_used_and_clone_rows_follow_their_clip() -> None:
    model = build()
    x = spec(seed=2)
    hidden = torch.zeros(8, 64, dtype=torch.bool)
    hidden[:, :48] = True  # keep the last 16 tokens in every clone
    mask = MaskInfo.from_mask(hidden)
    out = model(x, mask=mask, generator=0)
    assert out.mask is mask
    # Swapping the clips swaps the clone groups of every output.
    swapped = model(x.flip(0), mask=mask, generator=0)
    torch.testing.assert_close(swapped.cls, out.cls.reshape(2, 4, -1).flip(0).reshape(8, -1))
    with pytest.raises(ValueError, match="multiple"):
        model(spec(B=3), mask=mask, generator=0)
    with pytest.raises(ValueError, match="multiples of the patch"):
        model(spec(T=120), generator=0)


# ---------------------------------------------------------------------------------------- randomness
def test_same_seed_same_loss() -> None:
    model = build()
    x = spec(seed=5)
    a, b, c = model(x, generator=42), model(x, generator=torch.Generator().manual_seed(42)), model(x, generator=43)
    assert torch.equal(a.mask.mask, b.mask.mask) and a.loss.item() == b.loss.item()
    assert a.loss.item() != c.loss.item()
    state = torch.get_rng_state()
    model(x, generator=1)
    assert torch.equal(state, torch.get_rng_state())  # no global RNG draw


# ---------------------------------------------------------------------------------------- sizes
def _post_ln_block(d: int, mlp: int = 4) -> int:
    return 4 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * mlp * d + mlp * d) + (mlp * d * d + d)


def _closed_form(D: int, depth: int, Dd: int, dec_depth: int, kernel: int, groups: int = 16):
    encoder = (D * 16 * 16 + D) + D + 2 * D + depth * _post_ln_block(D)  # conv, cls, input LN, blocks
    decoder = (Dd * (D // groups) * kernel**2 + Dd) + (dec_depth - 1) * (Dd * (Dd // groups) * kernel**2 + Dd)
    decoder += Dd * D + D
    return encoder, decoder


@pytest.mark.parametrize("preset, sizes", [(eat_base, (768, 12, 768, 6, 3)), (eat_large, (1024, 24, 1024, 3, 5))])
def test_parameter_counts_closed_form(preset, sizes) -> None:
    encoder, decoder = _closed_form(*sizes)
    with torch.device("meta"):
        model = preset()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model.encoder) == count(model.teacher) == encoder
    assert count(model.decoder) == decoder
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == encoder + decoder
    if preset is eat_base:
        # ViT-B/16 post-LN encoder 85.25M + decoder 2.59M = 87.84M trainable. The paper's "93M
        # params pretraining" is fairseq's count, which includes the fixed sin-cos table stored as
        # an nn.Parameter: 6144 rows x 768 = 4.72M, and 87.84M + 4.72M = 92.56M.
        assert (encoder, decoder) == (85_254_144, 2_585_856)
        assert round((encoder + decoder + 6144 * 768) / 1e6) == 93


def test_preset_fields() -> None:
    expect = {
        "eat_base": (768, 12, 12, 768, 6, 3, 16, 16, 0.8, 0.07, 12, 100_000),
        "eat_large": (1024, 24, 16, 1024, 3, 5, 16, 16, 0.75, 0.10, 24, 150_000),
    }
    for name, want in expect.items():
        c = eat_config(name)
        e = c.encoder
        got = (e.embed_dim, e.depth, e.num_heads, c.decoder_dim, c.decoder_depth, c.decoder_kernel, c.decoder_groups,
               c.clone_batch, c.mask_prob, c.mask_prob_adjust, c.top_k, c.ema_anneal_end_step)
        assert got == want, name
        assert e.post_norm and e.input_norm and not e.final_norm and e.norm_eps == 1e-6 and e.prefix_init == 1.0
        assert (c.ema_decay, c.ema_end_decay, c.cls_loss, c.decoder_noise_std) == (0.9998, 0.99999, 1.0, 0.01)
        assert c.faithful_utterance_weight
    assert eat_config("eat_base").masker().num_keep((64, 8)) == 102
    assert eat_config("eat_large").masker().num_keep((64, 8)) == 128
    assert set(EAT_PRESETS) == {"eat_base", "eat_large", "eat_tiny"}


def test_config_round_trip_and_validation() -> None:
    cfg = eat_config("eat_tiny", decoder_depth=3, encoder={"depth": 3})
    assert cfg.decoder_depth == 3 and cfg.encoder.depth == 3
    assert EATConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown EATConfig"):
        EATConfig.from_dict({"decoder_width": 3})
    with pytest.raises(ValueError, match="decoder_groups"):
        eat_config("eat_tiny", decoder_dim=40)
    with pytest.raises(ValueError, match="average_top_k_layers"):
        eat_config("eat_tiny", average_top_k_layers=3)
    with pytest.raises(ValueError, match="cls token"):
        EATConfig(family_config("eat", num_prefix_tokens=0))
    with pytest.raises(ValueError, match="unknown EAT preset"):
        eat_config("eat_huge")


# ---------------------------------------------------------------------------------------- training
def test_tiny_eat_learns_on_speech(speech_fbank_batch) -> None:
    batch = speech_fbank_batch(128, (0, 80))
    assert batch.shape == (4, 1, 128, 128)

    torch.manual_seed(0)
    model = eat_tiny()
    eval_mask = model.masker(4, (8, 8), generator=1000)

    def held_out_loss() -> float:
        model.eval()
        with torch.no_grad():
            out = model(batch, mask=eval_mask, generator=1001)
            return out.loss.item(), out.frame_loss.item()

    before = held_out_loss()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for step in range(30):
        opt.zero_grad()
        model(batch, generator=gen).loss.backward()
        opt.step()
        model.update_teacher(step)
    after = held_out_loss()
    # Measured: loss 137.1 -> 90.6, frame loss 10.5 -> 6.37 (the teacher barely moves at τ=0.9998).
    assert after[0] < 0.8 * before[0] and after[1] < 0.8 * before[1], (before, after)
