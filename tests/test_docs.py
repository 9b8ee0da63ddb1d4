"""The documentation is complete in this repository: every relative link in
README.md and docs/ leads to a file that is here, and none leads out of the
repository (the protocol page, the contract, is carried in docs/)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_every_relative_link_in_the_docs_stays_inside_the_repository_and_exists():
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a URL or an anchor on the same page
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if ROOT not in path.parents and path != ROOT:
                broken.append(f"{page.name}: {target} leads outside the repository")
            elif not path.exists():
                broken.append(f"{page.name}: {target} does not exist")
    assert broken == []


def test_the_protocol_page_is_here():
    assert "Witness sync protocol, version 1" in (ROOT / "docs" / "protocol-v1.md").read_text()
