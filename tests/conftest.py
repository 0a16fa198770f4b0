"""Fixtures shared by several test files."""

import pytest
import yaml


@pytest.fixture
def spec_path(tmp_path):
    """A small sweep spec (two head kinds, 2 epochs on the built-in defaults)."""
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "base": {"train": {"epochs": 2}},
                                    "search_space": {"head.kind": {"choice": ["shallow", "deep"]}}}))
    return path
