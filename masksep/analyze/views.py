"""The three views of a mask head, each computed on one model (trained or at
initialisation) so that the caller can set one against the other.

Reading a deep head as overseparation-grouping (the paper's reading): the last
hidden layer's U = ``width`` units are P = U overseparated outputs, and the
output 1x1 conv (U -> C*N) is their grouping. Unit u's outgoing weight energy
for source c is E[c, u] = sum over the N output rows of source c of W[row, u]^2;
its *share* for c is E[c, u] / sum_c E[c, u]. For an og head with learned
grouping the share is read from the grouping matrix itself (column p of
softmax(group_logits)).

* weight view: shares, their normalised entropy, the fraction of units whose
  largest share is above a threshold, and (deep heads) a permutation test of
  the source labels that says how much of that a head without any grouping
  would show by chance;
* ablation view: silence the units that serve source c (largest share) and
  measure each output's SI-SNR change on test mixtures, against random sets of
  units of the same size;
* function view: fit an og head of P = U shallow masks (masksep's own og head,
  learned grouping, the same mask activation) to the deep head's masks on the
  head's own input features, and a shallow head (P = C) as the reference; held
  out test items give the mask MSE and the SI-SNRi of each fitted head.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from masksep.config import HeadConfig
from masksep.losses import pit_si_snr, si_snr
from masksep.metrics import improvement_metrics
from masksep.models import HEADS

# Masks in (0, 1) are inverted for the least-squares fit at this distance from the ends.
_INVERSE_CLAMP = 1e-4
# The og fit's unused outputs start this far from contributing: together they add
# at most this much to a source's mask, so the fit starts at the shallow fit.
_SILENT_TOTAL = 0.01
# Snapshots of the og fit compared on the held-back fit frames.
_SNAPSHOTS = 4
# Weight of an embedded output on its own source at the og fit's start (logit).
_EMBED_LOGIT = 10.0
# A unit whose outgoing energy is below this fraction of the largest unit's has
# no share to read (it is reported as dead, not as grouped or ungrouped).
_DEAD = 1e-12
HIST_BINS = 10


@dataclass(frozen=True)
class Settings:
    """Every threshold and budget of an analysis; written into analysis.json."""

    share_threshold: float = 0.75  # a unit "serves mainly one source" above this share
    permutations: int = 1000  # label permutations of the weight view's chance test
    random_sets: int = 5  # random unit sets per source in the ablation control
    fit_steps: int = 40  # Adam steps of the function view's og fit
    fit_frames: int = 128  # frames per step
    fit_lr: float = 3e-3
    check_frames: int = 512  # held-back fit frames that choose among the og fit's snapshots
    seed: int = 0  # every random draw of the analysis (permutations, unit sets, frames)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- test items


@dataclass
class Batch:
    """Test mixtures of one length with what the model makes of them."""

    mix: Tensor  # (B, T)
    ref: Tensor  # (B, C, T)
    rep: Tensor  # what the masks multiply
    hidden: Tensor  # (B, F, frames): the head's input features


def probe(model, items: list[tuple[Tensor, Tensor]], batch_size: int = 8) -> list[Batch]:
    """Run the front end and backbone once over ``items`` ((mix, ref) pairs);
    consecutive items of one length share a batch."""
    batches: list[Batch] = []
    group: list[tuple[Tensor, Tensor]] = []

    def flush():
        if not group:
            return
        mix = torch.stack([m for m, _ in group])
        ref = torch.stack([r for _, r in group])
        rep, feats = model.encode(mix)
        batches.append(Batch(mix, ref, rep, model.run_backbone(feats)))
        group.clear()

    with torch.inference_mode():
        for mix, ref in items:
            if group and (len(group) == batch_size or group[0][0].shape != mix.shape):
                flush()
            group.append((mix, ref))
        flush()
    return batches


def _estimates(model, batch: Batch, masks: Tensor) -> Tensor:
    return model.decode(model.apply_masks(masks, batch.rep), batch.mix.shape[-1])


# --------------------------------------------------------------------------- weight view


def unit_energy(head) -> Tensor:
    """(C, N, U): squared outgoing weights of the last hidden layer's U units,
    by source and output row (bin)."""
    out = head.trunk[-1].weight.detach().double()  # (K*N, U, 1)
    return out[..., 0].reshape(head.n_masks, head.n_bins, -1).square()


def norm_entropy(shares: Tensor) -> Tensor:
    """Entropy of each row of ``shares`` (..., C) over log C: 0 = one source, 1 = even."""
    return -torch.special.xlogy(shares, shares).sum(-1) / math.log(shares.shape[-1])


def share_stats(shares: Tensor, threshold: float) -> dict[str, Any]:
    """Statistics of per-unit shares (U, C), rows summing to one."""
    n_src = shares.shape[1]
    top, source = shares.max(dim=1)
    counts, edges = torch.histogram(top.float(), bins=HIST_BINS, range=(1.0 / n_src, 1.0))
    entropy = norm_entropy(shares)
    return {
        "units": int(shares.shape[0]),
        "mean_entropy": float(entropy.mean()),
        "median_entropy": float(entropy.median()),
        "fraction_dominant": float((top > threshold).double().mean()),
        "units_per_source": torch.bincount(source, minlength=n_src).tolist(),
        "dominant_source": source.tolist(),
        "shares": [[round(float(v), 4) for v in row] for row in shares],
        "dominant_share_hist": {"edges": [round(float(e), 4) for e in edges],
                                "counts": [int(c) for c in counts]},
    }


def _label_null(energy: Tensor, settings: Settings, gen: torch.Generator
                ) -> tuple[Tensor, Tensor]:
    """Mean entropy and fraction dominant (each (K,)) of K heads whose source
    labels are permuted independently in every bin: under PIT the sources are
    exchangeable, so a head that does not group is one of these."""
    n_src, n_bins, _ = energy.shape
    perm = torch.rand(settings.permutations, n_bins, n_src, generator=gen).argsort(dim=-1)
    onehot = torch.nn.functional.one_hot(perm, n_src).to(energy.dtype)  # (K, N, C, C)
    permuted = torch.einsum("knca,anu->kcu", onehot, energy)
    shares = permuted / permuted.sum(dim=1, keepdim=True)
    entropy = norm_entropy(shares.transpose(1, 2)).mean(dim=1)
    dominant = (shares.max(dim=1).values > settings.share_threshold).double().mean(dim=1)
    return entropy, dominant


def weight_view_deep(head, settings: Settings) -> dict[str, Any]:
    """The output layer of a deep head read as the grouping of its hidden units."""
    energy = unit_energy(head)
    per_unit = energy.sum(dim=1)  # (C, U)
    total = per_unit.sum(dim=0)
    alive = total > _DEAD * float(total.max())
    energy, per_unit = energy[..., alive], per_unit[:, alive]
    shares = (per_unit / per_unit.sum(dim=0)).T  # (U, C)
    stats = share_stats(shares, settings.share_threshold)
    gen = torch.Generator().manual_seed(settings.seed)
    null_entropy, null_dominant = _label_null(energy, settings, gen)
    stats.update(
        dead_units=int((~alive).sum()),
        mean_entropy_chance=float(null_entropy.mean()),
        fraction_dominant_chance=float(null_dominant.mean()),
        # One-sided: is the head more grouped (lower entropy) than its label-permuted copies?
        p_value=float((1 + (null_entropy <= stats["mean_entropy"]).sum()) / (1 + len(null_entropy))),
    )
    # Per unit of the layer, dead ones (-1) included, so that ablation can index units.
    dominant = [-1] * len(alive)
    for unit, source in zip(alive.nonzero().flatten().tolist(), stats["dominant_source"], strict=True):
        dominant[unit] = source
    stats["dominant_source"] = dominant
    shares_all: list = [None] * len(alive)
    for unit, row in zip(alive.nonzero().flatten().tolist(), stats["shares"], strict=True):
        shares_all[unit] = row
    stats["shares"] = shares_all  # per unit of the layer, (C,), None for a dead unit
    return stats


def weight_view_grouping(head, settings: Settings) -> dict[str, Any]:
    """An og head's learned grouping matrix: output p's share for source c is A[c, p]."""
    shares = head.grouping_weights().detach().double().T  # (P, C)
    stats = share_stats(shares, settings.share_threshold)
    stats["dead_units"] = 0
    return stats


# --------------------------------------------------------------------------- oracle assignment


def assignment_view(model, batches: list[Batch], settings: Settings) -> dict[str, Any]:
    """Oracle grouping has no grouping to read; what it does have is the
    assignment the oracle picks on each test item. Reads how consistently it
    puts two outputs together: pair agreement = mean over output pairs of
    max(M, 1 - M), M the fraction of items where the pair shares a group
    (1 = the same partition on every item, up to the source order). Chance:
    the same with each item's assignment shuffled over the outputs."""
    from masksep.losses import og_assign

    assigns = []
    with torch.inference_mode():
        for batch in batches:
            est = _estimates(model, batch, model.head(batch.hidden))
            assigns.append(og_assign(est, batch.ref))
    assign = torch.cat(assigns)  # (items, P)
    n_items, n_out = assign.shape

    def agreement(a: Tensor) -> Tensor:  # (..., items, P) -> (...)
        together = (a.unsqueeze(-1) == a.unsqueeze(-2)).double().mean(dim=-3)  # (..., P, P)
        upper = torch.triu_indices(n_out, n_out, offset=1)
        m = together[..., upper[0], upper[1]]
        return torch.maximum(m, 1 - m).mean(dim=-1)

    gen = torch.Generator().manual_seed(settings.seed)
    order = torch.rand(settings.permutations, n_items, n_out, generator=gen).argsort(dim=-1)
    null = agreement(assign.unsqueeze(0).expand(settings.permutations, -1, -1).gather(2, order))
    observed = float(agreement(assign))
    sizes = torch.nn.functional.one_hot(assign, model.n_src).sum(dim=1).double()
    return {
        "items": n_items,
        "outputs": n_out,
        "pair_agreement": observed,
        "pair_agreement_chance": float(null.mean()),
        "p_value": float((1 + (null >= observed).sum()) / (1 + len(null))),
        "mean_group_sizes": sizes.sort(dim=1, descending=True).values.mean(dim=0).tolist(),
    }


# --------------------------------------------------------------------------- ablation view


@contextmanager
def silenced_units(head, keep: Tensor):
    """Within the block the deep head's last hidden layer is multiplied by
    ``keep`` (U,): 0 silences a unit (tanh's and relu's resting value)."""
    handle = head.trunk[-1].register_forward_pre_hook(
        lambda _module, args: (args[0] * keep.to(args[0].dtype).view(1, -1, 1),))
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def ungrouped(head):
    """Within the block an og head returns its P masks before the grouping;
    yields the grouping weights A (C, P) to apply by hand."""
    weights = head.grouping_weights().detach()
    logits = head.group_logits
    head.group_logits = None
    try:
        yield weights
    finally:
        head.group_logits = logits


def _selectivity(delta: Tensor, sizes: list[int]) -> float:
    """delta (C, C): SI-SNR change of output k when source c's units are
    silenced. Mean over sources with units of (change of the other outputs -
    change of its own output): > 0 when silencing c's units hurts output c most."""
    n_src = delta.shape[0]
    values = []
    for c in range(n_src):
        if sizes[c] == 0:
            continue
        others = torch.cat([delta[c, :c], delta[c, c + 1:]])
        values.append(float(others.mean() - delta[c, c]))
    return sum(values) / len(values) if values else 0.0


def ablation_view(model, batches: list[Batch], sources: list[int], settings: Settings,
                  og_outputs: bool) -> dict[str, Any]:
    """Silence the units serving each source and, as the control, random sets
    of as many units; each output is scored against the reference the intact
    head's PIT matched it to, so the outputs keep their identity."""
    head = model.head
    n_units = len(sources)
    n_src = model.n_src
    unit_source = torch.tensor(sources)
    groups = [(unit_source == c).nonzero().flatten() for c in range(n_src)]
    sizes = [len(g) for g in groups]
    gen = torch.Generator().manual_seed(settings.seed)
    conditions = [g for g in groups]
    for c in range(n_src):
        conditions += [torch.randperm(n_units, generator=gen)[: sizes[c]]
                       for _ in range(settings.random_sets)]

    def run(batch: Batch, keep: Tensor) -> Tensor:
        if og_outputs:
            with ungrouped(head) as weights:
                masks = torch.einsum("cp,bpnt->bcnt", weights * keep, head(batch.hidden))
        else:
            with silenced_units(head, keep):
                masks = head(batch.hidden)
        return _estimates(model, batch, masks)

    sums = torch.zeros(len(conditions), n_src, dtype=torch.float64)
    base_sum = torch.zeros(n_src, dtype=torch.float64)
    n_items = 0
    with torch.inference_mode():
        for batch in batches:
            est = run(batch, torch.ones(n_units))
            _, perm = pit_si_snr(est, batch.ref)
            matched = batch.ref.gather(1, perm.argsort(dim=1).unsqueeze(-1).expand_as(batch.ref))
            base = si_snr(est, matched)  # (B, C): output k against its reference
            base_sum += base.double().sum(dim=0)
            for i, units in enumerate(conditions):
                keep = torch.ones(n_units)
                keep[units] = 0
                sums[i] += (si_snr(run(batch, keep), matched) - base).double().sum(dim=0)
            n_items += batch.mix.shape[0]
    delta = sums / n_items
    own = delta[:n_src]
    rand = delta[n_src:].reshape(n_src, settings.random_sets, n_src).mean(dim=1)
    return {
        "units": n_units,
        "group_sizes": sizes,
        "items": n_items,
        "base_si_snr_db": (base_sum / n_items).tolist(),
        "delta_db": own.tolist(),
        "random_delta_db": rand.tolist(),
        "selectivity_db": _selectivity(own, sizes),
        "random_selectivity_db": _selectivity(rand, sizes),
    }


# --------------------------------------------------------------------------- function view


def _inverse_activation(masks: Tensor, name: str) -> Tensor:
    """Pre-activations whose mask activation gives ``masks``, for least squares."""
    if name == "sigmoid":
        return torch.logit(masks.clamp(_INVERSE_CLAMP, 1 - _INVERSE_CLAMP))
    if name == "softmax":
        return torch.log(masks.clamp_min(_INVERSE_CLAMP))
    return masks  # relu and linear: the mask is its own pre-activation where it is > 0


def _frames(batches: list[Batch], masks: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Features (frames, F) and target masks (frames, C, N) of all batches."""
    x = torch.cat([b.hidden.permute(0, 2, 1).reshape(-1, b.hidden.shape[1]) for b in batches])
    y = torch.cat([m.permute(0, 3, 1, 2).reshape(-1, m.shape[1], m.shape[2]) for m in masks])
    return x, y


def _on_frames(head, x: Tensor) -> Tensor:
    """A head applied to single frames: x (T, F) -> masks (T, C, N)."""
    return head(x.T.unsqueeze(0))[0].permute(2, 0, 1)


def _shallow_fit(x: Tensor, y: Tensor, mask_act: str) -> Tensor:
    """Least squares of the inverted target masks on the features: (F + 1, C * N)."""
    design = torch.cat([x, torch.ones(len(x), 1)], dim=1).double()
    target = _inverse_activation(y, mask_act).reshape(len(y), -1).double()
    return torch.linalg.lstsq(design, target).solution.float()


def _set_conv(conv, solution: Tensor) -> None:
    n_in = solution.shape[0] - 1
    conv.weight.copy_(solution[:n_in].T.unsqueeze(-1))
    conv.bias.copy_(solution[n_in])


def _silent_bias(mask_act: str, per_output: float) -> float:
    if mask_act == "sigmoid":
        return math.log(per_output / (1 - per_output))
    if mask_act == "softmax":
        return math.log(per_output) - 10.0
    return per_output


def _students(x: Tensor, y: Tensor, width: int, mask_act: str, seed: int):
    """The shallow fit as masksep's shallow head, and masksep's og head of
    P = width shallow masks that starts at that shallow fit: outputs 0..C-1
    carry it, each on its own source, and the other P - C start nearly silent
    (random weights scaled down, a bias that keeps each source's share of them
    under ``_SILENT_TOTAL``), with outputs 0..C-1 fitted to what the silent
    ones leave over."""
    n_features, (n_src, n_bins) = x.shape[1], y.shape[1:]
    solution = _shallow_fit(x, y, mask_act)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        shallow = HEADS.get("shallow")(n_features, n_bins, n_src,
                                        HeadConfig(kind="shallow", mask_act=mask_act))
        og = HEADS.get("og")(n_features, n_bins, n_src,
                             HeadConfig(kind="og", depth=1, oversep=width, grouping="learned",
                                        mask_act=mask_act))
    rows = n_src * n_bins
    with torch.no_grad():
        _set_conv(shallow.trunk[-1], solution)
        conv = og.trunk[-1]
        conv.weight[rows:] *= 0.01
        per_output = _SILENT_TOTAL / max(1.0, (width - n_src) / n_src)
        conv.bias[rows:] = _silent_bias(mask_act, per_output)
        og.group_logits[:, :n_src] = -_EMBED_LOGIT
        og.group_logits[torch.arange(n_src), torch.arange(n_src)] = _EMBED_LOGIT
        # What the silent outputs add (nearly constant: their weights are small), per source and bin.
        conv.weight[:rows] = 0
        conv.bias[:rows] = _silent_bias(mask_act, _INVERSE_CLAMP)
        sample = x[torch.linspace(0, len(x) - 1, min(len(x), 256)).long()]
        silent = _on_frames(og, sample).mean(dim=0)
        rest = _shallow_fit(x, y - silent, mask_act)
        conv.weight[:rows] = rest[:n_features].T.unsqueeze(-1)
        conv.bias[:rows] = rest[n_features]
    return shallow, og


def _fit(student, x: Tensor, y: Tensor, settings: Settings) -> dict[str, float]:
    """Adam on the mask MSE over random frames of the first three quarters of
    the fit frames; the last quarter (the last fit items) picks the best of
    the start and ``_SNAPSHOTS`` snapshots along the way, so the fit stops
    before it overfits and never ends worse than it started."""
    n_train = max(1, len(x) * 3 // 4)
    x_check, y_check = x[n_train:], y[n_train:]
    if len(x_check) == 0:
        x_check, y_check = x, y
    if len(x_check) > settings.check_frames:
        keep = torch.linspace(0, len(x_check) - 1, settings.check_frames).long()
        x_check, y_check = x_check[keep], y_check[keep]

    def check_loss() -> float:
        with torch.no_grad():
            return float((_on_frames(student, x_check) - y_check).square().mean())

    best_loss = start_loss = check_loss()
    best = {k: v.clone() for k, v in student.state_dict().items()}
    params = [p for p in student.parameters() if p.requires_grad]
    try:
        opt = torch.optim.Adam(params, lr=settings.fit_lr, fused=True)
    except (RuntimeError, TypeError):  # a torch without fused CPU Adam
        opt = torch.optim.Adam(params, lr=settings.fit_lr)
    gen = torch.Generator().manual_seed(settings.seed)
    marks = {round(settings.fit_steps * (i + 1) / _SNAPSHOTS) for i in range(_SNAPSHOTS)}
    for step in range(1, settings.fit_steps + 1):
        idx = torch.randint(0, n_train, (settings.fit_frames,), generator=gen)
        loss = (_on_frames(student, x[idx]) - y[idx]).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step in marks:
            current = check_loss()
            if current < best_loss:
                best_loss, best = current, {k: v.clone() for k, v in student.state_dict().items()}
    student.load_state_dict(best)
    return {"start_mse": start_loss, "best_mse": best_loss}


def _held_out(model, student, batches: list[Batch], teacher: list[Tensor]
              ) -> tuple[float, float, float]:
    """Mask MSE, teacher-mask variance and SI-SNRi of ``student`` (or the
    teacher itself when None) on held-out batches, item by item (an og head
    of P = width holds P * N masks per frame)."""
    sq = total = total_sq = snr = 0.0
    count = items = 0
    with torch.inference_mode():
        for batch, target in zip(batches, teacher, strict=True):
            for b in range(batch.mix.shape[0]):
                one = Batch(batch.mix[b:b + 1], batch.ref[b:b + 1], batch.rep[b:b + 1],
                            batch.hidden[b:b + 1])
                masks = target[b:b + 1] if student is None else student(one.hidden)
                t = target[b:b + 1].double()
                sq += float((masks.double() - t).square().sum())
                total += float(t.sum())
                total_sq += float(t.square().sum())
                count += t.numel()
                est = _estimates(model, one, masks)
                _, perm = pit_si_snr(est, one.ref)
                aligned = est.gather(1, perm.unsqueeze(-1).expand_as(est))
                snr += float(improvement_metrics(aligned, one.ref, one.mix, with_sdr=False)["si_snri"].sum())
                items += 1
    mean = total / count
    return sq / count, total_sq / count - mean * mean, snr / items


def function_view(model, fit_batches: list[Batch], eval_batches: list[Batch], width: int,
                  settings: Settings) -> dict[str, Any]:
    """How closely masksep's og head of P = width shallow masks, and a shallow
    head, reproduce the deep head's masks from its own input features."""
    head = model.head
    with torch.inference_mode():
        fit_masks = [head(b.hidden) for b in fit_batches]
        eval_masks = [head(b.hidden) for b in eval_batches]
    x, y = _frames(fit_batches, fit_masks)
    x, y = x.clone(), y.clone()  # out of inference mode, for autograd
    shallow, og = _students(x, y, width, head.mask_act, settings.seed)
    fit = _fit(og, x, y, settings)
    _, variance, head_snri = _held_out(model, None, eval_batches, eval_masks)
    shallow_mse, _, shallow_snri = _held_out(model, shallow, eval_batches, eval_masks)
    og_mse, _, og_snri = _held_out(model, og, eval_batches, eval_masks)
    variance = max(variance, 1e-12)
    return {
        "oversep": width,
        "fit_frames_total": len(x),
        "eval_items": sum(b.mix.shape[0] for b in eval_batches),
        "mask_variance": variance,
        "og_mse": og_mse,
        "og_rel_mse": og_mse / variance,
        "shallow_mse": shallow_mse,
        "shallow_rel_mse": shallow_mse / variance,
        "og_fit_start_mse": fit["start_mse"],
        "og_fit_best_mse": fit["best_mse"],
        "head_si_snri": head_snri,
        "og_si_snri": og_snri,
        "shallow_si_snri": shallow_snri,
        "og_gap_db": head_snri - og_snri,
    }
