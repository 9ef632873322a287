"""The CLI's main flows where there is no ``fcntl`` (Windows): every lock goes through filelock,
and no module the commands import needs ``fcntl`` or ``os.pread``. CI runs Linux only, so the
commands run in a Python whose ``fcntl`` import fails, as it does on Windows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

WITHOUT_FCNTL = """\
import os, sys
sys.modules["fcntl"] = None  # as on Windows: `import fcntl` fails
del os.pread                 # and os.pread does not exist
sys.argv = ["provisioner", *sys.argv[1:]]
from provisioner.cli import main
main()
"""


@pytest.mark.slow
def test_validate_plan_apply_status_and_audit_work_without_fcntl(
        tmp_path: Path, state_dir: Path, make_sandbox: Callable[..., Any],
        write_playbook: Callable[..., Path]) -> None:
    make_sandbox()
    playbook = str(write_playbook(3))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", WITHOUT_FCNTL, "--state-dir", str(state_dir), *args],
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"})

    assert run("init", "--organisation", "Solbacka kommun", "--domain", "politiker.solbacka.se",
               "--yes", "--dir", str(tmp_path / "init")).returncode == 0
    assert run("validate", str(tmp_path / "init" / "solbacka-kommun-epost.yaml")).returncode == 0
    assert run("validate", playbook).returncode == 0
    assert run("plan", "--detailed-exitcode", playbook).returncode == 2
    applied = run("apply", "--yes", "--json", playbook)
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["cohorts"][0]["state"] == "passed"
    assert run("plan", "--detailed-exitcode", playbook).returncode == 0
    status = json.loads(run("status", "--json", playbook).stdout)
    assert [r["kind"] for r in status["runs"]] == ["apply"]
    verified = run("audit", "verify")
    assert verified.returncode == 0 and "chain intact" in verified.stdout
    assert "fcntl" not in (applied.stderr + verified.stderr)


def test_on_windows_a_new_private_folder_gets_an_acl_for_its_owner_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NTFS ignores modes: private_dir asks icacls (the platform's own tool) for an ACL of the
    folder's own, the operator and SYSTEM only. A stand-in icacls records what it was asked."""
    from provisioner.private import private_dir

    bin_dir, asked = tmp_path / "bin", tmp_path / "asked.txt"
    bin_dir.mkdir()
    (bin_dir / "icacls").write_text(f'#!/bin/sh\necho "$@" > {asked}\n', encoding="utf-8")
    (bin_dir / "icacls").chmod(0o755)
    target, again = tmp_path / "state", tmp_path / "state"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("USERNAME", "anna")
    monkeypatch.setattr(os, "name", "nt")
    private_dir(target)
    assert asked.read_text(encoding="utf-8").split() == [
        str(target), "/inheritance:r", "/grant:r", "anna:(OI)(CI)F", "/grant:r", "SYSTEM:(OI)(CI)F"]
    asked.unlink()
    private_dir(again)  # an existing folder keeps the ACL its owner gave it
    assert not asked.exists()


def test_on_windows_without_icacls_the_operator_is_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from provisioner.private import private_dir

    target = tmp_path / "guides"
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    monkeypatch.setattr(os, "name", "nt")
    private_dir(target)
    assert "private.acl_not_set" in capsys.readouterr().out
