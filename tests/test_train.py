"""The training loop and the one-trial CLI: learning, files, resume, divergence, errors."""

import json
import os
import sys
from pathlib import Path

import pytest
import torch
import yaml

from masksep import config as C
from masksep.cli import main
from masksep.data import build_dataset
from masksep.models.separator import build_model
from masksep.train import TrainingDiverged, evaluate, fit, load_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
import tiny  # noqa: E402

TINY = tiny.sets(tiny.MODEL) + [
    "data.segment_s=0.25", "data.train_items=16", "data.valid_items=4", "data.test_items=4",
    "data.eval_seconds=0.5", "train.batch_size=4", "train.epochs=2", "train.threads=1",
]


def tiny(*extra):
    return C.load_config(None, TINY + list(extra))


def write_config(path, overrides):
    data = {}
    for text in overrides:
        key, value = C.parse_override(text)
        C.set_dotted(data, key, value)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_a_short_training_run_raises_validation_si_snri(tmp_path):
    # A small STFT model: the quickest of our models to learn on two CPU cores.
    cfg = C.load_config(None, [
        "encoder.kind=stft", "encoder.kernel_size=512", "encoder.stride=128",
        "data.segment_s=2.0", "data.train_items=1200", "data.valid_items=16", "data.test_items=16",
        "train.batch_size=4", "train.epochs=2", "train.lr=1e-3", "train.threads=2",
    ])
    model = build_model(cfg)
    before, _ = evaluate(model, build_dataset(cfg, "valid"), torch.device("cpu"), batch_size=8)
    summary = fit(cfg, tmp_path)
    assert summary["best_val_si_snri"] > before["si_snri"] + 1.5, (before, summary)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    assert summary["test_si_snri"] > before["si_snri"] + 1.0


def test_fit_writes_every_file_and_the_checkpoint_is_self_contained(tmp_path):
    summary = fit(tiny(), tmp_path)
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (tmp_path / name).is_file(), name
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    for key in ("head", "depth", "width", "oversep", "grouping", "params", "macs_per_s",
                "head_macs_per_s", "best_val_si_snri", "test_si_snri", "test_sdri", "epochs",
                "wall_s", "seed", "git_sha"):
        assert key in on_disk, key
    assert on_disk["epochs"] == 2 and on_disk == json.loads(json.dumps(summary))
    ckpt = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert C.from_dict(ckpt["config"]) == C.load_config(tmp_path / "config.yaml")
    assert not list(tmp_path.rglob(".*.tmp*"))  # no half-written file left behind


def test_an_oracle_og_is_also_scored_with_a_grouping_fixed_on_validation(tmp_path):
    summary = fit(tiny("head.kind=og", "head.oversep=4", "head.grouping=oracle"), tmp_path)
    grouping = summary["fixed_grouping"]
    assert len(grouping) == 4 and grouping[0] == 0 and set(grouping) <= {0, 1}
    # per mixture the best assignment is the best grouping, so the mean cannot be lower
    assert summary["test_si_snri_fixed"] <= summary["test_si_snri"] + 1e-4
    assert "test_si_snri_fixed" not in fit(tiny(), tmp_path / "shallow")  # other heads: none


def test_resume_continues_where_the_run_stopped(tmp_path):
    fit(tiny("train.epochs=1"), tmp_path)
    first = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    summary = fit(tiny("train.epochs=3"), tmp_path, resume=True)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2, 3]  # epoch 1 is not trained twice
    assert lines[0] == first["history"][0]
    assert summary["epochs"] == 3
    # a run cannot be resumed as a different model
    with pytest.raises(Exception, match="cannot resume: head.kind"):
        fit(tiny("train.epochs=4", "head.kind=deep"), tmp_path, resume=True)


def test_a_run_resumed_elsewhere_after_its_best_epoch_is_tested_on_its_best_weights(tmp_path):
    # Epochs 1-2 train; the run is then "killed" and resumed on another node, which
    # has nothing but last.pt (the trial folder in storage). Its recorded best score
    # is set out of reach, so that epoch 3 cannot improve on it: the test must use
    # the best epoch's weights, which only last.pt carries there.
    fit(tiny("train.epochs=2"), tmp_path / "node1")
    ckpt = load_checkpoint(tmp_path / "node1" / "checkpoints" / "last.pt")
    ckpt["best_val"] = 1e9
    last = tmp_path / "storage" / "last.pt"
    last.parent.mkdir()
    torch.save(ckpt, last)
    summary = fit(tiny("train.epochs=3"), tmp_path / "node2", resume_from=last)
    assert summary["epochs"] == 3 and summary["best_epoch"] <= 2, summary
    best = load_checkpoint(tmp_path / "node2" / "checkpoints" / "best.pt")
    final = load_checkpoint(tmp_path / "node2" / "checkpoints" / "last.pt")
    assert best["epoch"] == summary["best_epoch"]
    assert any(not torch.equal(best["model"][k], final["model"][k]) for k in best["model"])
    cfg = tiny("train.epochs=3")
    model = build_model(cfg)
    model.load_state_dict(best["model"])
    scores, _ = evaluate(model, build_dataset(cfg, "test"), torch.device("cpu"), batch_size=4,
                         with_sdr=True)
    assert summary["test_si_snri"] == pytest.approx(scores["si_snri"], abs=1e-4)
    assert summary["test_sdri"] == pytest.approx(scores["sdri"], abs=1e-4)
    assert summary["train_steps"] == 3 * (16 // 4) and summary["train_audio_s"] == pytest.approx(3 * 16 * 0.25)


def test_a_diverging_run_stops_with_a_clear_error(tmp_path):
    with pytest.raises(TrainingDiverged, match="loss is"):
        fit(tiny("train.lr=1e12", "train.clip_grad=0", "train.epochs=3"), tmp_path)


def test_cli_train_eval_and_complexity(tmp_path, capsys):
    cfg_path = write_config(tmp_path / "tiny.yaml", TINY)
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg_path), "--set", "train.epochs=1", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(printed) == {"test_si_snri", "test_sdri", "best_val_si_snri"}

    # the same folder again without --resume is refused, and nothing changes
    before = (out / "metrics.jsonl").read_text()
    assert main(["train", "--config", str(cfg_path), "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "metrics.jsonl").read_text() == before

    assert main(["eval", "--checkpoint", str(out / "checkpoints" / "best.pt")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["items"] == 4 and "si_snri" in result and "sdri" in result

    assert main(["complexity", "--config", str(cfg_path)]) == 0
    numbers = json.loads(capsys.readouterr().out)
    assert {"params", "head_params", "macs_per_s", "head_macs_per_s"} <= set(numbers)
    assert numbers["params"] == sum(p.numel() for p in build_model(tiny()).parameters())


@pytest.mark.parametrize(
    "args, words",
    [
        (["--set", "head.depth=0"], "head.depth: must be >= 1"),
        (["--set", "head.kind=og", "--set", "head.oversep=1"], "head.oversep: must be >= n_src"),
        (["--set", "encoder.stride=99"], "encoder.stride: must be between 1 and 16"),
        (["--set", "head.colour=red"], "head.colour: unknown field"),
        (["--set", "train.lr=fast"], "train.lr: expected a number"),
    ],
)
def test_cli_bad_config_is_one_line_and_writes_nothing(tmp_path, capsys, args, words):
    cfg_path = write_config(tmp_path / "tiny.yaml", TINY)
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg_path), *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert words in err and err.startswith("masksep: error:") and err.count("\n") == 1
    assert not out.exists()


def test_an_empty_config_file_is_refused_and_no_config_means_the_defaults(tmp_path, capsys):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert main(["train", "--config", str(empty), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "empty.yaml: file: is empty; give a config or omit --config for the defaults" in err
    assert err.count("\n") == 1 and not (tmp_path / "r").exists()


def test_oracle_grouping_beyond_the_losses_limit_is_a_config_error(tmp_path, capsys):
    from masksep.losses import OG_MAX_ASSIGNMENTS

    cfg_path = write_config(tmp_path / "tiny.yaml", TINY + ["head.kind=og", "head.grouping=oracle"])
    args = ["train", "--config", str(cfg_path), "--set", "head.oversep=21", "--out", str(tmp_path / "r")]
    assert 2**21 > OG_MAX_ASSIGNMENTS and main(args) == 2
    err = capsys.readouterr().err
    assert "head.oversep: oracle grouping scores all n_src^oversep = 2^21" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()
    # learned grouping has no such limit, and the limit itself trains
    C.load_config(cfg_path, ["head.oversep=21", "head.grouping=learned"])
    C.load_config(cfg_path, ["head.oversep=20"])


def test_cli_missing_files_and_bad_checkpoints(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "r")]) == 2
    assert "none.yaml: file: not found" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(tmp_path / "r")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["eval", "--checkpoint", str(bad)]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    assert main(["eval", "--checkpoint", str(other)]) == 2
    assert "not a masksep checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_checkpoint_whose_weights_do_not_fit_its_config(tmp_path, capsys):
    fit(tiny("train.epochs=1"), tmp_path / "run")
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    ckpt["config"]["head"]["kind"] = "deep"
    ckpt["config"]["head"]["depth"] = 2
    torch.save(ckpt, tmp_path / "mismatch.pt")
    assert main(["eval", "--checkpoint", str(tmp_path / "mismatch.pt")]) == 2
    assert "weights do not fit" in capsys.readouterr().err


def test_the_cpu_plan_gives_a_data_worker_from_two_cpus_and_changes_no_number(tmp_path):
    from masksep import cpu

    assert cpu.plan(1, -1) == (1, 0) and cpu.plan(2, -1) == (1, 1) and cpu.plan(4, -1) == (3, 1)
    assert cpu.plan(2, 0) == (2, 0) and cpu.plan(4, 2) == (3, 2)
    # Two CPUs: one torch thread and a worker process making the data; one CPU: no
    # worker. Both train on the same batches with one torch thread: the same run.
    one = fit(tiny("train.threads=1", "train.epochs=2"), tmp_path / "one")
    two = fit(tiny("train.threads=2", "train.epochs=2"), tmp_path / "two")
    assert (one["threads"], one["data_workers"]) == (1, 0)
    assert (two["threads"], two["data_workers"]) == (1, 1)
    curves = [[json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
              for name in ("one", "two")]
    for a, b in zip(*curves, strict=True):
        assert a["train_loss"] == b["train_loss"] and a["val_si_snri"] == b["val_si_snri"]
    assert one["test_si_snri"] == two["test_si_snri"]


def test_the_thread_governor_measures_others_and_keeps_a_fixed_count():
    from masksep import cpu

    fixed = cpu.ThreadGovernor(1)
    assert fixed.threads == 1 and not fixed.auto
    busy = fixed.others_busy()
    assert busy is None or 0.0 <= busy <= (os.cpu_count() or 1)
    fixed.tick()
    assert fixed.threads == 1 and fixed.changes == 0 and torch.get_num_threads() == 1
