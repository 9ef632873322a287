"""The Dockerfile for pipeline runners, checked without Docker (none on CI machines here): it
runs as an unprivileged user, and what it copies is enough to build the package."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")


def test_the_image_runs_as_an_unprivileged_user() -> None:
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert re.search(rf"useradd .*\b{users[-1]}\b", DOCKERFILE)


def test_what_the_image_copies_is_what_pip_install_needs() -> None:
    """pyproject.toml's readme, packages and package data are all among the files copied."""
    import tomllib

    copied = {n for source in re.findall(r"^COPY\s+(.+?)\s+\S+$", DOCKERFILE, re.MULTILINE)
              for n in source.split()}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "pyproject.toml" in copied and project["project"]["readme"] in copied
    for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert pattern.rstrip("*") in copied
    for package, globs in project["tool"]["setuptools"].get("package-data", {}).items():
        assert package.split(".")[0] in copied
        for glob in globs:
            assert list((ROOT / package.replace(".", "/")).glob(glob)), glob
