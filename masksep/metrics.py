"""Evaluation metrics: SI-SNR, SI-SNRi, SDR and SDRi per mixture.

SI-SNR comes from :mod:`masksep.losses` (the one place it is computed). SDR is
BSS-eval's source-to-distortion ratio as ``bss_eval_sources`` defines it
(BSS Eval v3; museval's v4 computes the same quantity per frame): the estimate
may differ from its reference by a time-invariant filter of ``filter_len``
taps (512 in bss_eval) without penalty.

Why our own SDR and not a library at run time: mir_eval (its
``separation.bss_eval_sources`` is the reference; tests/test_metrics.py checks
this one against it) takes one mixture per call in numpy and is deprecated
(to go in mir_eval 0.9).
fast_bss_eval 0.1.4, the batched one, does not hold up here: its numpy
``sdr_loss`` breaks under numpy 2, and its torch backend uses torch's batched
solve, which in torch 2.13 on CPU fails once ``torch.set_num_threads`` has been
called (every training run calls it) -- the reason :func:`sdr` does not use
torch's batched solve (it solves each Toeplitz system with scipy's Levinson
recursion, O(L^2) a system). Do not swap it back in without re-checking both.
"""

from __future__ import annotations

import torch

from masksep.losses import EPS, align, ratio_db, si_snr


def _check_same(est: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    if est.shape != ref.shape:
        raise ValueError(
            f"{what}: est {tuple(est.shape)} and ref {tuple(ref.shape)} differ in shape"
        )


def sdr(
    est: torch.Tensor, ref: torch.Tensor, filter_len: int = 512, eps: float = EPS
) -> torch.Tensor:
    """BSS-eval SDR in dB along the last axis: est (..., T), ref (..., T) -> (...).

    The target is the projection of ``est`` (zero-padded to T + filter_len - 1)
    onto the span of ``filter_len`` delayed copies of its own reference
    (delays 0 .. filter_len - 1, each kept at full length); the rest is
    distortion. ``SDR = 10 log10(||s_target||^2 / ||est - s_target||^2)``.

    As SDR in ``bss_eval_sources``, only the estimate's own reference enters
    the projection (the other sources only matter for SIR and SAR, which are
    not computed here); signals keep their mean; no framing.

    The projection solves the Toeplitz normal equations ``G a = c`` built from
    the reference autocorrelation (G) and the reference/estimate
    cross-correlation (c), both by FFT, in float64, by Levinson recursion. Then
    ``||s_target||^2 = a.c`` and ``||est - s_target||^2 = ||est||^2 - a.c``.
    With ``filter_len=1`` this is the plain projection ratio, i.e. SI-SNR
    without the mean removal. ``eps`` enters as in SI-SNR (a silent estimate
    gives -80 dB). Result in the dtype of ``est``; not differentiable (a metric).
    """
    _check_same(est, ref, "sdr")
    if filter_len < 1:
        raise ValueError(f"sdr: filter_len must be >= 1, got {filter_len}")
    shape, T = est.shape[:-1], est.shape[-1]
    x = est.detach().reshape(-1, T).double()
    s = ref.detach().reshape(-1, T).double()
    L = filter_len
    n_fft = 1 << (T + L - 1 - 1).bit_length()  # >= T + L - 1: no circular wrap-around
    S = torch.fft.rfft(s, n=n_fft)
    X = torch.fft.rfft(x, n=n_fft)
    autocorr = torch.fft.irfft(S.abs() ** 2, n=n_fft)[:, :L]  # r[l] = sum_t s[t] s[t + l]
    cross = torch.fft.irfft(S.conj() * X, n=n_fft)[:, :L]  # c[l] = sum_t s[t] x[t + l]
    coef = _solve_toeplitz(autocorr, cross)
    target = (coef * cross).sum(dim=-1).clamp_min(0)
    noise = ((x * x).sum(dim=-1) - target).clamp_min(0)
    value = ratio_db(target, noise, eps)
    return value.reshape(shape).to(est.dtype if est.is_floating_point() else torch.float32)


def _solve_toeplitz(autocorr: torch.Tensor, cross: torch.Tensor) -> torch.Tensor:
    """a with G a = c for each row, G the symmetric Toeplitz matrix of ``autocorr``.

    scipy's Levinson recursion (solve_toeplitz) costs O(L^2) a system where a
    factorisation costs O(L^3): at L = 512 taps a test set's SDRs take a
    fraction of a second instead of seconds. A reference whose matrix is
    singular (silence, a pure tone) falls back to least squares, the
    pseudo-inverse. Batched torch.linalg.solve is not an option on CPU: MKL's
    batched LU fails outright once torch.set_num_threads has been called
    ("Pivots given to lu_solve must all be greater or equal to 1").
    """
    import numpy as np
    from scipy.linalg import LinAlgError, solve_toeplitz, toeplitz

    r = autocorr.cpu().numpy()
    c = cross.cpu().numpy()
    out = np.empty_like(c)
    for i in range(r.shape[0]):
        try:
            if not r[i, 0] > 0:
                raise LinAlgError("silent reference")
            out[i] = solve_toeplitz(r[i], c[i], check_finite=False)
            if not np.all(np.isfinite(out[i])):
                raise LinAlgError("not finite")
        except (LinAlgError, ValueError):
            out[i] = np.linalg.pinv(toeplitz(r[i]), hermitian=True) @ c[i]
    return torch.from_numpy(out).to(autocorr.device)


def improvement_metrics(
    est: torch.Tensor,
    ref: torch.Tensor,
    mix: torch.Tensor,
    filter_len: int = 512,
    with_sdr: bool = True,
) -> dict[str, torch.Tensor]:
    """Per-mixture metrics, each (B,), the mean over the C sources.

    est (B, C, T) already aligned with ref (B, C, T) (see :func:`masksep.losses.align`),
    mix (B, T). Keys: ``si_snr``, ``si_snri`` = SI-SNR(est, ref) - SI-SNR(mix, ref),
    and with ``with_sdr`` (the Toeplitz solves cost more than the rest together)
    ``sdr``, ``sdri`` = SDR(est, ref) - SDR(mix, ref).
    """
    _check_same(est, ref, "improvement_metrics")
    if mix.dim() != 2 or mix.shape[0] != ref.shape[0] or mix.shape[-1] != ref.shape[-1]:
        raise ValueError(
            f"improvement_metrics: mix {tuple(mix.shape)} does not fit ref {tuple(ref.shape)}; expected (B, T)"
        )
    with torch.no_grad():
        mix = mix.unsqueeze(1).expand_as(ref)
        si_est = si_snr(est, ref).mean(dim=1)
        si_mix = si_snr(mix, ref).mean(dim=1)
        scores = {"si_snr": si_est, "si_snri": si_est - si_mix}
        if with_sdr:
            sdr_est = sdr(est, ref, filter_len).mean(dim=1)
            sdr_mix = sdr(mix, ref, filter_len).mean(dim=1)
            scores.update(sdr=sdr_est, sdri=sdr_est - sdr_mix)
    return scores


def evaluate(
    est: torch.Tensor,
    ref: torch.Tensor,
    mix: torch.Tensor,
    oracle_grouping: bool,
    filter_len: int = 512,
    with_sdr: bool = True,
    grouping: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`masksep.losses.align` then :func:`improvement_metrics`: est (B, K, T) -> dict of (B,)."""
    return improvement_metrics(align(est, ref, oracle_grouping, grouping), ref, mix, filter_len,
                               with_sdr)
