import sys

import mir_eval.separation
import numpy as np
import pytest
import torch

from masksep.errors import UserError
from masksep.losses import si_snr
from masksep.metrics import (
    bss_eval,
    check_perceptual_rate,
    evaluate,
    improvement_metrics,
    perceptual,
    require_metrics,
    sdr,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sdr_least_squares(est: np.ndarray, ref: np.ndarray, filter_len: int) -> float:
    """SDR straight from its definition: project the padded estimate on the delayed references."""
    T = est.size
    n = T + filter_len - 1
    delayed = np.zeros((n, filter_len))
    for lag in range(filter_len):
        delayed[lag : lag + T, lag] = ref
    padded = np.concatenate([est, np.zeros(filter_len - 1)])
    coef, *_ = np.linalg.lstsq(delayed, padded, rcond=None)
    target = delayed @ coef
    return float(10 * np.log10(np.sum(target**2) / np.sum((padded - target) ** 2)))


@pytest.mark.parametrize(("T", "filter_len"), [(300, 1), (300, 16), (800, 512)])
def test_sdr_matches_direct_least_squares(T, filter_len):
    g = _gen(T + filter_len)
    ref = torch.randn(3, T, generator=g, dtype=torch.float64)
    # A filtered, noisy estimate with a DC offset: SDR keeps the mean, so the offset counts as distortion.
    kernel = torch.tensor([0.9, -0.3, 0.2], dtype=torch.float64)
    filtered = torch.nn.functional.conv1d(
        ref.unsqueeze(1), kernel.flip(0).view(1, 1, -1), padding=2
    )
    est = filtered[:, 0, :T] + 0.4 * torch.randn(3, T, generator=g, dtype=torch.float64) + 0.1
    got = sdr(est, ref, filter_len=filter_len)
    expected = [_sdr_least_squares(est[i].numpy(), ref[i].numpy(), filter_len) for i in range(3)]
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)


def _known_estimates(T: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """refs (2, T) and estimates (2, T) whose distortions SDR treats differently:
    source 0 delayed by 7 samples and coloured, plus noise (the filter is forgiven,
    the noise is not); source 1 with 20 % of source 0 leaked in and less noise."""
    rng = np.random.default_rng(seed)
    refs = rng.standard_normal((2, T))
    kernel = np.zeros(12)
    kernel[7:] = [1.0, 0.5, -0.3, 0.2, 0.1]
    est0 = np.convolve(refs[0], kernel)[:T] + 0.3 * rng.standard_normal(T)
    est1 = refs[1] + 0.2 * refs[0] + 0.05 * rng.standard_normal(T)
    return refs, np.stack([est0, est1])


@pytest.mark.filterwarnings("ignore::FutureWarning")  # bss_eval_sources is deprecated in mir_eval 0.8
@pytest.mark.parametrize(("T", "seed"), [(1000, 0), (4001, 1), (16000, 2)])
def test_sdr_agrees_with_mir_eval_bss_eval_sources(T, seed):
    """The field's reference implementation (BSS Eval v3, 512 taps), to 0.01 dB."""
    refs, est = _known_estimates(T, seed)
    expected, *_ = mir_eval.separation.bss_eval_sources(refs, est, compute_permutation=False)
    for dtype in (torch.float64, torch.float32):  # float32: as evaluation passes model outputs
        got = sdr(torch.from_numpy(est).to(dtype), torch.from_numpy(refs).to(dtype))
        np.testing.assert_allclose(got.double().numpy(), expected, atol=0.01, rtol=0)
    # The cases are not degenerate: a forgiven filter and two distinct levels.
    assert 3 < expected[0] < 25 and 10 < expected[1] < 30 and abs(expected[0] - expected[1]) > 1


def test_sdr_with_one_tap_is_si_snr_on_zero_mean_signals():
    g = _gen(1)
    ref = torch.randn(2, 3, 2000, generator=g)
    est = 0.7 * ref + torch.randn(2, 3, 2000, generator=g)
    ref, est = ref - ref.mean(-1, keepdim=True), est - est.mean(-1, keepdim=True)
    torch.testing.assert_close(sdr(est, ref, filter_len=1), si_snr(est, ref), atol=1e-4, rtol=0)
    # With more taps the projection space only grows, so SDR can only rise.
    assert (sdr(est, ref, filter_len=32) >= sdr(est, ref, filter_len=1) - 1e-5).all()


def test_sdr_forgives_a_short_filter_that_si_snr_punishes():
    g = _gen(2)
    T = 4000
    ref = torch.randn(2, T, generator=g)
    ref[:, -8:] = 0  # the filtered copy then fits inside T samples exactly
    kernel = torch.tensor([0.0, 0.5, 1.0, -0.6, 0.25])  # delay plus coloration
    est = torch.nn.functional.conv1d(ref.unsqueeze(1), kernel.flip(0).view(1, 1, -1), padding=4)[
        :, 0, :T
    ]
    assert (sdr(est, ref) > 80).all()
    assert (si_snr(est, ref) < 5).all()
    # With noise added, SDR is finite, and a gain on the estimate changes nothing.
    noisy = est + 0.3 * torch.randn(2, T, generator=g)
    assert (sdr(noisy, ref) < 25).all()
    torch.testing.assert_close(sdr(-3.0 * noisy, ref), sdr(noisy, ref), atol=1e-4, rtol=0)


def test_sdr_of_silent_reference_or_estimate_is_finite():
    ref = torch.randn(2, 500, generator=_gen(3))
    ref[1] = 0
    value = sdr(torch.randn(2, 500, generator=_gen(4)), ref, filter_len=64)
    assert torch.isfinite(value).all() and value[1] < -60
    assert sdr(torch.zeros(1, 500), ref[:1], filter_len=64).item() < -60


def test_improvement_of_the_mixture_itself_is_zero():
    g = _gen(5)
    ref = torch.randn(3, 2, 1600, generator=g)
    mix = ref.sum(dim=1)
    out = improvement_metrics(mix.unsqueeze(1).expand(-1, 2, -1), ref, mix, filter_len=64)
    assert set(out) == {"si_snr", "si_snri", "sdr", "sdri"}
    for key in ("si_snri", "sdri"):
        assert out[key].shape == (3,)
        torch.testing.assert_close(out[key], torch.zeros(3), atol=1e-5, rtol=0)
    # Two equal-power sources: the mixture sits near 0 dB SI-SNR against each.
    assert (out["si_snr"].abs() < 2).all()


def test_improvement_of_perfect_estimate_is_large():
    g = _gen(6)
    ref = torch.randn(2, 2, 1600, generator=g)
    mix = ref.sum(dim=1)
    out = improvement_metrics(
        ref + 1e-3 * torch.randn(2, 2, 1600, generator=g), ref, mix, filter_len=64
    )
    assert (out["si_snri"] > 50).all() and (out["sdri"] > 50).all()


def test_evaluate_aligns_permuted_and_grouped_estimates():
    g = _gen(7)
    B, C, T = 2, 2, 1600
    ref = torch.randn(B, C, T, generator=g)
    mix = ref.sum(dim=1)
    est = ref + 0.1 * torch.randn(B, C, T, generator=g)
    direct = improvement_metrics(est, ref, mix)
    swapped = evaluate(est.flip(1), ref, mix, oracle_grouping=False)
    for key in direct:
        torch.testing.assert_close(swapped[key], direct[key])
    # Overseparated: each source split into two parts, outputs shuffled; oracle grouping undoes it.
    parts = torch.rand(B, C, 1, generator=g)
    pieces = torch.cat(
        [est * parts, est * (1 - parts)], dim=1
    )  # outputs 0,1 -> sources 0,1; 2,3 -> 0,1
    order = torch.tensor([3, 0, 2, 1])
    grouped = evaluate(pieces[:, order], ref, mix, oracle_grouping=True)
    for key in direct:
        torch.testing.assert_close(grouped[key], direct[key], atol=1e-3, rtol=0)


def test_sdr_survives_torch_thread_setting():
    # Regression: MKL's batched LU failed ("Pivots given to lu_solve ...") once
    # torch.set_num_threads had been called, as every training run does.
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gen = torch.Generator().manual_seed(3)
        ref = torch.randn(8, 2, 4000, generator=gen)
        est = ref + 0.1 * torch.randn(8, 2, 4000, generator=gen)
        value = sdr(est, ref)
    finally:
        torch.set_num_threads(before)
    assert torch.isfinite(value).all()
    assert (value > 15).all()


# --------------------------------------------------------------------------- SIR and SAR


def _leaky_estimates(T: int, C: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """refs (C, T) and estimates with each kind of error BSS-eval tells apart: a
    filter (forgiven), the other sources leaked in (interference), noise (artefacts)."""
    rng = np.random.default_rng(seed)
    refs = rng.standard_normal((C, T))
    est = refs + 0.15 * np.roll(refs, 1, axis=0) + 0.05 * rng.standard_normal((C, T))
    est[0] = np.convolve(est[0], [0.0, 0.0, 1.0, 0.5, -0.2])[:T]
    return refs, est


@pytest.mark.filterwarnings("ignore::FutureWarning")  # bss_eval_sources is deprecated in mir_eval 0.8
@pytest.mark.parametrize(("T", "C", "seed"), [(1000, 2, 0), (4001, 2, 1), (3000, 3, 2)])
def test_bss_eval_agrees_with_mir_eval_on_sdr_sir_and_sar(T, C, seed):
    """mir_eval's bss_eval_sources (BSS Eval v3, 512 taps, no permutation), to 0.01 dB."""
    refs, est = _leaky_estimates(T, C, seed)
    expected = dict(zip(("sdr", "sir", "sar"),
                        mir_eval.separation.bss_eval_sources(refs, est, compute_permutation=False)[:3],
                        strict=True))
    for dtype in (torch.float64, torch.float32):
        got = bss_eval(torch.from_numpy(est).to(dtype), torch.from_numpy(refs).to(dtype))
        for key, value in expected.items():
            assert got[key].shape == (C,) and got[key].dtype == dtype
            np.testing.assert_allclose(got[key].double().numpy(), value, atol=0.01, rtol=0, err_msg=key)
    # Not degenerate: interference and artefacts at distinct levels, SDR below both.
    assert (expected["sir"] < expected["sar"] - 3).all()
    assert (expected["sdr"] < np.minimum(expected["sir"], expected["sar"])).all()
    # The SDR is sdr()'s, and a batch axis changes nothing.
    batch = bss_eval(torch.from_numpy(np.stack([est, est[:, ::-1].copy()])),
                     torch.from_numpy(np.stack([refs, refs[:, ::-1].copy()])))
    np.testing.assert_allclose(batch["sdr"][0].numpy(), sdr(torch.from_numpy(est), torch.from_numpy(refs)).numpy(),
                               atol=1e-9)
    np.testing.assert_allclose(batch["sir"][0].numpy(), expected["sir"], atol=0.01)


def test_bss_eval_splits_the_error_into_interference_and_artefacts():
    """1/SDR = 1/SIR + (1 + 1/SIR)/SAR in linear terms (the two errors are orthogonal),
    and an estimate with no other source in it has a far higher SIR than SAR."""
    g = _gen(8)
    ref = torch.randn(2, 2, 2000, generator=g, dtype=torch.float64)
    noisy = ref + 0.3 * torch.randn(2, 2, 2000, generator=g, dtype=torch.float64)
    out = bss_eval(noisy, ref, filter_len=32)
    lin = {k: 10 ** (-v / 10) for k, v in out.items()}
    torch.testing.assert_close(lin["sdr"], lin["sir"] + (1 + lin["sir"]) * lin["sar"], rtol=1e-6, atol=1e-9)
    assert (out["sir"] > out["sar"] + 15).all()
    leaky = ref + 0.3 * ref.flip(1)  # the other source leaked in, nothing else
    out = bss_eval(leaky, ref, filter_len=32)
    assert (out["sar"] > out["sir"] + 15).all() and (out["sir"] - 10.46).abs().max() < 1.0


def test_bss_eval_of_a_silent_reference_is_finite():
    ref = torch.randn(1, 2, 800, generator=_gen(9))
    ref[0, 1] = 0
    out = bss_eval(torch.randn(1, 2, 800, generator=_gen(10)), ref, filter_len=64)
    assert all(torch.isfinite(v).all() for v in out.values())


def test_improvement_metrics_add_sir_and_sar_on_request_only():
    g = _gen(11)
    ref = torch.randn(3, 2, 1600, generator=g)
    mix = ref.sum(dim=1)
    est = ref + 0.2 * ref.flip(1) + 0.1 * torch.randn(3, 2, 1600, generator=g)
    plain = improvement_metrics(est, ref, mix, filter_len=64)
    assert set(plain) == {"si_snr", "si_snri", "sdr", "sdri"}
    full = improvement_metrics(est, ref, mix, filter_len=64, extra=("sir", "sar"))
    assert set(full) == set(plain) | {"sir", "sar"}
    for key in plain:
        torch.testing.assert_close(full[key], plain[key], atol=1e-4, rtol=0)
    expected = bss_eval(est, ref, filter_len=64)
    torch.testing.assert_close(full["sir"], expected["sir"].mean(dim=1))
    torch.testing.assert_close(full["sar"], expected["sar"].mean(dim=1))


# --------------------------------------------------------------------------- PESQ and STOI


def _speech_like(sample_rate: int, seconds: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A test mixture's two sources from the synthetic talkers, and a noisy estimate of each."""
    from masksep.config import load_config
    from masksep.data import build_dataset

    cfg = load_config(None, [f"sample_rate={sample_rate}", "data.test_items=1",
                             f"data.eval_seconds={seconds}"])
    _, ref = build_dataset(cfg, "test")[0]
    ref = ref.double()
    est = ref + 0.3 * ref.flip(0) + 0.05 * torch.randn(ref.shape, generator=_gen(12), dtype=ref.dtype)
    return est, ref


@pytest.mark.parametrize(("sample_rate", "mode"), [(8000, "nb"), (16000, "wb")])
def test_pesq_is_the_pesq_packages_own_score(sample_rate, mode):
    pesq = pytest.importorskip("pesq", reason="the metrics extra (pip install 'masksep[metrics]') is not installed")
    est, ref = _speech_like(sample_rate)
    expected = [pesq.pesq(sample_rate, ref[c].numpy(), est[c].numpy(), mode) for c in range(2)]
    got = perceptual(est[None], ref[None], sample_rate, ["pesq"])["pesq"]
    assert got.shape == (1,)
    assert got.item() == pytest.approx(float(np.mean(expected)), abs=1e-5)
    assert 1.0 <= min(expected) < 4.6  # MOS-LQO, and a score the package did compute
    # The clean reference against itself scores higher than the degraded estimate.
    assert perceptual(ref[None], ref[None], sample_rate, ["pesq"])["pesq"].item() > got.item() + 0.5


def test_stoi_is_the_pystoi_packages_own_score():
    pystoi = pytest.importorskip("pystoi", reason="the metrics extra (pip install 'masksep[metrics]') is not installed")
    est, ref = _speech_like(8000)
    expected = [pystoi.stoi(ref[c].numpy(), est[c].numpy(), 8000, extended=False) for c in range(2)]
    got = perceptual(est[None], ref[None], 8000, ["stoi"])["stoi"]
    assert got.item() == pytest.approx(float(np.mean(expected)), abs=1e-5)
    assert 0.0 < min(expected) < 0.99
    assert perceptual(ref[None], ref[None], 8000, ["stoi"])["stoi"].item() == pytest.approx(1.0, abs=1e-4)


def test_a_missing_metrics_extra_is_one_line_with_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "pesq", None)  # what Python does for a package not installed
    with pytest.raises(UserError, match=r"^--pesq: PESQ needs the pesq package, .*pip install 'masksep\[metrics\]'$"):
        require_metrics(["sir", "sar", "pesq"])
    require_metrics(["sir", "sar"])  # SIR and SAR need no extra
    with pytest.raises(UserError, match="--pesq: PESQ needs 8000 or 16000 Hz audio, the data is 22050 Hz"):
        check_perceptual_rate(["pesq"], 22050)
    check_perceptual_rate(["stoi"], 22050)  # STOI resamples
