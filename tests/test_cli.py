"""The command line's conventions: --version, one spelling of the output flag,
and the exit codes (0 done, 2 bad input, 3 the data check found problems)."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from masksep import __version__, cli
from masksep.data.export import synth

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_the_packages_and_the_projects():
    done = subprocess.run([sys.executable, "-m", "masksep", "--version"], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"masksep {__version__}"
    pinned = re.search(r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert pinned and pinned.group(1) == __version__


def test_help_lists_the_exit_codes(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "2 bad input" in out and "3 the data check found problems" in out


def _commands(parser: argparse.ArgumentParser, prefix: str = ""):
    """(command name, its parser) for every leaf command, `data check` included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, f"{prefix}{name} ")
            return
    yield prefix.strip(), parser


def test_every_output_flag_is_spelled_out_with_old_spellings_as_aliases():
    seen = {}
    for name, parser in _commands(cli.build_parser()):
        for action in parser._actions:
            flags = [f for f in action.option_strings if re.match(r"--(out|output)($|-)", f)]
            if flags:
                assert flags[0] == "--out", (name, flags)  # the name --help shows first
                seen[name] = flags
    assert seen["separate"] == ["--out", "--out-dir"]
    assert {"train", "eval", "sweep", "submit", "analyze", "data synth", "separate"} <= set(seen)
    args = ["separate", "--checkpoint", "c.pt", "a.wav"]
    assert cli.build_parser().parse_args([*args, "--out-dir", "o"]).out == Path("o")
    assert cli.build_parser().parse_args([*args, "--out", "o"]).out == Path("o")


def test_data_check_exit_codes_tell_problems_from_bad_input(tmp_path, capsys):
    synth(tmp_path / "lm", "librimix", "test", 2, seconds=0.3)
    assert cli.main(["data", "check", str(tmp_path / "lm")]) == 0
    (tmp_path / "lm" / "test" / "s1" / "synthte00001.wav").unlink()
    assert cli.main(["data", "check", str(tmp_path / "lm")]) == 3
    assert "synthte00001.wav: file not found" in capsys.readouterr().out
    assert cli.main(["data", "check", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("masksep: error: ") and "nowhere" in err[0]
