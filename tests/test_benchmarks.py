"""The GPU check (tests/benchmarks/gpu_check.py) on a machine without CUDA: its
one-line refusal, its CPU rehearsal of the model sections, and the sweep specs
it would run on a GPU. The rehearsal's Ray sections take a minute and run in
`gpu_check.py --rehearse` by hand (docs/benchmarks.md); the suite's sweep and
Ray Train tests cover the machinery under them."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from masksep.sweep.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "tests/benchmarks/gpu_check.py"
sys.path.insert(0, str(CHECK.parent))
import gpu_check  # noqa: E402


def check(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECK), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: run the check itself")
def test_gpu_check_without_cuda_says_so_in_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = check("--out", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no CUDA device"), proc.stdout
    assert not out.exists()


def test_gpu_check_rehearses_the_model_sections_on_the_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = check("--rehearse", "--sections", "amp_convtasnet,amp_dprnn,separate", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["rehearsal"] is True and result["device"] == "cpu" and result["failed"] == []
    for name in ("amp_convtasnet", "amp_dprnn"):
        amp = result[name]
        assert amp["dtype"] == "torch.bfloat16" and amp["steps"] == 1, amp
        assert amp["step_ms"] > 0 and amp["tflops"] > 0 and math.isfinite(amp["loss"]), amp
    sep = result["separate"]
    assert sep["device"] == "cpu" and sep["chunks"] >= 1 and sep["rtf"] > 0, sep
    assert "sweep_quarter_gpus" not in result


def test_gpu_check_refuses_an_unknown_section_in_one_line(tmp_path):
    proc = check("--rehearse", "--sections", "amp_dprnn,warp_drive", "--out", str(tmp_path / "x.json"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("gpu_check: --sections: unknown warp_drive (choose from "
                                   + ", ".join(gpu_check.SECTIONS) + ")")
    assert not (tmp_path / "x.json").exists()


def test_the_gpu_plans_sweeps_are_valid_specs_asking_for_the_gpu_shares(tmp_path):
    p = gpu_check.plan(rehearse=False, quick=False)
    asked = {"quarter": (p.quarter, 4), "raytrain": (p.ray_train, 1)}
    for name, (resources, trials) in asked.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(gpu_check.sweep_spec(p, resources, trials, name)))
        spec = load_spec(path)
        assert spec.num_samples == trials and spec.max_concurrent_trials == trials
        assert spec.resources.gpus == resources["gpus"] and not spec.wandb.enabled
    assert load_spec(tmp_path / "quarter.yaml").resources.gpus == 0.25
    assert load_spec(tmp_path / "raytrain.yaml").resources.ray_train and p.backend == "nccl"
    assert gpu_check.plan(rehearse=True, quick=False).backend == "gloo"
