"""audiossl/masking/learned.py: Gumbel-sigmoid straight-through top-k masker and its losses."""

from __future__ import annotations

import math

import pytest
import torch

from audiossl.masking.learned import (
    GumbelSigmoid,
    LearnedMask,
    LearnedMasker,
    composite_mse,
    gumbel_sigmoid,
    logistic_noise,
    masker_regularizer,
    mean_score_penalty,
    score_entropy,
    straight_through_topk,
    temperature,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_temperature_schedule_values():
    assert temperature(0) == 1.0
    assert temperature(1000) == pytest.approx(0.75, abs=1e-12)  # half-way down the half cosine
    assert temperature(500) == pytest.approx(0.5 + 0.25 * (1 + math.cos(math.pi / 4)))
    assert temperature(2000) == 0.5
    assert temperature(5000) == 0.5
    assert temperature(None) == 0.5
    values = [temperature(s) for s in range(0, 2001, 50)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert GumbelSigmoid(2.0, 0.1, 100).temperature(50) == pytest.approx(1.05)


def test_logistic_noise_statistics_and_seed():
    x = logistic_noise((200_000,), generator=gen(0), device=torch.device("cpu"))
    assert torch.equal(x, logistic_noise((200_000,), generator=gen(0), device=torch.device("cpu")))
    assert float(x.mean()) == pytest.approx(0.0, abs=0.02)
    assert float(x.var()) == pytest.approx(math.pi**2 / 3, rel=0.03)  # Logistic(0, 1) variance
    assert torch.isfinite(x).all()


def test_gumbel_sigmoid_is_the_binary_concrete_probability():
    logits = torch.tensor([[-2.0, 0.0, 3.0]])
    _, soft = gumbel_sigmoid(logits, 0.5, noise=False)
    torch.testing.assert_close(soft, torch.sigmoid(logits / 0.5))
    # With noise, P(soft > 1/2) = P(logit + L > 0) = sigmoid(logit) for Logistic L.
    many = logits.expand(40_000, 3)
    _, soft = gumbel_sigmoid(many, 0.7, generator=gen(1))
    frac = (soft > 0.5).float().mean(0)
    torch.testing.assert_close(frac, torch.sigmoid(logits[0]), atol=0.01, rtol=0)


def test_straight_through_topk_forward_is_exact_and_backward_is_soft():
    logits = torch.tensor([[0.3, -1.0, 2.0, 0.1], [1.0, 2.0, 3.0, 4.0]], requires_grad=True)
    soft = torch.sigmoid(logits / 0.5)
    hard, st = straight_through_topk(logits, soft, 2)
    assert hard.tolist() == [[True, False, True, False], [False, False, True, True]]
    assert torch.equal(st, hard.float())  # exact 0/1, not 0.99999994
    weights = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    (st * weights).sum().backward()
    expected = weights * soft.detach() * (1 - soft.detach()) / 0.5
    torch.testing.assert_close(logits.grad, expected)
    with pytest.raises(ValueError):
        straight_through_topk(logits, soft, 5)


@pytest.mark.parametrize("N,grid", [(512, (64, 8)), (512, (8, 64)), (196, (14, 14)), (512, (1, 512)), (64, None)])
@pytest.mark.parametrize("B", [1, 5])
def test_exactly_k_kept_per_row(N, grid, B):
    masker = LearnedMasker(16, mask_ratio=0.75, hidden_dim=8)
    with torch.no_grad():
        masker.fc2.weight.normal_()  # non-trivial scores
    out = masker(torch.randn(B, N, 16, generator=gen(0)), grid, step=10, generator=gen(1))
    assert isinstance(out, LearnedMask)
    K = int(N * 0.25)
    assert out.info.ids_keep.shape == (B, K) and out.info.ids_masked.shape == (B, N - K)
    assert bool((out.info.mask.sum(1) == N - K).all())
    assert torch.equal(out.mask, out.info.mask.float())
    assert out.soft.shape == out.scores.shape == (B, N)
    assert out.temperature == pytest.approx(temperature(10))
    assert masker.num_keep(7) == 1  # MAE's int(N * (1 - r)), not round()


def test_straight_through_gradient_reaches_every_scorer_parameter():
    torch.manual_seed(0)  # parameter init only; every draw in the masker takes a generator
    masker = LearnedMasker(8, hidden_dim=8)
    x = torch.randn(3, 32, 8, generator=gen(0))
    out = masker(x, (8, 4), step=0, generator=gen(1))
    (out.mask * torch.arange(32.0)).sum().backward()
    # The output layer starts at zero, so the gradient first reaches it ...
    assert masker.fc2.weight.grad.abs().sum() > 0 and masker.fc2.bias.grad is not None
    masker.zero_grad()
    with torch.no_grad():
        masker.fc2.weight.normal_()
    out = masker(x, (8, 4), step=0, generator=gen(1))
    (out.mask * torch.arange(32.0)).sum().backward()
    # ... and, once it is non-zero, every parameter of the scorer.
    for name, p in masker.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_untrained_masker_is_random_masking_and_eval_is_deterministic():
    masker = LearnedMasker(4, hidden_dim=4)
    x = torch.randn(2, 40, 4, generator=gen(0))
    a = masker(x, step=0, generator=gen(1))
    b = masker(x, step=0, generator=gen(1))
    c = masker(x, step=0, generator=gen(2))
    assert torch.equal(a.info.mask, b.info.mask) and not torch.equal(a.info.mask, c.info.mask)
    assert torch.equal(a.scores, torch.zeros(2, 40))  # zero-initialised output layer
    masker.eval()
    with torch.no_grad():
        masker.fc2.weight.normal_(generator=gen(3))
        masker.fc2.bias.zero_()
    d = masker(x, generator=gen(4))
    e = masker(x, generator=gen(5))
    assert torch.equal(d.info.mask, e.info.mask)
    top = d.scores.topk(30, dim=1).indices
    assert bool(d.info.mask.gather(1, top).all())
    torch.testing.assert_close(d.soft, torch.sigmoid(d.scores / 0.5))


def test_grid_mismatch_and_bad_arguments():
    masker = LearnedMasker(4)
    with pytest.raises(ValueError, match="cells"):
        masker.score(torch.randn(1, 10, 4), (3, 3))
    with pytest.raises(ValueError):
        LearnedMasker(4, mask_ratio=1.0)
    with pytest.raises(ValueError):
        LearnedMasker(4, kernel_size=2)
    with pytest.raises(ValueError):
        gumbel_sigmoid(torch.zeros(1, 2), 0.0)


def test_the_conv_makes_scores_depend_on_neighbours():
    masker = LearnedMasker(2, hidden_dim=4, kernel_size=3)
    mlp = LearnedMasker(2, hidden_dim=4, kernel_size=1)
    for m in (masker, mlp):
        with torch.no_grad():
            m.fc2.weight.normal_(generator=gen(0))
    x = torch.randn(1, 16, 2, generator=gen(1))
    y = x.clone()
    y[0, 5] = torch.tensor([4.0, -4.0])  # change one token; its grid neighbours are 1, 4, 6, 9
    for m, changes in ((masker, {1, 4, 5, 6, 9, 0, 2, 8, 10}), (mlp, {5})):
        diff = (m.score(x, (4, 4)) - m.score(y, (4, 4))).abs()[0]
        changed = {i for i in range(16) if diff[i] > 1e-7}
        assert changed == changes


# ----------------------------------------------------------------------------- loss terms


def test_mean_penalty_and_entropy_against_hand_computation():
    s = torch.tensor([[0.0, 2.0, -1.0, 3.0], [1.0, 1.0, 1.0, 1.0]])
    # Row means 1.0 and 1.0 -> mean of squares 1.0.
    assert float(mean_score_penalty(s)) == pytest.approx(1.0)
    assert float(mean_score_penalty(torch.tensor([[1.0, 3.0], [-2.0, 0.0]]))) == pytest.approx((4 + 1) / 2)

    def h(p):
        return -p * math.log(p) - (1 - p) * math.log(1 - p)

    expected = sum(h(1 / (1 + math.exp(-v))) for v in s.flatten().tolist()) / 8
    assert float(score_entropy(s)) == pytest.approx(expected, rel=1e-6)
    assert float(score_entropy(torch.zeros(3))) == pytest.approx(math.log(2))
    assert float(score_entropy(torch.tensor([60.0, -60.0]))) == pytest.approx(0.0, abs=1e-20)
    reg = masker_regularizer(s, lambda_mean=0.5, lambda_ent=2.0)
    assert float(reg) == pytest.approx(0.5 * 1.0 + 2.0 * expected, rel=1e-6)


def test_composite_mse_values():
    pred = torch.tensor([[[1.0, 1.0], [0.0, 2.0], [3.0, 3.0], [0.0, 0.0]]])
    target = torch.zeros(1, 4, 2)
    # Per-token errors: 1, 2, 9, 0.
    mask = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    assert float(composite_mse(pred, target, mask, visible_weight=0.0)) == pytest.approx((1 + 9) / 2)  # MAE loss
    assert float(composite_mse(pred, target, mask, visible_weight=1.0)) == pytest.approx(12 / 4)  # plain MSE
    assert float(composite_mse(pred, target, mask, visible_weight=0.5)) == pytest.approx((1 + 9 + 0.5 * 2) / 3)
    with pytest.raises(ValueError):
        composite_mse(pred, target, mask[:, :3])


def test_composite_mse_gradient_is_proportional_to_token_error():
    err = torch.tensor([1.0, 2.0, 9.0, 0.0])
    pred = err.sqrt().view(1, 4, 1)
    mask = torch.tensor([[1.0, 0.0, 1.0, 0.0]], requires_grad=True)
    composite_mse(pred, torch.zeros(1, 4, 1), mask, visible_weight=0.2).backward()
    total_weight = 2 + 0.2 * 2
    torch.testing.assert_close(mask.grad, (0.8 * err / total_weight).view(1, 4))


def test_optimising_a_toy_objective_moves_scores_toward_hard_tokens():
    """An adversarial masker (maximising the reconstruction error of a fixed 'MAE') learns to
    score the tokens that reconstruct badly above those that reconstruct well."""
    torch.manual_seed(0)  # parameter init only
    B, N, D = 8, 64, 6
    x = torch.randn(B, N, D, generator=gen(0))
    hard = x[..., 0] > 0.5  # content decides difficulty
    target = torch.zeros(B, N, 4)
    pred = hard.float()[..., None].expand(B, N, 4) * 2.0  # error 4 on hard tokens, 0 elsewhere
    masker = LearnedMasker(D, mask_ratio=0.75, hidden_dim=16, kernel_size=1)
    opt = torch.optim.Adam(masker.parameters(), lr=3e-2)
    g = gen(1)

    def hard_share(out: LearnedMask) -> float:
        return float((out.info.mask & hard).sum() / hard.sum())

    masker.eval()
    with torch.no_grad():
        before = masker(x)
    masker.train()
    for step in range(30):
        out = masker(x, step=step, generator=g)
        loss = -composite_mse(pred, target, out.mask) + masker_regularizer(out.scores, lambda_mean=0.1, lambda_ent=0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    masker.eval()
    with torch.no_grad():
        after = masker(x)
    gap = float(after.scores[hard].mean() - after.scores[~hard].mean())
    assert float(before.scores.abs().max()) == 0.0
    assert gap > 1.0
    assert hard_share(after) == 1.0 > hard_share(before)
    assert abs(float(after.scores.mean())) < 1.0  # the mean penalty keeps the logits centred
