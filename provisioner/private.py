"""State and exports hold personal data (mobiles, private e-mail addresses, who is who): they
are the operator's alone, whatever the umask. Folders 0700, files 0600, set explicitly after
creating (the umask only ever removes bits, and an existing file keeps its old mode)."""

from __future__ import annotations

import os
from pathlib import Path


def private_dir(path: Path) -> Path:
    made = not path.exists()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    if made and os.name == "nt":
        _owner_only_acl(path)
    return path


def _owner_only_acl(path: Path) -> None:
    """On NTFS a mode means nothing (a new folder inherits its parent's ACL): the folder gets
    an ACL of its own, full control for the operator only (and SYSTEM), through icacls; if
    that fails the operator is told once where the data is and what to do."""
    import subprocess

    user = os.environ.get("USERNAME", "")
    try:
        subprocess.run(["icacls", str(path), "/inheritance:r", "/grant:r", f"{user}:(OI)(CI)F",
                        "/grant:r", "SYSTEM:(OI)(CI)F"], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        import structlog

        structlog.get_logger("provisioner").warning(
            "private.acl_not_set", path=str(path),
            advice="NTFS ignores file modes; this folder inherits its parent's ACL: keep it in a"
                   " folder only you can read (under your profile), or restrict it with icacls")


def private_file(path: Path) -> Path:
    """Create ``path`` empty if missing; either way only its owner may read it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)
    return path


def write_private(path: Path, text: str) -> None:
    if not path.parent.exists():
        private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o600)
