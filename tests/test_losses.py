import itertools
import math

import pytest
import torch

from masksep.losses import (
    align,
    best_permutation,
    canonical_grouping,
    group_sum,
    most_common_grouping,
    og_assign,
    pairwise_si_snr,
    pit_si_snr,
    separation_loss,
    si_snr,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _brute_force_grouping(
    est: torch.Tensor, ref: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best assignment by building every grouped waveform: (B, P) assignment and (B,) mean SI-SNR."""
    B, P, _ = est.shape
    C = ref.shape[1]
    best_assign = torch.zeros(B, P, dtype=torch.long)
    best_value = torch.full((B,), -math.inf, dtype=torch.float64)
    for combo in itertools.product(range(C), repeat=P):
        assign = torch.tensor(combo).expand(B, P)
        grouped = torch.stack(
            [est[:, [p for p in range(P) if combo[p] == c]].sum(dim=1) for c in range(C)], dim=1
        )
        value = si_snr(grouped.double(), ref.double()).mean(dim=1)
        better = value > best_value
        best_value = torch.where(better, value, best_value)
        best_assign[better] = assign[better]
    return best_assign, best_value


def test_si_snr_matches_formula_for_known_snr():
    g = _gen(0)
    T = 16000
    ref = torch.randn(3, T, generator=g)
    ref = ref - ref.mean(dim=-1, keepdim=True)
    noise = torch.randn(3, T, generator=g)
    noise = noise - noise.mean(dim=-1, keepdim=True)
    # Make the noise exactly orthogonal to the reference, then scale it to a chosen SNR.
    noise = noise - (noise * ref).sum(-1, keepdim=True) / (ref * ref).sum(-1, keepdim=True) * ref
    snr_db = torch.tensor([-5.0, 3.0, 20.0])
    scale = torch.sqrt((ref * ref).sum(-1) / (noise * noise).sum(-1) / 10 ** (snr_db / 10))
    est = ref + scale.unsqueeze(-1) * noise
    torch.testing.assert_close(si_snr(est, ref), snr_db, atol=1e-3, rtol=0)


def test_si_snr_scale_sign_and_dc_invariant():
    g = _gen(1)
    ref = torch.randn(2, 4000, generator=g)
    est = ref + 0.5 * torch.randn(2, 4000, generator=g)
    base = si_snr(est, ref)
    for gain in (0.01, 3.0, 250.0, -1.0, -7.5):
        torch.testing.assert_close(si_snr(gain * est, ref), base, atol=1e-3, rtol=0)
    # Gain of the reference and DC offsets on either side change nothing either.
    torch.testing.assert_close(si_snr(est + 4.0, 0.2 * ref - 1.5), base, atol=1e-3, rtol=0)
    # But it is not invariant to everything: a worse estimate scores lower.
    assert (si_snr(est + torch.randn(2, 4000, generator=g), ref) < base - 1).all()


def test_si_snr_silent_estimate_is_low_and_finite_with_gradient():
    ref = torch.randn(2, 1000, generator=_gen(2))
    est = torch.zeros(2, 1000, requires_grad=True)
    value = si_snr(est, ref)
    assert torch.isfinite(value).all() and (value < -60).all()
    value.sum().backward()
    assert torch.isfinite(est.grad).all()


def test_pairwise_si_snr_entries():
    g = _gen(3)
    est, ref = torch.randn(2, 3, 500, generator=g), torch.randn(2, 2, 500, generator=g)
    pw = pairwise_si_snr(est, ref)
    assert pw.shape == (2, 3, 2)
    torch.testing.assert_close(pw[1, 2, 0], si_snr(est[1, 2], ref[1, 0]))


def test_pit_invariant_to_source_order():
    g = _gen(4)
    B, C, T = 4, 3, 2000
    ref = torch.randn(B, C, T, generator=g)
    # Outputs are the references, shuffled per item, plus noise of varying level.
    shuffle = torch.stack([torch.randperm(C, generator=g) for _ in range(B)])
    est = ref.gather(1, shuffle.unsqueeze(-1).expand(-1, -1, T))
    est = est + 0.3 * torch.randn(B, C, T, generator=g)
    value, perm = pit_si_snr(est, ref)
    # perm[b, c] is the output that holds source c: the inverse of the shuffle.
    assert torch.equal(shuffle.gather(1, perm), torch.arange(C).expand(B, C))

    sigma = torch.tensor([2, 0, 1])
    value2, perm2 = pit_si_snr(est, ref[:, sigma])
    torch.testing.assert_close(value2, value)
    assert torch.equal(perm2, perm[:, sigma])
    torch.testing.assert_close(
        separation_loss(est, ref[:, sigma], oracle_grouping=False),
        separation_loss(est, ref, oracle_grouping=False),
    )
    aligned = align(est, ref, oracle_grouping=False)
    torch.testing.assert_close(si_snr(aligned, ref).mean(dim=1), value)


def test_pit_value_is_differentiable():
    g = _gen(5)
    est = torch.randn(2, 2, 800, generator=g, requires_grad=True)
    ref = torch.randn(2, 2, 800, generator=g)
    separation_loss(est, ref, oracle_grouping=False).backward()
    assert est.grad is not None and est.grad.abs().sum() > 0


def test_hungarian_agrees_with_exhaustive_for_five_sources():
    g = _gen(6)
    for _ in range(5):
        score = torch.randn(8, 5, 5, generator=g) * 10
        exhaustive = best_permutation(score, exhaustive=True)
        hungarian = best_permutation(score, exhaustive=False)
        assert torch.equal(exhaustive, hungarian)
    # And PIT on five sources (Hungarian by default) recovers a shuffle.
    ref = torch.randn(2, 5, 1000, generator=g)
    shuffle = torch.tensor([[4, 2, 0, 1, 3], [1, 0, 3, 4, 2]])
    est = ref.gather(1, shuffle.unsqueeze(-1).expand(-1, -1, 1000)) + 0.1 * torch.randn(
        2, 5, 1000, generator=g
    )
    _, perm = pit_si_snr(est, ref)
    assert torch.equal(shuffle.gather(1, perm), torch.arange(5).expand(2, 5))


def test_pit_rejects_more_outputs_than_sources():
    with pytest.raises(ValueError, match="oracle grouping"):
        separation_loss(torch.randn(1, 4, 100), torch.randn(1, 2, 100), oracle_grouping=False)


@pytest.mark.parametrize("P", [4, 8])
def test_og_assign_finds_planted_grouping(P):
    g = _gen(10 + P)
    B, C, T = 3, 2, 4000
    est = torch.randn(B, P, T, generator=g)
    planted = torch.stack(
        [torch.randperm(P, generator=g) % C for _ in range(B)]
    )  # both groups nonempty
    ref = group_sum(est, planted, C) + 0.05 * torch.randn(B, C, T, generator=g)
    assert torch.equal(og_assign(est, ref), planted)


@pytest.mark.parametrize(("P", "C"), [(3, 2), (5, 2), (4, 3)])
def test_og_assign_equals_brute_force(P, C):
    g = _gen(20 + 10 * P + C)
    B, T = 6, 600
    # Correlated outputs and references, so the best grouping is neither trivial nor a near tie.
    base = torch.randn(B, P, T, generator=g)
    est = base + 0.8 * torch.randn(B, P, T, generator=g)
    mixing = torch.rand(B, C, P, generator=g)
    ref = mixing @ base + 0.5 * torch.randn(B, C, T, generator=g)
    assign = og_assign(est, ref)
    brute_assign, brute_value = _brute_force_grouping(est, ref)
    assert torch.equal(assign, brute_assign)
    value = si_snr(group_sum(est, assign, C).double(), ref.double()).mean(dim=1)
    torch.testing.assert_close(value, brute_value)


def test_separation_loss_with_oracle_grouping_is_brute_force_best():
    g = _gen(30)
    est = torch.randn(4, 6, 500, generator=g)
    ref = torch.randn(4, 2, 500, generator=g) + est[:, :2] + est[:, 4:5]
    _, brute_value = _brute_force_grouping(est, ref)
    loss = separation_loss(est, ref, oracle_grouping=True)
    torch.testing.assert_close(loss.double(), -brute_value.mean(), atol=1e-4, rtol=0)


def test_og_handles_empty_groups():
    g = _gen(31)
    B, P, C, T = 2, 4, 3, 800
    est = torch.randn(B, P, T, generator=g)
    # Only two references are reachable; the third is silent, so its group should stay empty.
    ref = torch.stack([est[:, 0] + est[:, 1], est[:, 2] + est[:, 3], torch.zeros(B, T)], dim=1)
    assign = og_assign(est, ref)
    assert not (assign == 2).any()
    est.requires_grad_(True)
    loss = separation_loss(est, ref, oracle_grouping=True)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(est.grad).all()
    # An output that is silent (all zero) anywhere in the search gives no NaN either.
    est2 = torch.cat([torch.zeros(B, 1, T), est.detach()[:, 1:]], dim=1)
    assert ((og_assign(est2, ref) >= 0) & (og_assign(est2, ref) < C)).all()


def test_group_sum_values_and_gradients():
    g = _gen(32)
    est = torch.randn(2, 4, 50, generator=g, requires_grad=True)
    assign = torch.tensor([[0, 1, 0, 1], [2, 2, 2, 0]])
    out = group_sum(est, assign, 3)
    assert out.shape == (2, 3, 50)
    torch.testing.assert_close(out[0, 0], est[0, 0] + est[0, 2])
    torch.testing.assert_close(out[1, 1], torch.zeros(50))
    torch.testing.assert_close(out[1, 2], est[1, 0] + est[1, 1] + est[1, 2])
    weights = torch.randn(2, 3, 50, generator=g)
    (out * weights).sum().backward()
    # d/d est[b, p] = weights[b, assign[b, p]]
    expected = weights.gather(1, assign.unsqueeze(-1).expand(-1, -1, 50))
    torch.testing.assert_close(est.grad, expected)


def test_og_assign_refuses_huge_search():
    with pytest.raises(ValueError, match="assignments exceeds the limit"):
        og_assign(torch.randn(1, 40, 10), torch.randn(1, 2, 10))


def test_og_assign_handles_sixteen_outputs():
    # P = 16, C = 2 (65,536 assignments) must run; the planted grouping is found.
    g = _gen(33)
    est = torch.randn(2, 16, 1000, generator=g)
    planted = torch.stack([torch.randperm(16, generator=g) % 2 for _ in range(2)])
    ref = group_sum(est, planted, 2) + 0.05 * torch.randn(2, 2, 1000, generator=g)
    assert torch.equal(og_assign(est, ref), planted)


@pytest.mark.parametrize(("P", "C"), [(16, 2), (12, 2), (7, 3)])
def test_og_assign_on_float32_signals_matches_the_float64_search(P, C):
    # The statistics run in the signals' precision; on training-like signals (correlated
    # outputs, 4 s at 8 kHz) the float32 search must pick the float64 search's grouping.
    g = _gen(40 + P + C)
    B, T = 8, 32000
    base = torch.randn(B, P, T, generator=g)
    est = base + 0.8 * torch.randn(B, P, T, generator=g)
    ref = torch.rand(B, C, P, generator=g) @ base + 0.3 * torch.randn(B, C, T, generator=g)
    assert torch.equal(og_assign(est, ref), og_assign(est.double(), ref.double()))


def test_the_most_common_grouping_counts_groupings_up_to_the_order_of_the_sources():
    rows = [torch.tensor(r) for r in ([0, 1, 0, 1], [1, 0, 1, 0], [0, 0, 1, 1], [1, 0, 0, 1])]
    assert canonical_grouping(rows[1]) == (0, 1, 0, 1)  # the same grouping as rows[0]
    assert most_common_grouping(rows).tolist() == [0, 1, 0, 1]  # two of four, the others once
    assert most_common_grouping(rows[2:]).tolist() == [0, 0, 1, 1]  # a tie: the first seen
    with pytest.raises(ValueError):
        most_common_grouping([])


def test_a_fixed_grouping_gives_the_same_estimates_whatever_the_references():
    """The reference-free reading of OG: the P outputs are summed by a grouping
    fixed beforehand, so the estimates do not depend on the references; the
    references only order them (PIT, as for any separator)."""
    est = torch.randn(3, 4, 800, generator=_gen(1))
    grouping = torch.tensor([0, 1, 1, 0])
    grouped = group_sum(est, grouping.expand(3, -1), 2)
    for seed in (2, 3):
        ref = torch.randn(3, 2, 800, generator=_gen(seed))
        out = align(est, ref, oracle_grouping=True, grouping=grouping)
        for b in range(3):  # the same two signals, in whichever order PIT chose
            same = torch.allclose(out[b], grouped[b]) or torch.allclose(out[b], grouped[b].flip(0))
            assert same
    # the best assignment, by contrast, follows the references (and scores at least as well)
    ref = torch.randn(3, 2, 800, generator=_gen(4))
    best = si_snr(align(est, ref, oracle_grouping=True), ref).mean(1)
    fixed = si_snr(align(est, ref, oracle_grouping=True, grouping=grouping), ref).mean(1)
    assert bool((fixed <= best + 1e-4).all())
