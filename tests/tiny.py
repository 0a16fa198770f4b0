"""The tiny separator the tests train and run: fast on one thread.

MODEL is its config tree (encoder and backbone); ``sets`` turns a tree into
``--set`` overrides; ``save_checkpoint`` writes a random-weight checkpoint the
way train.fit does; ``fake_sweep`` lays checkpoints out as a sweep folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml

from masksep.config import load_config, to_dict
from masksep.models.separator import build_model
from masksep.train import CHECKPOINT_FORMAT

MODEL: dict[str, Any] = {
    "encoder": {"n_filters": 16},
    "backbone": {"kind": "tcn", "tcn": {"bottleneck": 16, "hidden": 32, "layers": 2, "repeats": 1,
                                        "skip": 16}},
}


def sets(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """{"a": {"b": 1}} -> ["a.b=1"]."""
    out = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out += sets(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={value}")
    return out


# The model of the inference tests' checkpoints: three TCN layers (later sets win).
CHECKPOINT_MODEL = sets(MODEL) + ["backbone.tcn.layers=3"]
CHECKPOINT_SETS = CHECKPOINT_MODEL + ["train.threads=1"]


def save_checkpoint(path: Path, *overrides: str, seed: int = 0):
    """A checkpoint as train.fit writes it (format tag, config, weights) with
    random weights; returns (config, model in eval mode)."""
    cfg = load_config(None, CHECKPOINT_SETS + list(overrides))
    torch.manual_seed(seed)
    model = build_model(cfg)
    torch.save({"format": CHECKPOINT_FORMAT, "config": to_dict(cfg), "model": model.state_dict()}, path)
    return cfg, model.eval()


def fake_sweep(root: Path, trials: dict[str, tuple[Path, dict]]) -> Path:
    """A sweep folder as masksep sweep leaves it: sweep.json naming the Ray
    experiment, and trial folders with config.yaml, searched.json, summary.json
    and checkpoints/best.pt."""
    experiment = root / "ray" / "study"
    for trial_id, (ckpt, searched) in trials.items():
        folder = experiment / f"trial_{trial_id}"
        (folder / "checkpoints").mkdir(parents=True)
        shutil.copy(ckpt, folder / "checkpoints" / "best.pt")
        config = torch.load(ckpt, weights_only=True)["config"]
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        (folder / "searched.json").write_text(json.dumps(searched))
        (folder / "summary.json").write_text(json.dumps({"test_si_snri": 1.5, "seed": config["seed"]}))
    (root / "sweep.json").write_text(json.dumps({"name": "study", "storage": str(root / "ray")}))
    return root
