"""The embedded synthetic data set: reproducible, disjoint splits, speech-like, well scaled."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from masksep.config import from_dict
from masksep.data import build_dataset
from masksep.data.synthetic import (
    PEAK,
    SPLITS,
    SyntheticMixtures,
    item_rng,
    make_source,
    pick_speakers,
    speaker_pool,
    split_speakers,
)


def frame_energy_db(x: np.ndarray, sr: int, frame_s: float = 0.02) -> np.ndarray:
    n = int(frame_s * sr)
    frames = x[: len(x) // n * n].reshape(-1, n)
    e = (frames.astype(np.float64) ** 2).sum(axis=1)
    return 10 * np.log10(e / e.max() + 1e-20)


def test_items_are_reproducible_whatever_the_reading_order():
    ds = SyntheticMixtures("train", 10, seconds=0.5, seed=3)
    mix4, src4 = ds[4]
    ds[7], ds[1]  # reading others in between must not change item 4
    again = SyntheticMixtures("train", 10, seconds=0.5, seed=3)[4]
    assert torch.equal(mix4, again[0]) and torch.equal(src4, again[1])
    assert torch.equal(mix4, ds[-6][0])
    assert not torch.allclose(mix4, ds[5][0])
    assert not torch.allclose(mix4, SyntheticMixtures("train", 10, seconds=0.5, seed=4)[4][0])


def test_splits_have_disjoint_speakers_and_different_items():
    sets = {split: {s.index for s in split_speakers(split)} for split in SPLITS}
    assert all(len(s) >= 10 for s in sets.values())
    assert not sets["train"] & sets["valid"]
    assert not sets["train"] & sets["test"]
    assert not sets["valid"] & sets["test"]
    # every mixture of a split only uses that split's speakers, each at most once
    for split in SPLITS:
        for i in range(30):
            chosen = pick_speakers(item_rng(0, split, i), split_speakers(split), 3)
            ids = [s.index for s in chosen]
            assert set(ids) <= sets[split] and len(set(ids)) == 3
    # separate random streams per split, not only separate speakers
    draws = [item_rng(0, split, 1).random() for split in SPLITS]
    assert len(set(draws)) == 3
    items = [SyntheticMixtures(split, 2, seconds=0.5)[1][0] for split in SPLITS]
    assert not torch.allclose(items[0], items[1]) and not torch.allclose(items[1], items[2])


def test_speaker_pool_is_fixed_and_speaker_like():
    pool = speaker_pool()
    assert pool is speaker_pool()
    f0 = np.array([s.f0 for s in pool])
    assert f0.min() >= 80 and f0.max() <= 300
    assert (f0 < 150).mean() > 0.25 and (f0 > 180).mean() > 0.25  # low and high voices
    rates = np.array([s.rate for s in pool])
    assert rates.min() >= 3 and rates.max() <= 6


def test_three_pairs_in_four_are_mixed_gender():
    speakers = split_speakers("train")
    cross, close = [], []
    for i in range(200):
        a, b = pick_speakers(item_rng(0, "train", i), speakers, 2)
        cross.append((a.group == 0) != (b.group == 0))
        close.append(abs(np.log(a.f0 / b.f0)) < np.log(1.1))
    assert 0.65 < np.mean(cross) < 0.85
    assert np.mean(close) > 0.04  # some voices are close in pitch: hard to tell apart


def test_mixture_is_the_sum_of_sources_finite_and_below_full_scale():
    ds = SyntheticMixtures("valid", 12, n_src=2, seconds=1.0, seed=1)
    for i in range(len(ds)):
        mix, sources = ds[i]
        assert mix.dtype == torch.float32 and sources.dtype == torch.float32
        assert mix.shape == (8000,) and sources.shape == (2, 8000)
        assert torch.isfinite(sources).all()
        assert torch.allclose(mix, sources.sum(0), atol=1e-6)
        assert mix.abs().max() <= PEAK + 1e-6 < 1
        assert sources.abs().max() <= PEAK + 1e-6
        assert (sources.pow(2).mean(1) > 0).all()


def test_relative_levels_stay_within_5_db():
    ds = SyntheticMixtures("train", 40, n_src=2, seconds=0.5, seed=2)
    ratios = []
    for i in range(len(ds)):
        _, s = ds[i]
        e = s.double().pow(2).sum(1)
        ratios.append(10 * torch.log10(e[0] / e[1]).item())
    ratios = np.array(ratios)
    assert np.abs(ratios).max() <= 5.0 + 1e-3
    assert np.abs(ratios).max() > 3.0  # levels do differ
    assert (ratios > 0).any() and (ratios < 0).any()  # either source may be louder


def test_voiced_speech_is_harmonic_at_the_speakers_pitch():
    sr = 8000
    fl = int(0.04 * sr)
    for speaker in split_speakers("test")[:6]:
        x = make_source(np.random.default_rng(0), 2 * sr, sr, speaker)
        assert np.isclose(np.sqrt(np.mean(x**2)), 1.0)
        frames = x[: len(x) // fl * fl].reshape(-1, fl)
        loudest = frames[np.argsort((frames**2).sum(1))[-5:]]  # inside vowels
        for f in loudest:
            f = f - f.mean()
            ac = np.correlate(f, f, "full")[fl - 1 :]
            ac /= ac[0]
            lo, hi = sr // 500, sr // 60
            lag = lo + int(np.argmax(ac[lo:hi]))
            assert ac[lag] > 0.5  # periodic
            assert speaker.f0 / 1.8 < sr / lag < speaker.f0 * 1.8
        power = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.fft.rfftfreq(len(x), 1 / sr)
        assert power[freqs < 1500].sum() > 0.6 * power.sum()  # speech-like spectral balance


def test_sources_have_pauses_and_activity():
    ds = SyntheticMixtures("test", 8, n_src=2, seconds=2.0, seed=0)
    quiet = []
    for i in range(len(ds)):
        _, sources = ds[i]
        for s in sources.numpy():
            db = frame_energy_db(s, 8000)
            quiet.append((db < -40).mean())
            assert (db > -20).mean() > 0.3  # mostly talking
    assert np.mean(quiet) > 0.05  # pauses and closures
    assert max(quiet) > 0.15


def test_three_sources_and_16_khz():
    mix, sources = SyntheticMixtures("train", 2, n_src=3, sample_rate=16000, seconds=0.75)[1]
    assert mix.shape == (12000,) and sources.shape == (3, 12000)
    assert torch.allclose(mix, sources.sum(0), atol=1e-6)
    power = np.abs(np.fft.rfft(mix.double().numpy())) ** 2
    freqs = np.fft.rfftfreq(12000, 1 / 16000)
    # fricatives reach above the 8 kHz band's Nyquist: not an upsampled 8 kHz signal
    assert power[freqs > 4500].sum() > 1e-4 * power.sum()
    _, odd = SyntheticMixtures("valid", 1, sample_rate=11025, seconds=0.3)[0]
    assert odd.shape == (2, round(0.3 * 11025)) and torch.isfinite(odd).all()


def test_default_collate_batches_items():
    ds = SyntheticMixtures("train", 6, seconds=0.25)
    mix, sources = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert mix.shape == (3, 2000) and sources.shape == (3, 2, 2000)


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        SyntheticMixtures("dev", 3)
    with pytest.raises(IndexError):
        SyntheticMixtures("train", 3, seconds=0.25)[3]
    with pytest.raises(ValueError, match="n_src"):
        SyntheticMixtures("valid", 3, n_src=100)


def test_build_dataset_honours_the_config():
    cfg = from_dict(
        {
            "seed": 5,
            "n_src": 3,
            "sample_rate": 16000,
            "data": {
                "train_items": 7,
                "segment_s": 0.5,
                "valid_items": 3,
                "test_items": 4,
                "eval_seconds": 0.25,
            },
        }
    )
    train, valid, test = (build_dataset(cfg, split) for split in SPLITS)
    assert (len(train), len(valid), len(test)) == (7, 3, 4)
    mix, sources = train[0]
    assert mix.shape == (8000,) and sources.shape == (3, 8000)
    assert valid[0][1].shape == (3, 4000) and test[0][1].shape == (3, 4000)
    assert torch.equal(mix, SyntheticMixtures("train", 7, 3, 16000, 0.5, seed=5)[0][0])
    assert {s.index for s in valid.speakers}.isdisjoint(s.index for s in train.speakers)


def test_training_mixtures_change_per_epoch_and_evaluation_sets_do_not():
    train = SyntheticMixtures("train", 3, seconds=0.5)
    first = train[0][0].clone()
    train.set_epoch(2)
    assert not torch.allclose(first, train[0][0])
    train.set_epoch(0)
    assert torch.equal(first, train[0][0])
    valid = SyntheticMixtures("valid", 3, seconds=0.5)
    before = valid[1][0].clone()
    valid.set_epoch(5)
    assert torch.equal(before, valid[1][0])
