"""A checkpoint that is not what it claims (issue 34, item 7): `masksep train --resume`
on a last.pt that is a copied best.pt, or whose weights have another config's shapes,
is one line naming what is missing or which shape differs, exit 2, nothing changed."""

import shutil
import sys
from pathlib import Path

import pytest
import torch

from masksep.cli import main
from masksep.train import fit, load_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from test_train import TINY, tiny, write_config  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two finished one-epoch runs: ``a`` (the tiny model) and ``b`` (a wider TCN)."""
    root = tmp_path_factory.mktemp("runs")
    fit(tiny("train.epochs=1"), root / "a")
    fit(tiny("train.epochs=1", "backbone.tcn.hidden=48"), root / "b")
    return root


def _folder(runs, tmp_path, last):
    """A copy of run a whose last.pt is ``last`` (a dict to save, or a path to copy)."""
    out = tmp_path / "run"
    shutil.copytree(runs / "a", out)
    target = out / "checkpoints" / "last.pt"
    if isinstance(last, dict):
        torch.save(last, target)
    else:
        shutil.copyfile(last, target)
    return out


def _refused(capsys, out, args, *words):
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert main(["train", *args, "--resume", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("masksep: error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, err
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
    return err


@pytest.mark.parametrize("with_config", [False, True])
def test_a_best_pt_copied_over_last_pt_names_what_a_resume_misses(runs, tmp_path, capsys, with_config):
    out = _folder(runs, tmp_path, runs / "a" / "checkpoints" / "best.pt")
    args = ["--config", str(write_config(tmp_path / "tiny.yaml", TINY + ["train.epochs=2"]))] if with_config else []
    err = _refused(capsys, out, args, "last.pt: not a complete checkpoint to resume from: no optimizer",
                   "scheduler", "scaler", "bad_epochs", "as best.pt does")
    assert "KeyError" not in err


def test_weights_of_another_configs_shapes_name_the_weight_and_both_shapes(runs, tmp_path, capsys):
    last = load_checkpoint(runs / "a" / "checkpoints" / "last.pt")
    other = load_checkpoint(runs / "b" / "checkpoints" / "last.pt")
    # Only the weights come from b: the config still claims a's model.
    key = next(k for k in last["model"] if last["model"][k].shape != other["model"][k].shape)
    out = _folder(runs, tmp_path, {**last, "model": other["model"]})
    err = _refused(capsys, out, [], f"model weight {key} is shape {tuple(other['model'][key].shape)} "
                   f"in the checkpoint, shape {tuple(last['model'][key].shape)} in the model")
    assert "size mismatch" not in err

    # the best weights travel in last.pt too, and are checked as well
    out = _folder(runs, tmp_path / "best", {**last, "best_model": other["model"]})
    _refused(capsys, out, [], "best weight", "in the checkpoint")

    # weights that fit beside optimizer state of another model's shapes
    out = _folder(runs, tmp_path / "optim", {**last, "optimizer": other["optimizer"]})
    _refused(capsys, out, [], "optimizer state exp_avg of", "in the checkpoint")


def test_a_weight_missing_from_last_pt_is_named(runs, tmp_path, capsys):
    last = load_checkpoint(runs / "a" / "checkpoints" / "last.pt")
    dropped = sorted(last["model"])[0]
    model = {k: v for k, v in last["model"].items() if k != dropped}
    out = _folder(runs, tmp_path, {**last, "model": model})
    _refused(capsys, out, [], f"no model weight {dropped}")


def test_the_real_last_pt_still_resumes(runs, tmp_path, capsys):
    out = _folder(runs, tmp_path, runs / "a" / "checkpoints" / "last.pt")
    assert main(["train", "--resume", "--set", "train.epochs=2", "--out", str(out)]) == 0
    assert load_checkpoint(out / "checkpoints" / "last.pt", resume=True)["epoch"] == 2
