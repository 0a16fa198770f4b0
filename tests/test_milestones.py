"""Budget milestones (issue 26): a trial scores its best-on-validation weights on
test at each milestone; a milestone is the shorter run; a resume keeps them once."""

import json
import sys
from pathlib import Path

import pytest
import torch

from masksep import config as C
from masksep.cli import main
from masksep.errors import ConfigError
from masksep.train import fit, load_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
import tiny  # noqa: E402

# 16 items of batch 4: 4 steps an epoch.
TINY = tiny.sets(tiny.MODEL) + [
    "data.segment_s=0.25", "data.train_items=16", "data.valid_items=4", "data.test_items=8",
    "data.eval_seconds=0.5", "train.batch_size=4", "train.threads=1", "train.early_stop=0",
]


def cfg(*extra):
    return C.load_config(None, TINY + list(extra))


def test_a_milestone_scores_what_the_shorter_run_scores_at_the_same_seed(tmp_path):
    long = fit(cfg("train.epochs=4", "train.milestones=[4, 8, 16]"), tmp_path / "long")
    marks = {m["steps"]: m for m in long["milestones"]}
    assert sorted(marks) == [4, 8, 16]
    for epochs, steps in ((1, 4), (2, 8)):
        short = fit(cfg(f"train.epochs={epochs}"), tmp_path / f"short{epochs}")
        assert marks[steps]["epoch"] == epochs
        for key in ("best_epoch", "best_val_si_snri", "test_si_snri", "test_sdri"):
            assert marks[steps][key] == short[key], (steps, key)
    # the last milestone is the end of the run, scored by the same rule
    assert marks[16]["test_si_snri"] == long["test_si_snri"]
    lines = [json.loads(x) for x in (tmp_path / "long" / "metrics.jsonl").read_text().splitlines()]
    assert [("milestone_test_si_snri" in x) for x in lines] == [True, True, False, True]


def test_a_run_resumed_after_a_milestone_keeps_it_and_scores_none_twice(tmp_path):
    whole = fit(cfg("train.epochs=3", "train.milestones=[4, 12]"), tmp_path / "whole")
    # "killed" after epoch 2: resume from its last.pt with the full budget
    fit(cfg("train.epochs=2", "train.milestones=[4]"), tmp_path / "cut")
    ckpt = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert [m["steps"] for m in ckpt["milestones"]] == [4]
    resumed = fit(cfg("train.epochs=3", "train.milestones=[4, 12]"), tmp_path / "cut", resume=True)
    assert [m["steps"] for m in resumed["milestones"]] == [4, 12]
    assert resumed["milestones"] == whole["milestones"]


def test_a_killed_epoch_replayed_after_its_milestone_is_scored_once(tmp_path):
    # The checkpoint of epoch 1 already holds milestone 4: replaying epoch 2 from it
    # (a kill between scoring and saving) must not add milestone 4 again.
    fit(cfg("train.epochs=1", "train.milestones=[4]"), tmp_path)
    summary = fit(cfg("train.epochs=2", "train.milestones=[4, 8]"), tmp_path, resume=True)
    assert [m["steps"] for m in summary["milestones"]] == [4, 8]


@pytest.mark.parametrize("value, words", [
    ("[8, 4]", "strictly increasing"),
    ("[4, 4]", "strictly increasing"),
    ("[0]", ">= 1"),
    ("[6]", "not a multiple of the 4 steps per epoch"),
    ("[4, 12]", "beyond the budget (2 epochs x 4 steps = 8)"),
])
def test_bad_milestones_name_the_field(value, words):
    with pytest.raises(ConfigError, match="train.milestones") as info:
        cfg("train.epochs=2", f"train.milestones={value}")
    assert words in str(info.value)


def test_bad_milestones_on_the_command_line_are_one_line_and_exit_2(tmp_path, capsys):
    code = main(["train", "--out", str(tmp_path / "run"), *[f"--set={s}" for s in TINY],
                 "--set=train.epochs=2", "--set=train.milestones=[3]"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "train.milestones" in err
    assert not (tmp_path / "run").exists()


def test_milestones_are_kept_in_the_checkpoint_only_as_scored(tmp_path):
    fit(cfg("train.epochs=2", "train.milestones=[8]"), tmp_path)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert [m["steps"] for m in ckpt["milestones"]] == [8]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["milestones"] == ckpt["milestones"]
