"""SI-SNR, permutation-invariant training (PIT) and overseparation-grouping (OG).

This module is the one place where SI-SNR is computed; :mod:`masksep.metrics`
imports it.

Conventions: waveforms are float tensors ``(..., T)``; estimates are
``(B, K, T)``, references ``(B, C, T)``. SI-SNR is in dB and works on
zero-mean signals (both signals have their mean removed first), so it ignores
DC offsets and any nonzero gain of the estimate, negative gains included (a
sign flip leaves it unchanged).

Two ways to train a separator with C sources:

* **PIT** (K == C): the loss is the negative mean SI-SNR of the best
  one-to-one matching of the K outputs to the C references.
* **Oracle grouping** (K = P >= C, the OG setting of MixIT, Wisdom et al.
  2020): each of the P outputs is assigned to one reference; the outputs of a
  group are summed, and the assignment maximising the mean SI-SNR of the C
  group sums is taken. The search is exact over all C^P assignments and runs
  on per-output statistics, never on grouped waveforms.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from masksep.models.spec import OG_MAX_ASSIGNMENTS

EPS = 1e-8
# Beyond this many permutations (C = 5 gives 120) the Hungarian solver is used.
EXHAUSTIVE_MAX_SOURCES = 4
# Assignments / subsets scored at once in og_assign, to bound memory.
_OG_CHUNK = 2**15


def ratio_db(target_energy: torch.Tensor, noise_energy: torch.Tensor, eps: float) -> torch.Tensor:
    # eps outside the ratio too: a silent estimate scores 10*log10(eps) = -80 dB, not -inf/NaN.
    return 10 * torch.log10(target_energy / (noise_energy + eps) + eps)


def si_snr(est: torch.Tensor, ref: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Scale-invariant SNR in dB along the last axis (broadcasting over the rest).

    Both signals are made zero-mean; the target is the projection of the
    estimate onto the reference, ``s_t = <est, ref> / ||ref||^2 * ref``, and
    ``SI-SNR = 10 log10(||s_t||^2 / ||est - s_t||^2)``, with ``eps`` added to
    the denominators and to the ratio. Invariant to DC offsets and to any
    nonzero gain of ``est`` (sign included). An all-zero (or constant)
    estimate gives ``10 log10(eps)`` = -80 dB, finite, with finite gradients.
    """
    if est.dtype in (torch.float16, torch.bfloat16):
        # Half precision cannot hold the energies of a few seconds of audio.
        est = est.float()
    if ref.dtype in (torch.float16, torch.bfloat16):
        ref = ref.float()
    est = est - est.mean(dim=-1, keepdim=True)
    ref = ref - ref.mean(dim=-1, keepdim=True)
    dot = (est * ref).sum(dim=-1, keepdim=True)
    ref_energy = (ref * ref).sum(dim=-1, keepdim=True)
    target = dot / (ref_energy + eps) * ref
    noise = est - target
    return ratio_db((target * target).sum(dim=-1), (noise * noise).sum(dim=-1), eps)


def _check_pair(est: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    if est.dim() != 3 or ref.dim() != 3:
        raise ValueError(
            f"{what}: expected est (B, K, T) and ref (B, C, T), got {tuple(est.shape)} and {tuple(ref.shape)}"
        )
    if est.shape[0] != ref.shape[0] or est.shape[-1] != ref.shape[-1]:
        raise ValueError(
            f"{what}: est {tuple(est.shape)} and ref {tuple(ref.shape)} differ in batch size or length"
        )


def pairwise_si_snr(est: torch.Tensor, ref: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """SI-SNR of every output against every reference: ``out[b, k, c] = SI-SNR(est[b, k], ref[b, c])``.

    est (B, K, T), ref (B, C, T) -> (B, K, C).
    """
    _check_pair(est, ref, "pairwise_si_snr")
    return si_snr(est.unsqueeze(2), ref.unsqueeze(1), eps)


def best_permutation(score: torch.Tensor, exhaustive: bool | None = None) -> torch.Tensor:
    """The one-to-one matching that maximises the summed ``score[b, k, c]`` (K == C).

    Returns ``perm`` (B, C) long, with output ``perm[b, c]`` matched to reference ``c``.
    ``exhaustive`` picks the method: all C! permutations (default for
    C <= 4) or the Hungarian solver of scipy (default beyond). Not differentiable.
    """
    B, K, C = score.shape
    if K != C:
        raise ValueError(
            f"best_permutation: needs a square score matrix, got {K} outputs x {C} sources"
        )
    if exhaustive is None:
        exhaustive = C <= EXHAUSTIVE_MAX_SOURCES
    score = score.detach()
    if exhaustive:
        perms = torch.tensor(list(itertools.permutations(range(C))), device=score.device)
        # totals[b, i] = sum_c score[b, perms[i, c], c]
        totals = score[:, perms, torch.arange(C, device=score.device)].sum(dim=-1)
        return perms[totals.argmax(dim=1)]
    perm = np.empty((B, C), dtype=np.int64)
    matrices = score.double().cpu().numpy()
    for b in range(B):
        rows, cols = linear_sum_assignment(matrices[b], maximize=True)
        perm[b, cols] = rows
    return torch.from_numpy(perm).to(score.device)


def pit_si_snr(
    est: torch.Tensor, ref: torch.Tensor, eps: float = EPS
) -> tuple[torch.Tensor, torch.LongTensor]:
    """Permutation-invariant SI-SNR.

    est (B, C, T), ref (B, C, T) -> ``(value, perm)``:

    * ``value`` (B,): mean over sources of the SI-SNR under the best
      permutation; differentiable with respect to ``est``.
    * ``perm`` (B, C) long: ``est[b, perm[b, c]]`` is matched to ``ref[b, c]``,
      so ``est.gather(1, perm[..., None].expand(-1, -1, T))`` is in reference order.

    Exhaustive over the C! permutations for C <= 4, Hungarian beyond; both work
    on the (B, C, C) pairwise SI-SNR matrix.
    """
    _check_pair(est, ref, "pit_si_snr")
    if est.shape[1] != ref.shape[1]:
        raise ValueError(
            f"pit_si_snr: {est.shape[1]} outputs for {ref.shape[1]} sources; "
            "PIT needs as many outputs as sources (use oracle grouping for more)"
        )
    pairwise = pairwise_si_snr(est, ref, eps)
    perm = best_permutation(pairwise)
    matched = pairwise.gather(1, perm.unsqueeze(1)).squeeze(1)  # (B, C): pairwise[b, perm[b, c], c]
    return matched.mean(dim=1), perm


def og_assign(
    est: torch.Tensor,
    ref: torch.Tensor,
    eps: float = EPS,
    max_assignments: int = OG_MAX_ASSIGNMENTS,
) -> torch.LongTensor:
    """Oracle grouping: assign each of P outputs to one of C references.

    est (B, P, T), ref (B, C, T) -> ``assign`` (B, P) long in [0, C): output
    ``p`` goes to group ``assign[b, p]``; group ``c`` (the sum of its outputs,
    see :func:`group_sum`) is compared with ``ref[b, c]``. The assignment
    maximises the mean SI-SNR of the C group sums, exactly, over all C^P
    assignments (empty groups allowed; they score 10 log10(eps) = -80 dB).

    No grouped waveform is built. From the zero-mean outputs x_p and references
    s_c, the Gram matrix G = <x_p, x_q>, the correlations R = <x_p, s_c> and the
    energies ||s_c||^2 give, for a group g, ``<sum_g x, s_c> = sum_{p in g} R[p, c]``
    and ``||sum_g x||^2 = 1_g^T G 1_g``, hence its SI-SNR (the statistics in the
    signals' precision, everything after them in float64). The SI-SNR of every
    subset against every reference is tabulated (2^P x C, from the statistics
    of the subset's low and high halves), and the C^P assignments are scored
    from that table in chunks. Memory: the table, B * 2^P * C float64 (16 MiB
    for B = 16, P = 16, C = 2), plus bounded chunks. For C = 2 the two tables
    are built in lined-up chunks and multiplied, never stored whole
    (:func:`_best_two_grouping`).

    Runs under ``no_grad``; raises ValueError when C^P > ``max_assignments``.
    """
    _check_pair(est, ref, "og_assign")
    B, P, _ = est.shape
    C = ref.shape[1]
    n_assign = C**P
    if n_assign > max_assignments:
        raise ValueError(
            f"og_assign: {C} sources ^ {P} outputs = {n_assign} assignments exceeds the limit "
            f"of {max_assignments}; use a smaller overseparation P"
        )
    device = est.device
    if C == 1:
        return torch.zeros(B, P, dtype=torch.long, device=device)
    with torch.no_grad():
        gram, corr, ref_energy = _centred_statistics(est.detach(), ref.detach())
        if C == 2:
            return _best_two_grouping(gram, corr, ref_energy, eps)

        return _best_assignment(_subset_ratio_table(gram, corr, ref_energy, P, eps), P)


def _subset_ratio_table(gram: torch.Tensor, corr: torch.Tensor, ref_energy: torch.Tensor, P: int,
                        eps: float) -> torch.Tensor:
    """(B, 2^P, C) float64: for every subset of the P outputs (bit p set = output p in
    it), target / (noise + eps) + eps of its sum against each reference, whose
    10 log10 is its SI-SNR; from the statistics of the subset's low and high halves."""
    B, C, device = corr.shape[0], corr.shape[2], corr.device
    L = P // 2
    energy_low, energy_high, cross, dot_low, dot_high = _half_statistics(gram, corr, L)

    # Subset m = m_low + 2^L m_high, built in blocks of high-half rows, in place.
    n_low = 2**L
    ratio = torch.empty(B, 2**P, C, dtype=torch.float64, device=device)
    shrink = ref_energy / (ref_energy + eps)  # alpha^2 ||s||^2 = alpha dot shrink
    rows = max(1, _OG_CHUNK // n_low)
    for r0 in range(0, 2 ** (P - L), rows):
        r1 = min(r0 + rows, 2 ** (P - L))
        energy = energy_high[:, r0:r1, None] + energy_low[:, None, :]
        energy.add_(cross[:, r0:r1], alpha=2).unsqueeze_(-1)
        dot = dot_high[:, r0:r1, None, :] + dot_low[:, None, :, :]  # (B, R, 2^L, C)
        energy, dot = energy.reshape(B, -1, 1), dot.reshape(B, -1, C)
        u = dot.mul_(dot).div_(ref_energy + eps)  # alpha dot
        target = u * shrink
        # ||y - alpha s||^2 expanded; clamp the rounding residue of near-perfect fits.
        noise = target.sub(u, alpha=2).add_(energy).clamp_min_(0).add_(eps)
        torch.div(target, noise, out=ratio[:, r0 * n_low : r1 * n_low]).add_(eps)
    return ratio


def _best_assignment(ratio: torch.Tensor, P: int) -> torch.LongTensor:
    """(B, P): the assignment of outputs to groups whose group sums score the highest
    total SI-SNR, over all C^P assignments, scored from the subset table in chunks."""
    B, C, device = ratio.shape[0], ratio.shape[2], ratio.device
    L = P // 2
    score = 10 * torch.log10(ratio)
    # Assignment a (base-C digit p = group of output p) uses subset code_c(a) for group c.
    # With a = a_low + C^L a_high, code_c(a) = code_c(a_low) + 2^L code_c(a_high).
    flat = score.reshape(B, -1)
    groups = torch.arange(C, device=device)
    index_low = _subset_codes(L, C, device) * C + groups  # (C^L, C) into flat
    index_high = (_subset_codes(P - L, C, device) << L) * C  # (C^H, C)
    n_assign_low = C**L
    best_total = torch.full((B,), -math.inf, dtype=torch.float64, device=device)
    best_index = torch.zeros(B, dtype=torch.long, device=device)
    rows = max(1, _OG_CHUNK // n_assign_low)
    for r0 in range(0, C ** (P - L), rows):
        index = index_high[r0 : r0 + rows, None, :] + index_low  # (R, C^L, C)
        totals = flat[:, index].sum(dim=-1).reshape(B, -1)  # (B, R * C^L)
        chunk_best, chunk_arg = totals.max(dim=1)
        better = chunk_best > best_total
        best_total = torch.where(better, chunk_best, best_total)
        best_index = torch.where(better, r0 * n_assign_low + chunk_arg, best_index)
    return (best_index.unsqueeze(1) // C ** torch.arange(P, device=device)) % C


def _half_statistics(gram: torch.Tensor, corr: torch.Tensor, L: int
                     ) -> tuple[torch.Tensor, ...]:
    """Every subset's statistics from those of its low half (outputs 0..L-1) and
    its high half, so that the 2^P table costs O(2^P) additions: the halves'
    energies 1_g^T G 1_g, (B, 2^L) and (B, 2^H); their cross terms
    <sum_high x, sum_low x>, (B, 2^H, 2^L); their correlations with the
    references, (B, 2^L, C) and (B, 2^H, C). Subset m = m_low + 2^L m_high."""
    P = gram.shape[1]
    member_low = _subset_members(L, gram.device)  # (2^L, L)
    member_high = _subset_members(P - L, gram.device)  # (2^H, H)
    energy_low = ((member_low @ gram[:, :L, :L]) * member_low).sum(dim=-1)
    energy_high = ((member_high @ gram[:, L:, L:]) * member_high).sum(dim=-1)
    cross = (member_high @ gram[:, L:, :L]) @ member_low.T
    return energy_low, energy_high, cross, member_low @ corr[:, :L], member_high @ corr[:, L:]


def _best_two_grouping(gram: torch.Tensor, corr: torch.Tensor, ref_energy: torch.Tensor,
                       eps: float) -> torch.LongTensor:
    """og_assign for C = 2 from the statistics: (B, P) in {0, 1}, the same maximiser.

    Assignment a (bit p = group of output p) puts subset a in group 1 and its
    complement in group 0; the best sum of the two SI-SNRs is the best product
    of their ratios (log is increasing). With the subsets indexed by their low
    and high halves, (h, l), the complement of (h, l) is (~h, ~l): so group 0's
    table, built from the halves' statistics in reversed order, lines up with
    group 1's, and the product needs no gather. Each ratio is
    ``dot^2 gain / (energy - dot^2 (2 - shrink) scale + eps) + eps`` with
    scale = 1 / (||s||^2 + eps) and gain = shrink scale: the general path's
    target / noise + eps, with eps added to the energy before the clamp (the
    general path's max(noise, 0) + eps)."""
    B, P, _ = gram.shape
    device = gram.device
    L = P // 2
    energy_low, energy_high, cross, dot_low, dot_high = _half_statistics(gram, corr, L)
    energy_low += eps
    cross *= 2
    energy_s = ref_energy.squeeze(1)  # (B, 2)
    scale = 1 / (energy_s + eps)
    shrink = energy_s * scale
    noise_factor = ((2 - shrink) * scale)[:, :, None, None]  # u (2 - shrink) = dot^2 * this
    gain = (shrink * scale)[:, :, None, None]  # target = dot^2 * this
    # group 1 in subset order, group 0 in reversed (complement) order
    halves = [(energy_low, energy_high, cross, dot_low[..., 1], dot_high[..., 1]),
              (energy_low.flip(1), energy_high.flip(1), cross.flip(1, 2),
               dot_low[..., 0].flip(1), dot_high[..., 0].flip(1))]
    n_low, n_high = 2**L, 2 ** (P - L)
    rows = max(1, _OG_CHUNK * 8 // (B * n_low))
    best_total = torch.full((B,), -math.inf, dtype=torch.float64, device=device)
    best_index = torch.zeros(B, dtype=torch.long, device=device)
    for r0 in range(0, n_high, rows):
        total = None
        for group, (e_low, e_high, x, d_low, d_high) in zip((1, 0), halves, strict=True):
            energy = e_high[:, r0 : r0 + rows, None] + e_low[:, None, :]
            energy += x[:, r0 : r0 + rows]
            dot2 = d_high[:, r0 : r0 + rows, None] + d_low[:, None, :]
            dot2.mul_(dot2)
            noise = torch.addcmul(energy, dot2, noise_factor[:, group], value=-1).clamp_min_(eps)
            ratio = dot2.div_(noise).mul_(gain[:, group]).add_(eps)
            total = ratio if total is None else total.mul_(ratio)
        chunk_best, chunk_arg = total.reshape(B, -1).max(dim=1)
        better = chunk_best > best_total  # strict: the first of equal maxima, as the general path
        best_total = torch.where(better, chunk_best, best_total)
        best_index = torch.where(better, r0 * n_low + chunk_arg, best_index)
    return (best_index.unsqueeze(1) >> torch.arange(P, device=device)) & 1


def _centred_statistics(est: torch.Tensor, ref: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Of the zero-mean outputs x_p and references s_c: the Gram matrix <x_p, x_q>
    (B, P, P), the correlations <x_p, s_c> (B, P, C) and the energies ||s_c||^2
    (B, 1, C), returned in float64 for the subset table.

    The products run in the signals' own precision (float32 in training, as the
    SI-SNR of the loss itself): one matrix product each, on centred copies. In
    float64 they were 3x slower (4.3 against 1.4 ms for B = 4, P = 16, 4 s at
    8 kHz) and only differ where two groupings score within float32 rounding."""
    x = est - est.mean(dim=-1, keepdim=True)
    s = ref - ref.mean(dim=-1, keepdim=True)
    gram = torch.bmm(x, x.transpose(1, 2)).double()
    corr = torch.bmm(x, s.transpose(1, 2)).double()
    return gram, corr, (s * s).sum(dim=-1, keepdim=True).transpose(1, 2).double()


def _subset_members(n_bits: int, device: torch.device) -> torch.Tensor:
    """(2^n, n) float64: row m holds bit p of m, i.e. whether output p is in subset m."""
    codes = torch.arange(2**n_bits, device=device).unsqueeze(1)
    return ((codes >> torch.arange(n_bits, device=device)) & 1).double()


def _subset_codes(n_digits: int, n_groups: int, device: torch.device) -> torch.Tensor:
    """(n_groups^n, n_groups) long: for assignment a of n outputs (base-n_groups digits),
    column c is the bit code of the subset of outputs that a puts in group c."""
    index = torch.arange(n_groups**n_digits, device=device).unsqueeze(1)
    digits = (index // n_groups ** torch.arange(n_digits, device=device)) % n_groups  # (A, n)
    in_group = digits.unsqueeze(1) == torch.arange(n_groups, device=device).view(1, -1, 1)
    return (in_group.long() << torch.arange(n_digits, device=device)).sum(dim=-1)


def group_sum(est: torch.Tensor, assign: torch.Tensor, n_src: int) -> torch.Tensor:
    """Sum the outputs of each group: est (B, P, T), assign (B, P) -> (B, n_src, T).

    ``out[b, c] = sum of est[b, p] over p with assign[b, p] == c`` (zeros for an
    empty group). Differentiable with respect to ``est``.
    """
    # A (B, C, P) 0/1 matrix times the outputs: one batched matrix product each way
    # (scatter_add's backward, a gather, was 3x slower on CPU).
    members = torch.nn.functional.one_hot(assign.long(), n_src).to(est.dtype).transpose(1, 2)
    return members @ est


def canonical_grouping(assign: torch.Tensor) -> tuple[int, ...]:
    """One row of og_assign (P,) with its groups renamed in order of first
    appearance: two assignments that differ only in which source a group serves
    (the order PIT settles) become the same tuple."""
    names: dict[int, int] = {}
    return tuple(names.setdefault(int(g), len(names)) for g in assign.tolist())


def most_common_grouping(assigns: list[torch.Tensor] | torch.Tensor) -> torch.LongTensor:
    """The reference-free grouping of an OG separator: of the best assignments
    og_assign found on a set of mixtures (rows (P,)), the one (up to the order of
    the sources) found most often, ties to the first seen. Fixed once, from
    validation, it groups the outputs of any mixture without its references."""
    counts: dict[tuple[int, ...], int] = {}
    for row in assigns:
        key = canonical_grouping(row)
        counts[key] = counts.get(key, 0) + 1
    if not counts:
        raise ValueError("most_common_grouping: no assignment to count")
    return torch.tensor(max(counts, key=counts.get), dtype=torch.long)


def separation_loss(est: torch.Tensor, ref: torch.Tensor, oracle_grouping: bool) -> torch.Tensor:
    """Training loss: negative mean SI-SNR (dB) over batch and sources, a scalar.

    ``oracle_grouping=False``: PIT, needs K == C outputs.
    ``oracle_grouping=True``: the P = K outputs are grouped by :func:`og_assign`
    and summed (:func:`group_sum`); the assignment already fixes the source
    order, so no permutation follows. The gradient flows through the sums, not
    through the (discrete) assignment.
    """
    _check_pair(est, ref, "separation_loss")
    if oracle_grouping:
        grouped = group_sum(est, og_assign(est, ref), ref.shape[1])
        return -si_snr(grouped, ref).mean()
    return -pit_si_snr(est, ref)[0].mean()


def align(est: torch.Tensor, ref: torch.Tensor, oracle_grouping: bool,
          grouping: torch.Tensor | None = None) -> torch.Tensor:
    """The estimates in reference order, est (B, K, T) -> (B, C, T), for metrics.

    Grouped by :func:`og_assign` when ``oracle_grouping``, otherwise reordered
    by the PIT permutation (K == C). With ``grouping`` (P,), a fixed grouping of
    the K = P outputs (:func:`most_common_grouping`) sums them into C estimates
    first, without looking at the references; PIT then only orders them, as for
    any separator. Computed under ``no_grad``.
    """
    _check_pair(est, ref, "align")
    with torch.no_grad():
        if grouping is not None:
            grouped = group_sum(est, grouping.to(est.device).expand(est.shape[0], -1), ref.shape[1])
            return align(grouped, ref, oracle_grouping=False)
        if oracle_grouping:
            return group_sum(est, og_assign(est, ref), ref.shape[1])
        _, perm = pit_si_snr(est, ref)
        return est.gather(1, perm.unsqueeze(-1).expand(-1, -1, est.shape[-1]))
