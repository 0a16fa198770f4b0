"""`masksep separate`: wav files in, one wav per source out; chunked inference on long inputs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from masksep import cli
from masksep.data.synthetic import SyntheticMixtures
from masksep.separate import ChunkedSeparator, best_permutation, fades, separate_files

sys.path.insert(0, str(Path(__file__).parent))
from tiny import save_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    cfg, model = save_checkpoint(path)
    return path, model


def speech(seconds, rate=8000, seed=0):
    ds = SyntheticMixtures("test", 1, 2, rate, seconds, seed)
    return ds[0][0].numpy()


def whole(model, x):
    with torch.inference_mode():
        return model(torch.from_numpy(x)[None])[0].numpy()


def si_snr_db(est, ref):
    est, ref = est - est.mean(), ref - ref.mean()
    target = np.dot(est, ref) / np.dot(ref, ref) * ref
    return 10 * np.log10(np.dot(target, target) / np.dot(est - target, est - target))


def test_short_input_writes_one_float_wav_per_source(ckpt, tmp_path, capsys):
    path, model = ckpt
    x = speech(1.5)
    sf.write(str(tmp_path / "talk.wav"), x, 8000, subtype="PCM_16")
    x16, _ = sf.read(str(tmp_path / "talk.wav"), dtype="float32")
    rc = cli.main(["separate", "--checkpoint", str(path), str(tmp_path / "talk.wav"),
                   "--out-dir", str(tmp_path / "out"), "--threads", "1"])
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["talk_s1.wav", "talk_s2.wav"]
    ref = whole(model, x16)
    for k in (1, 2):
        info = sf.info(str(tmp_path / "out" / f"talk_s{k}.wav"))
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (8000, 1, 12000, "FLOAT")
        y, _ = sf.read(str(tmp_path / "out" / f"talk_s{k}.wav"), dtype="float32")
        np.testing.assert_allclose(y, ref[k - 1], atol=1e-5)  # one chunk: the model's own output
    assert '"chunks": 1' in capsys.readouterr().out


class FlipEveryOtherCall(torch.nn.Module):
    """The tiny model, with its outputs in reverse order on every other chunk,
    and on the second channel of a batch: as a PIT-trained model may do."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.calls = 0

    def forward(self, mix):
        y = self.model(mix)
        self.calls += 1
        if self.calls % 2 == 0:
            y = y.flip(1)
        if y.shape[0] > 1:
            y[1] = y[1].flip(0)
        return y


def separate_array(model, x, rate, model_rate=8000, chunk_s=2.0, overlap_s=0.5):
    """Run the chunked separator on x (channels, T) through real wav files."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        inp = Path(d) / "in.wav"
        sf.write(str(inp), x.T, rate, subtype="FLOAT")
        sep = ChunkedSeparator(model, model_rate, "cpu", chunk_s, overlap_s)
        outs = [Path(d) / f"s{k}.wav" for k in range(2)]
        with sf.SoundFile(str(inp)) as reader:
            writers = [sf.SoundFile(str(p), "w", rate, x.shape[0], "FLOAT") for p in outs]
            chunks = sep.run(reader, writers)
            for w in writers:
                w.close()
        return np.stack([sf.read(str(p), dtype="float32", always_2d=True)[0].T for p in outs]), chunks


def test_long_input_in_chunks_matches_the_whole_input_despite_order_flips(ckpt):
    _, model = ckpt
    x = speech(13.3)
    ref = whole(model, x)
    flipping = FlipEveryOtherCall(model)
    y, chunks = separate_array(flipping, x[None], 8000)
    assert chunks == 9 and flipping.calls == 9  # 2 s chunks, 1.5 s hop
    assert y.shape == (2, 1, x.shape[0])
    for k in range(2):
        # The tiny TCN sees ~15 ms of context, but its global layer norm takes its
        # statistics over the whole input (each chunk, here): close, not identical.
        assert si_snr_db(y[k, 0], ref[k]) > 25
    # without the alignment the flipped chunks would swap the talkers every 1.5 s
    assert best_permutation(ref[:, None, :4000], y[:, :, :4000]).tolist() == [0, 1]


def test_multichannel_input_is_separated_per_channel_in_one_order(ckpt):
    _, model = ckpt
    x = speech(5.0, seed=1)
    stereo = np.stack([x, np.roll(x, 3) * 0.7])
    y, _ = separate_array(FlipEveryOtherCall(model), stereo, 8000)
    assert y.shape == (2, 2, x.shape[0])
    ref0, ref1 = whole(model, stereo[0]), whole(model, stereo[1])
    for k in range(2):
        assert si_snr_db(y[k, 0], ref0[k]) > 25 and si_snr_db(y[k, 1], ref1[k]) > 25


def test_input_at_another_rate_is_resampled_in_and_out(ckpt, tmp_path):
    path, model = ckpt
    x8 = speech(2.0)
    from masksep.data.audio import resample

    x16 = resample(x8, 8000, 16000)
    sf.write(str(tmp_path / "wide.wav"), x16, 16000, subtype="FLOAT")
    results = separate_files(path, [tmp_path / "wide.wav"], tmp_path / "out", threads=1)
    assert results[0]["sample_rate"] == 16000 and results[0]["model_rate"] == 8000
    y, rate = sf.read(str(tmp_path / "out" / "wide_s1.wav"), dtype="float32")
    assert rate == 16000 and y.shape == (32000,)
    ref = resample(whole(model, resample(x16, 16000, 8000)), 8000, 16000)  # one chunk
    np.testing.assert_allclose(y, ref[0], atol=1e-5)


def test_many_inputs_in_one_call(ckpt, tmp_path):
    path, _ = ckpt
    for name in ("a", "b"):
        sf.write(str(tmp_path / f"{name}.wav"), speech(0.5), 8000)
    assert cli.main(["separate", "--checkpoint", str(path), str(tmp_path / "a.wav"),
                     str(tmp_path / "b.wav"), "--out-dir", str(tmp_path / "o")]) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "a_s1.wav", "a_s2.wav", "b_s1.wav", "b_s2.wav"]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("masksep: error: "), err
    return err[0]


@pytest.mark.parametrize("problem", ["missing", "corrupt", "not masksep", "incompatible"])
def test_bad_checkpoint_is_one_line_exit_2(problem, ckpt, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    if problem == "corrupt":
        bad.write_bytes(b"\x80\x02not a torch file at all")
    elif problem == "not masksep":
        torch.save({"weights": torch.zeros(3)}, bad)
    elif problem == "incompatible":
        cfg, model = save_checkpoint(bad)
        state = torch.load(bad, weights_only=True)
        state["config"]["encoder"]["n_filters"] = 32  # weights of another model
        torch.save(state, bad)
    sf.write(str(tmp_path / "in.wav"), speech(0.3), 8000)
    rc = cli.main(["separate", "--checkpoint", str(bad), str(tmp_path / "in.wav"),
                   "--out-dir", str(tmp_path / "out")])
    assert rc == 2
    line = one_error_line(capsys)
    assert str(bad) in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_oracle_grouping_is_refused(tmp_path, capsys):
    save_checkpoint(tmp_path / "og.pt", "head.kind=og", "head.oversep=4", "head.grouping=oracle")
    sf.write(str(tmp_path / "in.wav"), speech(0.3), 8000)
    rc = cli.main(["separate", "--checkpoint", str(tmp_path / "og.pt"), str(tmp_path / "in.wav"),
                   "--out-dir", str(tmp_path / "out")])
    assert rc == 2 and "oracle grouping" in one_error_line(capsys)
    save_checkpoint(tmp_path / "learned.pt", "head.kind=og", "head.oversep=4", "head.grouping=learned")
    assert cli.main(["separate", "--checkpoint", str(tmp_path / "learned.pt"), str(tmp_path / "in.wav"),
                     "--out-dir", str(tmp_path / "out")]) == 0
    assert len(list((tmp_path / "out").glob("in_s*.wav"))) == 2


def test_bad_inputs_fail_before_any_output(ckpt, tmp_path, capsys):
    path, _ = ckpt
    good = tmp_path / "good.wav"
    sf.write(str(good), speech(0.5), 8000)
    out = tmp_path / "out"
    assert cli.main(["separate", "--checkpoint", str(path), str(good), str(tmp_path / "nope.wav"),
                     "--out-dir", str(out)]) == 2
    assert "nope.wav: file not found" in one_error_line(capsys)
    assert not out.exists()  # checked before the first input was separated
    (tmp_path / "junk.wav").write_bytes(b"junk" * 10)
    assert cli.main(["separate", "--checkpoint", str(path), str(tmp_path / "junk.wav"),
                     "--out-dir", str(out)]) == 2
    assert "junk.wav: not a readable audio file" in one_error_line(capsys)
    nan = speech(3.0)
    nan[20000] = np.nan
    sf.write(str(tmp_path / "nan.wav"), nan, 8000, subtype="FLOAT")
    assert cli.main(["separate", "--checkpoint", str(path), str(tmp_path / "nan.wav"),
                     "--out-dir", str(out), "--chunk-s", "1"]) == 2
    assert "nan.wav: NaN/Inf samples (the first near 2.50 s)" in one_error_line(capsys)
    assert list(out.iterdir()) == []  # no half-written file, no temporary left behind


def test_same_stem_twice_is_refused(ckpt, tmp_path, capsys):
    path, _ = ckpt
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        sf.write(str(tmp_path / d / "talk.wav"), speech(0.3), 8000)
    assert cli.main(["separate", "--checkpoint", str(path), str(tmp_path / "x" / "talk.wav"),
                     str(tmp_path / "y" / "talk.wav"), "--out-dir", str(tmp_path / "o")]) == 2
    assert "would write talk_s1.wav" in one_error_line(capsys)


def test_fades_sum_to_one_and_permutation_by_correlation():
    fin, fout = fades(100)
    np.testing.assert_allclose(fin + fout, 1.0, atol=1e-6)
    assert fin[0] < 0.01 and fin[-1] > 0.99
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((3, 500))
    out = ref[[2, 0, 1]] * np.array([[0.5], [2.0], [1.0]]) + 0.1 * rng.standard_normal((3, 500))
    perm = best_permutation(ref, out)
    assert perm.tolist() == [1, 2, 0] and np.allclose(out[perm][0] / 2.0, ref[0], atol=0.2)


def test_bad_chunk_settings_are_one_line(ckpt, tmp_path, capsys):
    path, _ = ckpt
    sf.write(str(tmp_path / "in.wav"), speech(0.3), 8000)
    assert cli.main(["separate", "--checkpoint", str(path), str(tmp_path / "in.wav"),
                     "--out-dir", str(tmp_path / "o"), "--chunk-s", "2", "--overlap-s", "1.5"]) == 2
    assert "--overlap-s" in one_error_line(capsys)
