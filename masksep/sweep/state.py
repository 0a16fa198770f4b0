"""The sweep folder's own state file, ``OUT/sweep.json``: what ran, where Ray
keeps its experiment, and whether the driver finished. The sweep writes it;
the report, analyze and resume read it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from masksep import rundir
from masksep.errors import UserError
from masksep.files import atomic_write

STATE_FILE = rundir.STATE


def write_state(out: Path, state: dict[str, Any]) -> None:
    atomic_write(Path(out) / STATE_FILE, json.dumps(state, indent=2) + "\n")


def read_state(out: Path) -> dict[str, Any]:
    """sweep.json of ``out``; one UserError line when it is missing or unreadable."""
    path = Path(out) / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{out}: no sweep here ({STATE_FILE} is missing)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable sweep state ({type(exc).__name__})") from None
    if not isinstance(state, dict) or "name" not in state or "storage" not in state:
        raise UserError(f"{path}: not a masksep sweep state (no name or storage)")
    return state


def experiment_path(state: dict[str, Any]) -> str:
    """Ray Tune's experiment folder (a local path or a URI) of a sweep."""
    return f"{state['storage'].rstrip('/')}/{state['name']}"
