"""The README and docs/: every relative link resolves (files and #anchors), each page
opens with what it is for, and every masksep command they show exists with the flags
they give it."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from masksep import cli

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "ARCHITECTURE.md", "CHANGELOG.md",
         *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
DOCS = ("training", "sweeps", "studies", "analyze", "benchmarks", "extending")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The page without its code blocks and inline code, where links are not links."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def anchors(text: str) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces
    to hyphens, a repeated heading numbered."""
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} (.+)$", FENCE.sub("", text), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_the_docs_pages_are_there():
    assert set(DOCS) <= {Path(p).stem for p in PAGES if p.startswith("docs/")}


@pytest.mark.parametrize("page", PAGES)
def test_every_relative_link_resolves(page):
    path = ROOT / page
    text = path.read_text()
    broken = []
    for target in LINK.findall(prose(text)):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text()):
            broken.append(f"{target}: no heading #{anchor} in {linked.relative_to(ROOT)}")
    assert not broken, broken


def test_anchors_follow_githubs_rule():
    text = "# masksep\n## Evaluation: masksep eval\n## The answer, across scale\n## A b\n## A b\n"
    assert anchors(text) == {"masksep", "evaluation-masksep-eval", "the-answer-across-scale",
                             "a-b", "a-b-1"}


def test_the_readme_is_short_and_each_docs_page_opens_with_what_it_is_for():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert "\n## The answer\n" in readme
    for name in DOCS:
        lines = (ROOT / "docs" / f"{name}.md").read_text().splitlines()
        assert lines[0].startswith("# ") and lines[1] == "", name
        assert lines[2] and lines[3] and lines[4] == "", f"docs/{name}.md: two lines on what it is for"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _documented_commands() -> list[tuple[str, list[str]]]:
    """(page, the words after `masksep`) of every masksep command in a code block or in
    inline code; `$M` is the pages' shell variable for the masksep binary."""
    found = []
    for page in PAGES:
        text = (ROOT / page).read_text()
        blocks = [b.replace("\\\n", " ") for b in FENCE.findall(text)]
        lines = [line for b in blocks for line in b.splitlines()]
        lines += re.findall(r"`(masksep [^`]+)`", text)
        for line in lines:
            line = line.split(" #", 1)[0]
            for match in re.finditer(r"(?:^|[\s\"'])(?:\S*/)?(?:masksep|\$M)\s+(.*?)(?=$|&&|;|\|)", line):
                try:
                    words = shlex.split(match.group(1))
                except ValueError:
                    words = match.group(1).split()
                if words and re.fullmatch(r"[a-z][a-z-]*|--[a-z-]+", words[0]):
                    found.append((page, words))
    return found


def test_every_documented_command_and_flag_exists():
    parser = cli.build_parser()
    commands = _documented_commands()
    assert len(commands) > 30
    wrong = []
    top = {flag for action in parser._actions for flag in action.option_strings}
    for page, words in commands:
        if words[0].startswith("--"):
            if words[0] not in top:
                wrong.append(f"{page}: masksep {words[0]}: no such option")
            continue
        sub = _subparsers(parser)
        if words[0] not in sub:
            wrong.append(f"{page}: masksep {words[0]}: no such command")
            continue
        command = sub[words[0]]
        rest = words[1:]
        nested = _subparsers(command)
        if nested:
            if not rest or rest[0] not in nested:
                continue  # `masksep data` alone, as in a sentence
            command, rest = nested[rest[0]], rest[1:]
        known = {flag for action in command._actions for flag in action.option_strings}
        for word in rest:
            flag = word.split("=", 1)[0]
            if flag.startswith("--") and flag not in known:
                wrong.append(f"{page}: masksep {' '.join(words[:2])}: no flag {flag}")
    assert not wrong, wrong
