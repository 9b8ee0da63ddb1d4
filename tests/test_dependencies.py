"""Dependencies are pinned twice, and the two agree: setup.cfg gives every
dependency a range with an upper bound, constraints.txt the exact versions
CI installs (scripts/lock writes it), each inside its range, and what is
installed is what constraints.txt says."""

import configparser
import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def _requirements() -> list[Requirement]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options"]["install_requires"].splitlines()
    for extra in config["options.extras_require"].values():
        lines += extra.splitlines()
    return [Requirement(line) for line in lines if line.strip()]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line.strip()).groups()
            pins[canonicalize_name(name)] = version
    return pins


def test_every_dependency_has_an_upper_bound():
    unbounded = [str(r) for r in _requirements() if not any(s.operator in ("<", "<=", "~=", "==") for s in r.specifier)]
    assert unbounded == []


def test_every_dependency_is_pinned_inside_its_range():
    pins = _pins()
    wrong = [f"{r.name}: {pins.get(canonicalize_name(r.name))} not in {r.specifier}" for r in _requirements()
             if pins.get(canonicalize_name(r.name)) is None or not r.specifier.contains(pins[canonicalize_name(r.name)])]
    assert wrong == []


def test_what_is_installed_is_what_constraints_txt_says():
    differ = []
    for name, version in _pins().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # a platform-specific pin not used here
        if installed != version:
            differ.append(f"{name}: installed {installed}, constraints.txt {version}")
    assert differ == []
