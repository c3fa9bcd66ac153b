"""The docs site builds strictly from docs/, its reference pages hold what the code holds, and the README stays a
landing page that opens with the two set-up commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SET_UP_COMMANDS = [
    "scripts/setup.sh && .venv/bin/pong-train --preset smoke",
    "scripts/setup.sh dev azureml && .venv/bin/python -m pytest",
]
MAX_README_LINES = 220


def nav_pages(nav: list) -> list[str]:
    """The pages mkdocs.yml's nav lists, in order, nested sections flattened."""
    pages = []
    for entry in nav:
        for value in entry.values() if isinstance(entry, dict) else [entry]:
            pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_the_site_builds_strictly(tmp_path):
    """`mkdocs build --strict`: a broken link or anchor, a page left out of the nav or a failing generator fails."""
    site = tmp_path / "site"
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                           capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert built.returncode == 0, built.stderr

    from pong_train.cli import cli
    from pong_train.config import TrainConfig

    config_page = (site / "config" / "index.html").read_text()
    assert {key for key in TrainConfig.model_fields if f"<code>{key}</code>" not in config_page} == set()
    cli_page = (site / "cli" / "index.html").read_text()
    assert {name for name in cli.commands if f"pong-train {name}" not in cli_page} == set()
    stub = (ROOT / "docs" / "index.md").read_text().strip()
    assert stub not in (site / "index.html").read_text()  # the home page is the README, not the stub that stands in


def test_every_docs_page_is_in_the_nav():
    nav = nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    pages = {str(path.relative_to(ROOT / "docs")) for path in (ROOT / "docs").rglob("*.md")}
    assert sorted(pages) == sorted(nav)


def test_the_readme_is_a_landing_page_that_opens_with_the_two_commands():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES
    assert lines[0].startswith("# ")
    first_block = lines[lines.index("```bash") + 1:lines.index("```")]
    assert [line.split("  #")[0].strip() for line in first_block] == SET_UP_COMMANDS
    assert not any(line.strip() for line in lines[1:lines.index("```bash")])  # nothing before them
    assert ".venv/bin/mkdocs serve" in README.read_text()


def test_the_readme_links_resolve_from_the_repository():
    """On GitHub the README's links are relative to the repository; the site build checks them from docs/."""
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
    local = [target for target in targets if "://" not in target]
    assert local and [target for target in local if not (ROOT / target).exists()] == []
    assert [target for target in local if not target.startswith("docs/")] == []  # the site knows only docs/
