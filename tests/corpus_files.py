"""What the speech-corpus tests read back from a corpus folder."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path


def wav_digests(folder: Path) -> dict[str, str]:
    """Every wav under ``folder`` (relative path) -> its SHA-256: equal digests, the same files."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.wav"))}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))
