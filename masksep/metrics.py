"""Evaluation metrics: SI-SNR, SI-SNRi, SDR, SDRi, SIR and SAR per mixture;
PESQ and STOI through their own packages (the ``metrics`` extra).

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

SIR and SAR (:func:`bss_eval`) need the projection onto every reference's
delayed copies at once, a block-Toeplitz system of C x filter_len unknowns that
Levinson does not solve; it is solved densely per mixture (as mir_eval does), so
only ``masksep eval`` asks for them, never a training run's test.

PESQ (ITU-T P.862, the ``pesq`` package) and STOI (the ``pystoi`` package) are
the field's perceptual scores; they are an optional extra (``masksep[metrics]``)
and are computed by those packages, never re-implemented here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from masksep.errors import UserError
from masksep.losses import EPS, align, ratio_db, si_snr

# The metrics `masksep eval` may add to SI-SNR(i) and SDR(i), and the package each needs.
BSS_METRICS = ("sir", "sar")
PERCEPTUAL_METRICS = {"pesq": "pesq", "stoi": "pystoi"}
EXTRA_METRICS = BSS_METRICS + tuple(PERCEPTUAL_METRICS)
METRICS_EXTRA_HINT = "pip install 'masksep[metrics]'"


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


def bss_eval(
    est: torch.Tensor, ref: torch.Tensor, filter_len: int = 512, eps: float = EPS
) -> dict[str, torch.Tensor]:
    """BSS-eval SDR, SIR and SAR in dB of each source: est (..., C, T), ref (..., C, T)
    -> ``{"sdr", "sir", "sar"}``, each (..., C); est[..., c] is scored against ref[..., c].

    As ``bss_eval_sources`` (BSS Eval v3, no permutation, no framing): the padded
    estimate x is split by two nested projections, P_c onto its own reference's
    ``filter_len`` delayed copies (the target, as in :func:`sdr`) and P onto every
    reference's delayed copies (target + interference); the rest is artefacts. With
    t = ||P_c x||^2, p = ||P x||^2 and n = ||x||^2 (orthogonal projections, so the
    error energies are differences of these): SDR = t / (n - t), SIR = t / (p - t),
    SAR = p / (n - p). ``sdr`` equals :func:`sdr`'s. Not differentiable (a metric).
    """
    _check_same(est, ref, "bss_eval")
    if est.dim() < 2:
        raise ValueError(f"bss_eval: expected (..., C, T), got {tuple(est.shape)}")
    if filter_len < 1:
        raise ValueError(f"bss_eval: filter_len must be >= 1, got {filter_len}")
    shape, (C, T), L = est.shape[:-2], est.shape[-2:], filter_len
    x = est.detach().reshape(-1, C, T).double().cpu().numpy()
    s = ref.detach().reshape(-1, C, T).double().cpu().numpy()
    n_fft = 1 << (T + L - 1 - 1).bit_length()  # >= T + L - 1: lags up to L - 1 do not wrap
    S = np.fft.rfft(s, n=n_fft)
    X = np.fft.rfft(x, n=n_fft)
    # corr[b, i, j, l] = sum_u s_i[u] s_j[u + l] (l modulo n_fft: negative lags at the end),
    # cross[b, i, k, a] = sum_u s_i[u] x_k[u + a]: <delayed copy a of s_i, x_k>.
    corr = np.fft.irfft(S[:, :, None].conj() * S[:, None, :], n=n_fft)
    cross = np.fft.irfft(S[:, :, None].conj() * X[:, None, :], n=n_fft)[..., :L]
    lags = (np.arange(L)[:, None] - np.arange(L)[None, :]) % n_fft  # <copy a of s_i, copy b of s_j>
    own = torch.from_numpy(np.einsum("bccl->bcl", corr[..., :L]).reshape(-1, L).copy())
    own_cross = torch.from_numpy(np.einsum("bcca->bca", cross).reshape(-1, L).copy())
    coef = _solve_toeplitz(own, own_cross)
    target = (coef * own_cross).sum(dim=-1).clamp_min(0).numpy().reshape(-1, C)
    both = np.empty_like(target)
    for b in range(x.shape[0]):
        gram = corr[b][:, :, lags].transpose(0, 2, 1, 3).reshape(C * L, C * L)
        rhs = cross[b].transpose(0, 2, 1).reshape(C * L, C)  # a column per estimate
        both[b] = (_solve_dense(gram, rhs) * rhs).sum(axis=0)
    energy = (x * x).sum(axis=-1)
    t, p, n = (torch.from_numpy(v) for v in (target, np.clip(both, target, None), energy))
    out = {"sdr": ratio_db(t, (n - t).clamp_min(0), eps),
           "sir": ratio_db(t, p - t, eps),
           "sar": ratio_db(p, (n - p).clamp_min(0), eps)}
    dtype = est.dtype if est.is_floating_point() else torch.float32
    return {k: v.reshape(*shape, C).to(dtype=dtype, device=est.device) for k, v in out.items()}


def _solve_dense(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """gram @ a = rhs for a symmetric positive (semi-)definite ``gram``; a singular one
    (a silent or linearly dependent reference) by least squares, as mir_eval falls back."""
    from scipy.linalg import LinAlgError, cho_factor, cho_solve

    try:
        out = cho_solve(cho_factor(gram, check_finite=False), rhs, check_finite=False)
        if np.all(np.isfinite(out)):
            return out
    except (LinAlgError, ValueError):
        pass
    return np.linalg.lstsq(gram, rhs, rcond=None)[0]


def require_metrics(names: Sequence[str]) -> None:
    """A UserError naming the pip command when a metric's package is not installed;
    an unknown name is a ValueError (a caller's mistake). Checked before any work is done."""
    import importlib

    for name in names:
        if name not in EXTRA_METRICS:
            raise ValueError(f"require_metrics: unknown metric {name!r}")
        package = PERCEPTUAL_METRICS.get(name)
        if package is None:
            continue
        try:
            importlib.import_module(package)
        except ImportError:
            raise UserError(f"--{name}: {name.upper()} needs the {package} package, "
                            f"not installed here: {METRICS_EXTRA_HINT}") from None


def check_perceptual_rate(names: Sequence[str], sample_rate: int) -> None:
    """PESQ is defined at 8 kHz (narrow band) and 16 kHz (wide band) only."""
    if "pesq" in names and sample_rate not in (8000, 16000):
        raise UserError(f"--pesq: PESQ needs 8000 or 16000 Hz audio, the data is {sample_rate} Hz")


def perceptual(
    est: torch.Tensor, ref: torch.Tensor, sample_rate: int, names: Sequence[str]
) -> dict[str, torch.Tensor]:
    """PESQ and/or STOI of aligned estimates, each the mean over the C sources:
    est, ref (B, C, T) -> ``{name: (B,)}``. PESQ is P.862.2 wide band at 16 kHz and
    P.862 narrow band at 8 kHz (the only mode there), as the pesq package computes it
    (``pesq(fs, ref, deg, mode)``); an utterance in which PESQ finds no speech scores
    NaN rather than stopping the evaluation. STOI is ``pystoi.stoi(ref, est, fs)``."""
    _check_same(est, ref, "perceptual")
    x = est.detach().double().cpu().numpy()
    s = ref.detach().double().cpu().numpy()
    out: dict[str, torch.Tensor] = {}
    for name in names:
        if name == "pesq":
            from pesq import PesqError, pesq

            mode = "wb" if sample_rate == 16000 else "nb"

            def score(r, e, pesq=pesq, mode=mode, err=PesqError):
                value = pesq(sample_rate, r, e, mode, on_error=err.RETURN_VALUES)
                return float("nan") if value < 0 else value  # its error codes; MOS-LQO is >= 1
        elif name == "stoi":
            from pystoi import stoi

            def score(r, e, stoi=stoi):
                return stoi(r, e, sample_rate, extended=False)
        else:
            raise ValueError(f"perceptual: unknown metric {name!r}")
        values = [[score(s[b, c], x[b, c]) for c in range(s.shape[1])] for b in range(s.shape[0])]
        out[name] = torch.tensor(values, dtype=torch.float64).mean(dim=1).float()
    return out


def improvement_metrics(
    est: torch.Tensor,
    ref: torch.Tensor,
    mix: torch.Tensor,
    filter_len: int = 512,
    with_sdr: bool = True,
    extra: Sequence[str] = (),
    sample_rate: int | None = None,
) -> dict[str, torch.Tensor]:
    """Per-mixture metrics, each (B,), the mean over the C sources.

    est (B, C, T) already aligned with ref (B, C, T) (see :func:`masksep.losses.align`),
    mix (B, T). Keys: ``si_snr``, ``si_snri`` = SI-SNR(est, ref) - SI-SNR(mix, ref),
    and with ``with_sdr`` (the Toeplitz solves cost more than the rest together)
    ``sdr``, ``sdri`` = SDR(est, ref) - SDR(mix, ref). ``extra`` adds any of
    :data:`EXTRA_METRICS`: ``sir`` and ``sar`` (:func:`bss_eval`, which then gives
    ``sdr`` too), ``pesq`` and ``stoi`` (:func:`perceptual`, at ``sample_rate``).
    """
    _check_same(est, ref, "improvement_metrics")
    if mix.dim() != 2 or mix.shape[0] != ref.shape[0] or mix.shape[-1] != ref.shape[-1]:
        raise ValueError(
            f"improvement_metrics: mix {tuple(mix.shape)} does not fit ref {tuple(ref.shape)}; expected (B, T)"
        )
    unknown = set(extra) - set(EXTRA_METRICS)
    if unknown:
        raise ValueError(f"improvement_metrics: unknown metrics {sorted(unknown)}")
    with torch.no_grad():
        mix = mix.unsqueeze(1).expand_as(ref)
        si_est = si_snr(est, ref).mean(dim=1)
        si_mix = si_snr(mix, ref).mean(dim=1)
        scores = {"si_snr": si_est, "si_snri": si_est - si_mix}
        bss = bss_eval(est, ref, filter_len) if set(extra) & set(BSS_METRICS) else None
        if with_sdr or bss is not None:
            sdr_est = (bss["sdr"] if bss is not None else sdr(est, ref, filter_len)).mean(dim=1)
            sdr_mix = sdr(mix, ref, filter_len).mean(dim=1)
            scores.update(sdr=sdr_est, sdri=sdr_est - sdr_mix)
        for name in extra:
            if name in BSS_METRICS:
                scores[name] = bss[name].mean(dim=1)
        wanted = [name for name in extra if name in PERCEPTUAL_METRICS]
        if wanted:
            if sample_rate is None:
                raise ValueError("improvement_metrics: pesq and stoi need the sample_rate")
            scores.update(perceptual(est, ref, sample_rate, wanted))
    return scores


def evaluate(
    est: torch.Tensor,
    ref: torch.Tensor,
    mix: torch.Tensor,
    oracle_grouping: bool,
    filter_len: int = 512,
    with_sdr: bool = True,
    extra: Sequence[str] = (),
    sample_rate: int | None = None,
    grouping: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`masksep.losses.align` then :func:`improvement_metrics`: est (B, K, T) -> dict of (B,)."""
    return improvement_metrics(align(est, ref, oracle_grouping, grouping), ref, mix, filter_len,
                               with_sdr, extra, sample_rate)
