"""`masksep eval --data DIR` on corpus-layout folders, and the whole flow end to end:
data synth -> data check -> train -> eval -> separate, through the CLI entry point."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from masksep import cli
from masksep.data.export import synth

sys.path.insert(0, str(Path(__file__).parent))
import tiny  # noqa: E402


def save_checkpoint(path, *sets):
    tiny.save_checkpoint(path, "train.batch_size=2", *sets)
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("eval")
    synth(base / "Libri2Mix" / "wav8k" / "min", "librimix", "test", 3, seconds=0.6, max_seconds=1.2)
    synth(base / "wsj0-2mix", "wsj0mix", "tt", 2, seconds=0.6, seed=1)
    ckpt = save_checkpoint(base / "tiny.pt")
    return base, ckpt


def run_json(capsys, *args):
    assert cli.main(list(args)) == 0
    return json.loads(capsys.readouterr().out)


def test_eval_on_a_librimix_folder_per_file_and_mean(folders, capsys):
    base, ckpt = folders
    data = base / "Libri2Mix" / "wav8k" / "min"
    result = run_json(capsys, "eval", "--checkpoint", str(ckpt), "--data", str(data), "--json")
    assert result["data"] == "librimix" and result["items"] == 3
    names = [f["name"] for f in result["files"]]
    assert names == ["synthte00000", "synthte00001", "synthte00002"]
    for key in ("si_snri", "sdri", "sir", "sar", "si_snr", "sdr"):
        per_file = [f[key] for f in result["files"]]
        assert result[key] == pytest.approx(np.mean(per_file), abs=1e-3)
        assert all(np.isfinite(per_file))
    assert result["oracle_grouping"] is False and "note" not in result
    # the table: a header, one row per file, the mean
    assert cli.main(["eval", "--checkpoint", str(ckpt), "--data", str(data)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].split() == ["file", "si_snri", "sdri", "sir", "sar", "si_snr", "sdr"]
    assert [row.split()[0] for row in lines[2:]] == names + ["mean"]
    assert float(lines[-1].split()[1]) == pytest.approx(result["si_snri"], abs=0.006)


def test_eval_on_a_wsj0mix_folder(folders, capsys):
    base, ckpt = folders
    # the corpus folder: tt/ is found below 2speakers/wav8k/min or directly
    result = run_json(capsys, "eval", "--checkpoint", str(ckpt), "--data", str(base / "wsj0-2mix"), "--json")
    assert result["data"] == "wsj0mix" and [f["name"] for f in result["files"]] == [
        "synthte00000", "synthte00001"]


def test_eval_says_when_an_og_head_uses_oracle_grouping(folders, tmp_path, capsys):
    base, _ = folders
    ckpt = save_checkpoint(tmp_path / "og.pt", "head.kind=og", "head.oversep=3", "head.grouping=oracle")
    data = base / "Libri2Mix" / "wav8k" / "min"
    result = run_json(capsys, "eval", "--checkpoint", str(ckpt), "--data", str(data), "--json")
    assert result["oracle_grouping"] is True and "oracle grouping" in result["note"]
    assert cli.main(["eval", "--checkpoint", str(ckpt), "--data", str(data)]) == 0
    assert "# oracle grouping: outputs grouped with the references" in capsys.readouterr().out


def test_eval_data_errors_are_one_line(folders, tmp_path, capsys):
    _, ckpt = folders
    synth(tmp_path / "utts", "utterances", "test", 2, seconds=0.3)
    assert cli.main(["eval", "--checkpoint", str(ckpt), "--data", str(tmp_path / "utts" / "test")]) == 2
    assert "needs a LibriMix- or WSJ0-mix-layout folder" in capsys.readouterr().err
    synth(tmp_path / "lm", "librimix", "test", 2, seconds=0.3)
    (tmp_path / "lm" / "test" / "s1" / "synthte00001.wav").unlink()
    assert cli.main(["eval", "--checkpoint", str(ckpt), "--data", str(tmp_path / "lm")]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert "synthte00001.wav: file not found" in err[0]  # the list ...
    assert err[-1].startswith("masksep: error: ")  # ... then the one-line error


def test_eval_without_data_keeps_the_synthetic_one_line(folders, capsys):
    _, ckpt = folders
    result = run_json(capsys, "eval", "--checkpoint", str(ckpt),
                      "--set", "data.test_items=2", "--set", "data.eval_seconds=0.3")
    assert result["data"] == "synthetic" and result["items"] == 2 and "files" not in result


def read_csv(path):
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_eval_writes_a_row_per_mixture_and_the_means(folders, tmp_path, capsys):
    """--csv FILE and --out DIR: Asteroid's all_metrics.csv and final_metrics.json."""
    base, ckpt = folders
    data = base / "Libri2Mix" / "wav8k" / "min"
    args = ["eval", "--checkpoint", str(ckpt), "--data", str(data)]
    result = run_json(capsys, *args, "--json", "--csv", str(tmp_path / "rows" / "per_mix.csv"),
                      "--out", str(tmp_path / "ev"))
    rows = read_csv(tmp_path / "rows" / "per_mix.csv")
    assert list(rows[0]) == ["mixture_id", "si_snri", "sdri", "sir", "sar", "si_snr", "sdr"]
    assert [r["mixture_id"] for r in rows] == ["synthte00000", "synthte00001", "synthte00002"]
    for row, printed in zip(rows, result["files"], strict=True):
        for key in ("si_snri", "sdri", "sir", "sar"):
            assert float(row[key]) == pytest.approx(printed[key], abs=1e-4)
    assert (tmp_path / "ev" / "all_metrics.csv").read_text() == (tmp_path / "rows" / "per_mix.csv").read_text()
    summary = json.loads((tmp_path / "ev" / "final_metrics.json").read_text())
    assert summary == {k: v for k, v in result.items() if k != "files"}
    for key in ("si_snri", "sdri", "sir", "sar"):
        assert summary[key] == pytest.approx(np.mean([float(r[key]) for r in rows]), abs=1e-3)
    # The tiny random model leaks the other source and adds artefacts: SDR below both.
    assert all(float(r["sdr"]) < min(float(r["sir"]), float(r["sar"])) for r in rows)


def test_eval_of_a_runs_checkpoint_writes_into_the_run_folder(folders, tmp_path, capsys):
    base, _ = folders
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    save_checkpoint(run / "checkpoints" / "best.pt")
    (run / "config.yaml").write_text("{}\n")  # what marks a run folder
    result = run_json(capsys, "eval", "--checkpoint", str(run / "checkpoints" / "best.pt"),
                      "--set", "data.test_items=2", "--set", "data.eval_seconds=0.3")
    rows = read_csv(run / "eval" / "test" / "all_metrics.csv")
    assert [r["mixture_id"] for r in rows] == ["0", "1"]
    assert json.loads((run / "eval" / "test" / "final_metrics.json").read_text()) == result
    # another data set gets a folder of its own, named after it
    data = base / "Libri2Mix" / "wav8k" / "min"
    capsys.readouterr()
    assert cli.main(["eval", "--checkpoint", str(run / "checkpoints" / "best.pt"), "--data", str(data)]) == 0
    assert (run / "eval" / "Libri2Mix-wav8k-min-test" / "all_metrics.csv").is_file()
    assert "eval written to" in capsys.readouterr().err


def test_eval_adds_pesq_and_stoi_on_request(folders, tmp_path, capsys):
    pytest.importorskip("pesq", reason="the metrics extra (pip install 'masksep[metrics]') is not installed")
    pytest.importorskip("pystoi", reason="the metrics extra (pip install 'masksep[metrics]') is not installed")
    base, ckpt = folders
    data = base / "Libri2Mix" / "wav8k" / "min"
    result = run_json(capsys, "eval", "--checkpoint", str(ckpt), "--data", str(data), "--json",
                      "--pesq", "--stoi", "--csv", str(tmp_path / "m.csv"))
    rows = read_csv(tmp_path / "m.csv")
    assert list(rows[0])[-2:] == ["pesq", "stoi"]
    stoi = [float(r["stoi"]) for r in rows]
    assert all(0 <= v <= 1 for v in stoi) and result["stoi"] == pytest.approx(np.mean(stoi), abs=1e-3)
    pesq = [float(r["pesq"]) for r in rows]  # nan where PESQ found no speech
    scored = [v for v in pesq if v == v]
    assert result.get("pesq_missing", 0) == len(pesq) - len(scored)
    if scored:
        assert all(1.0 <= v <= 4.6 for v in scored)
        assert result["pesq"] == pytest.approx(np.mean(scored), abs=1e-3)


def test_eval_without_the_metrics_extra_is_one_line(folders, tmp_path, monkeypatch, capsys):
    _, ckpt = folders
    monkeypatch.setitem(sys.modules, "pystoi", None)  # as if the extra were not installed
    assert cli.main(["eval", "--checkpoint", str(ckpt), "--stoi", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["masksep: error: --stoi: STOI needs the pystoi package, not installed here: "
                   "pip install 'masksep[metrics]'"]
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_end_to_end_synth_check_train_eval_separate(tmp_path, capsys):
    data = tmp_path / "Libri2Mix" / "wav8k" / "min"
    for split, n in (("train", 6), ("valid", 2), ("test", 2)):
        assert cli.main(["data", "synth", "--out", str(data), "--split", split, "--num", str(n),
                         "--seconds", "0.6", "--max-seconds", "1.0"]) == 0
    assert cli.main(["data", "check", str(data)]) == 0
    assert "no problems" in capsys.readouterr().out

    config = tmp_path / "trial.yaml"
    config.write_text(
        f"data: {{kind: librimix, root: {data}, segment_s: 0.5}}\n"
        "train: {epochs: 1, max_steps_per_epoch: 2, batch_size: 2, threads: 1}\n"
    )
    run = tmp_path / "run"
    assert cli.main(["train", "--config", str(config), "--out", str(run)] + [f"--set={s}" for s in tiny.CHECKPOINT_MODEL]) == 0
    capsys.readouterr()
    best = run / "checkpoints" / "best.pt"
    assert best.is_file() and (run / "summary.json").is_file()

    result = run_json(capsys, "eval", "--checkpoint", str(best), "--data", str(data), "--json")
    assert result["items"] == 2 and len(result["files"]) == 2
    summary = json.loads((run / "summary.json").read_text())
    assert result["si_snri"] == pytest.approx(summary["test_si_snri"], abs=1e-3)  # same test split

    mix = data / "test" / "mix_clean" / "synthte00000.wav"
    assert cli.main(["separate", "--checkpoint", str(best), str(mix), "--out-dir", str(tmp_path / "sep")]) == 0
    outs = sorted((tmp_path / "sep").iterdir())
    assert [p.name for p in outs] == ["synthte00000_s1.wav", "synthte00000_s2.wav"]
    assert all(sf.info(str(p)).frames == sf.info(str(mix)).frames for p in outs)

    # a broken file now: training refuses at start, --skip-bad goes on and says how many
    (data / "train-360" / "s2" / "synthtr00003.wav").unlink()
    assert cli.main(["data", "check", str(data)]) == 3
    capsys.readouterr()
    args = ["train", "--config", str(config), "--out", str(tmp_path / "run2")] + [f"--set={s}" for s in tiny.CHECKPOINT_MODEL]
    assert cli.main(args) == 3
    assert "synthtr00003.wav: file not found" in capsys.readouterr().err
    assert cli.main(args + ["--skip-bad"]) == 0
    assert "skipping 1 of 6 items with problems" in capsys.readouterr().err
