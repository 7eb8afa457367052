"""README and docs/: short enough to read, and every link inside the repository resolves."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "colab" / "README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_readme_is_read_in_five_minutes():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves_inside_the_repository(page):
    """A clone has only itself: no link may leave it (../shared was such a link), none may
    point at a file that moved (the README's sections moved to docs/)."""
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://", "#", "mailto:")):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT), f"{page.name}: {target} leaves the repository"
        assert path.exists(), f"{page.name}: {target} does not exist"


def test_the_repository_carries_its_license_and_the_method_it_cites():
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    assert "Apache-2.0" in (ROOT / "pyproject.toml").read_text()
    assert "g = ε / (1 − m) · (N/B − 1)" in (ROOT / "docs" / "paper.md").read_text()
