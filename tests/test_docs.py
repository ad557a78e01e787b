"""The repository stands alone: every design reference in code points at a section of docs/design.md."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = [
    *REPO.glob("src/**/*.py"),
    *REPO.glob("workflow/**/*.smk"),
    *REPO.glob("workflow/**/*.py"),
    *REPO.glob("workflow/report/*.rst"),
    *REPO.glob("tests/**/*.py"),
    *REPO.glob("tests/**/*.sh"),
    *REPO.glob("benchmarks/*.py"),
    *REPO.glob("profiles/**/*.yaml"),
    REPO / "Snakefile",
]


def test_design_references_name_existing_sections():
    sections = set(re.findall(r"^## (.+)$", (REPO / "docs/design.md").read_text(), flags=re.M))
    assert {"Table contracts", "Metrics", "Models", "Datasets", "Clusters", "Performance principles"} <= sections
    cited = []
    for path in SOURCES:
        text = path.read_text()
        # Citations of a section sign after an upper-case document name point outside the repository.
        outside = "".join(("DESI", "GN §"))
        assert outside not in text.replace(f'"{outside}"', ""), f"{path} cites a design document the repository lacks"
        cited += [(path, name) for name in re.findall(r"docs/design\.md, ([A-Z][a-z]+(?: [a-z]+)*)", text)]
    assert cited, "no reference to docs/design.md found"
    for path, name in cited:
        assert name in sections, f"{path.relative_to(REPO)} cites docs/design.md section {name!r}, which does not exist"
