"""`masksep data check`: each problem it must find, on real wav files; what training does with them."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import soundfile as sf

from masksep import cli
from masksep.config import load_config
from masksep.data import build_dataset
from masksep.data.checks import check_folder
from masksep.data.export import synth
from masksep.data.problems import DataCheckError
from masksep.errors import UserError

NAME = "synthte00001.wav"  # the item every case breaks


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "Libri2Mix" / "wav8k" / "min"
    synth(root, "librimix", "test", 3, seconds=0.5, seed=5)
    return root


def read(path):
    x, rate = sf.read(str(path), dtype="float32")
    return x, rate


def corrupt(root):
    path = root / "test" / "s1" / NAME
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really a wav file" * 3)
    return path, "not a readable audio file"


def empty(root):
    path = root / "test" / "s2" / NAME
    sf.write(str(path), np.zeros(0, dtype=np.float32), 8000, subtype="PCM_16")
    return path, "empty file (0 samples)"


def nan(root):
    path = root / "test" / "s1" / NAME
    x, rate = read(path)
    x[100] = np.nan
    sf.write(str(path), x, rate, subtype="FLOAT")
    return path, "1 NaN/Inf samples (the first at 0.013 s)"


def inf(root):
    path = root / "test" / "mix_clean" / NAME
    x, rate = read(path)
    x[10:12] = np.inf
    sf.write(str(path), x, rate, subtype="FLOAT")
    return path, "2 NaN/Inf samples"


def wrong_rate(root):
    path = root / "test" / "s2" / NAME
    x, _ = read(path)
    sf.write(str(path), x, 16000, subtype="PCM_16")
    return path, "sample rate is 16000 Hz, expected 8000 Hz"


def stereo(root):
    path = root / "test" / "mix_clean" / NAME
    x, rate = read(path)
    sf.write(str(path), np.stack([x, x], axis=1), rate, subtype="PCM_16")
    return path, "has 2 channels, expected 1 (mono)"


def short_source(root):
    path = root / "test" / "s1" / NAME
    x, rate = read(path)
    sf.write(str(path), x[:-80], rate, subtype="PCM_16")
    return path, f"has {x.shape[0] - 80} samples but its mixture {NAME} has {x.shape[0]}"


def not_the_sum(root):
    path = root / "test" / "s2" / NAME
    x, rate = read(path)
    sf.write(str(path), 0.5 * x, rate, subtype="PCM_16")
    return root / "test" / "mix_clean" / NAME, "is not the sum of its sources"


def missing_file(root):
    path = root / "test" / "s2" / NAME
    path.unlink()
    return path, "file not found (listed in mixture_test_mix_clean.csv line 3)"


def wrong_csv_length(root):
    path = root / "metadata" / "mixture_test_mix_clean.csv"
    rows = list(csv.reader(path.open()))
    rows[2][-1] = str(int(rows[2][-1]) + 5)
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return root / "test" / "mix_clean" / NAME, "but mixture_test_mix_clean.csv line 3 says length"


CASES = [corrupt, empty, nan, inf, wrong_rate, stereo, short_source, not_the_sum, missing_file,
         wrong_csv_length]


def test_a_clean_folder_passes(data, capsys):
    assert cli.main(["data", "check", str(data)]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("checked 9 files in 3 items in " + out.split(" in ")[-1].strip())
    assert "no problems" in out


@pytest.mark.parametrize("breaker", CASES, ids=lambda f: f.__name__)
def test_each_problem_is_found_and_named(data, breaker, capsys):
    path, words = breaker(data)
    assert cli.main(["data", "check", str(data)]) == 3
    out = capsys.readouterr().out.splitlines()
    problems, summary = out[:-1], out[-1]
    assert len(problems) == 1, out
    assert problems[0].startswith(f"{path}: ") and words in problems[0], problems[0]
    assert "1 problem in 1 of 3 items" in summary and "checked" in summary


def test_every_problem_is_listed_not_only_the_first(data, capsys):
    for breaker in (nan, wrong_rate):
        breaker(data)
    (data / "test" / "s1" / "synthte00002.wav").unlink()
    assert cli.main(["data", "check", str(data)]) == 3
    out = capsys.readouterr().out
    assert "NaN/Inf" in out and "16000 Hz" in out and "synthte00002.wav: file not found" in out
    assert "3 problems in 2 of 3 items" in out


def test_csv_without_a_source_column(data, capsys):
    path = data / "metadata" / "mixture_test_mix_clean.csv"
    rows = [r[:3] + r[4:] for r in csv.reader(path.open())]  # drop source_2_path
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(DataCheckError, match="missing column"):
        build_dataset(load_config(None, ["data.kind=librimix", f"data.root={data}"]), "test")


def test_a_noisy_mixture_is_the_sum_of_sources_and_noise(tmp_path, capsys):
    synth(tmp_path, "librimix", "test", 2, seconds=0.5, noise=True)
    assert cli.main(["data", "check", str(tmp_path)]) == 0
    path = tmp_path / "test" / "noise" / "synthte00000.wav"
    x, rate = read(path)
    sf.write(str(path), 0.3 * x, rate, subtype="PCM_16")
    assert cli.main(["data", "check", str(tmp_path)]) == 3
    out = capsys.readouterr().out
    assert "mix_both/synthte00000.wav: is not the sum of its sources and noise" in out


def test_wsj0mix_source_file_missing(tmp_path, capsys):
    synth(tmp_path, "wsj0mix", "tt", 2, seconds=0.3)
    (tmp_path / "tt" / "s2" / "synthte00001.wav").unlink()
    assert cli.main(["data", "check", str(tmp_path), "--split", "test"]) == 3
    assert f"{tmp_path / 'tt' / 's2' / 'synthte00001.wav'}: file not found" in capsys.readouterr().out


def test_utterance_folder_problems(tmp_path, capsys):
    synth(tmp_path, "utterances", "train", 4, seconds=0.3)
    bad = next((tmp_path / "train").rglob("*.wav"))
    sf.write(str(bad), np.array([0.1, np.nan, 0.2], dtype=np.float32), 8000, subtype="FLOAT")
    assert cli.main(["data", "check", str(tmp_path)]) == 3
    assert f"{bad}: 1 NaN/Inf samples" in capsys.readouterr().out


def test_headers_only_check_skips_the_sample_scan(data, capsys):
    nan(data)
    assert cli.main(["data", "check", str(data), "--headers-only"]) == 0
    wrong_rate(data)
    assert cli.main(["data", "check", str(data), "--headers-only"]) == 3


def cfg(root, *sets):
    return load_config(None, ["data.kind=librimix", f"data.root={root}", *sets])


def test_a_data_set_with_problems_is_refused_when_opened_with_the_list(data):
    nan(data)
    missing_file(data)
    with pytest.raises(DataCheckError) as info:
        build_dataset(cfg(data), "test")
    err = info.value
    assert len(err.problems) == 2 and "\n" not in str(err)
    assert "2 data problem(s) in 1 of 3 items" in str(err) and "--skip-bad" in str(err)


def test_skip_bad_leaves_the_bad_items_out_and_says_how_many(data, capsys):
    not_the_sum(data)
    ds = build_dataset(cfg(data, "data.skip_bad=true"), "test")
    assert len(ds) == 2 and ds.skipped == 1
    assert [ds.item_name(i) for i in range(2)] == ["synthte00000", "synthte00002"]
    assert "skipping 1 of 3 items with problems" in capsys.readouterr().err


def test_headers_level_finds_a_bad_sample_when_read_as_one_clear_error(data):
    nan(data)
    ds = build_dataset(cfg(data, "data.check=headers"), "test")
    assert len(ds) == 3
    with pytest.raises(UserError, match=rf"s1/{NAME}: has NaN/Inf samples"):
        ds[1]
    skipping = build_dataset(cfg(data, "data.check=headers", "data.skip_bad=true"), "test")
    mix, _ = skipping[1]  # the next good item instead
    assert np.isfinite(mix.numpy()).all()


def test_train_refuses_a_bad_data_set_at_start_and_lists_the_problems(data, tmp_path, capsys):
    for split in ("train-360", "dev"):
        synth(data, "librimix", split, 2, seconds=0.5)
    empty(data)
    wrong_rate(data.parent.parent / "wav8k" / "min")  # a second problem, same item
    (data / "dev" / "s1" / "synthva00000.wav").unlink()
    args = ["train", "--config", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "run")]
    (tmp_path / "none.yaml").write_text(f"data: {{kind: librimix, root: {data}}}\n")
    assert cli.main(args) == 3  # the data check's code, not bad input's
    err = capsys.readouterr().err
    assert "synthva00000.wav: file not found" in err  # the validation split, opened at start
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    assert err.strip().splitlines()[-1].startswith("masksep: error: ")


def test_check_folder_counts_the_files_it_scanned(data):
    report = check_folder(data)
    assert report.n_files == 9 and report.n_items == 3 and not report.problems


def test_auto_check_reads_samples_of_small_sets_and_headers_of_large_ones(data, monkeypatch, capsys):
    import masksep.data.problems as problems

    nan(data)
    with pytest.raises(DataCheckError, match="NaN/Inf"):  # 3 short items: fully read
        build_dataset(cfg(data), "test")
    monkeypatch.setattr(problems, "AUTO_FULL_HOURS", 1e-4)  # 0.36 s: the set counts as large
    ds = build_dataset(cfg(data), "test")
    assert len(ds) == 3
    assert "checked the file headers only" in capsys.readouterr().err


def rewrite_csv(root, change):
    path = root / "metadata" / "mixture_test_mix_clean.csv"
    rows = list(csv.reader(path.open()))
    change(rows)
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)


def test_a_mixture_listed_twice_is_a_problem_of_the_second_row(data, capsys):
    rewrite_csv(data, lambda rows: rows.append(rows[1]))  # the same row again, as line 5
    assert cli.main(["data", "check", str(data)]) == 3
    out = capsys.readouterr().out.splitlines()
    mix = data / "test" / "mix_clean" / "synthte00000.wav"
    assert out[0] == (f"{mix}: repeats mixture ID 'synthte00000' (mixture_test_mix_clean.csv "
                      "line 5; first mixture_test_mix_clean.csv line 2)")
    assert "1 problem in 1 of 4 items" in out[-1]
    ds = build_dataset(cfg(data, "data.skip_bad=true"), "test")  # the first is kept
    assert len(ds) == 3 and [ds.item_name(i) for i in range(3)] == [
        "synthte00000", "synthte00001", "synthte00002"]
    with pytest.raises(DataCheckError, match="repeats mixture ID"):  # eval would count it twice
        build_dataset(cfg(data), "test")


def test_another_id_on_the_same_files_and_a_mixture_as_a_source_are_problems(data, capsys):
    mixture = [data / "test" / "mix_clean" / f"synthte0000{i}.wav" for i in range(3)]
    rewrite_csv(data, lambda rows: rows.append(["renamed", *rows[1][1:]]))  # line 2's files
    assert cli.main(["data", "check", str(data)]) == 3
    out = capsys.readouterr().out.splitlines()
    assert out[:-1] == [f"{mixture[0]}: is listed again (mixture_test_mix_clean.csv line 5; "
                        "first mixture_test_mix_clean.csv line 2)"]
    assert "1 problem in 1 of 4 items" in out[-1]
    # line 5 takes line 2's mixture as its first source
    rewrite_csv(data, lambda rows: rows.__setitem__(4, ["crossed", str(data / "x.wav"), str(mixture[0]),
                                                        *rows[2][3:]]))
    assert cli.main(["data", "check", str(data)]) == 3
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"{mixture[0]}: is a source here (mixture_test_mix_clean.csv line 5) and the "
                      "mixture in mixture_test_mix_clean.csv line 2")


def test_a_source_shared_by_two_mixtures_is_no_problem(data, capsys):
    import shutil

    def change(rows):  # mixture 3 = source 1 of mixture 1 + source 2 of mixture 3, rewritten
        rows[3][2] = rows[1][2]
    rewrite_csv(data, change)
    s1 = read(data / "test" / "s1" / "synthte00000.wav")[0]
    s2, rate = read(data / "test" / "s2" / "synthte00002.wav")
    n = min(len(s1), len(s2))
    sf.write(str(data / "test" / "s2" / "synthte00002.wav"), s2[:n], rate, subtype="FLOAT")
    sf.write(str(data / "test" / "mix_clean" / "synthte00002.wav"), s1[:n] + s2[:n], rate, subtype="FLOAT")
    rewrite_csv(data, lambda rows: rows[3].__setitem__(4, str(n)))
    shutil.rmtree(data / "test" / "mix_both", ignore_errors=True)
    assert cli.main(["data", "check", str(data)]) == 0, capsys.readouterr().out


def test_wsj0mix_mixtures_that_are_one_file_through_a_link_are_found(tmp_path, capsys):
    synth(tmp_path, "wsj0mix", "tt", 2, seconds=0.3)
    for sub in ("mix", "s1", "s2"):
        (tmp_path / "tt" / sub / "zlink.wav").symlink_to(tmp_path / "tt" / sub / "synthte00000.wav")
    assert cli.main(["data", "check", str(tmp_path), "--split", "test"]) == 3
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"{tmp_path / 'tt' / 'mix' / 'zlink.wav'}: is listed again (tt/mix/zlink.wav; "
                      "first tt/mix/synthte00000.wav)")
    assert "1 problem in 1 of 3 items" in out[-1]
