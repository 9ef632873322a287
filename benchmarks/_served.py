"""A sandbox tenant served over HTTP by its own process, so that a benchmark measures the
client alone (its memory, its CPU) and talks to Graph the way it would to Microsoft's."""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def served(state_dir: Path) -> Iterator[str]:
    """Serve the sandbox in ``state_dir`` on 127.0.0.1; yields its URL."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "provisioner", "--state-dir", str(state_dir),
                             "sandbox", "serve", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the sandbox did not start: {proc.stderr.read() if proc.stderr else ''}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()  # uvicorn shuts down on SIGTERM; the app flushes the store's counters
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """The least, the median and the most of repeated runs: on a shared machine the same work's
    time varies by a third from one run to the next."""
    ordered = sorted(values)
    return ordered[0], statistics.median(ordered), ordered[-1]


def http_counters(url: str) -> dict[str, int]:
    """The served sandbox's request counters, read over HTTP while it still runs."""
    with urllib.request.urlopen(url + "/_sandbox/counters", timeout=30) as reply:
        return dict(json.load(reply))


@dataclass(frozen=True)
class Measured:
    code: int
    out: str
    wall: float  # seconds
    rss_mb: float  # the command's own peak resident memory
    cpu: float  # the command's own CPU seconds, user + system
    load: tuple[float, float, float]  # the machine's load average when it ended

    def describe(self) -> str:
        """Wall and CPU time beside the load average, so a figure taken on a busy machine says so."""
        return (f"wall {self.wall:.2f} s, client CPU {self.cpu:.2f} s, peak RSS {self.rss_mb:.0f} MB;"
                f" load average {self.load[0]:.2f} {self.load[1]:.2f} {self.load[2]:.2f}"
                f" on {os.cpu_count()} CPUs")

    def figures(self) -> dict[str, object]:
        return {"wall_seconds": round(self.wall, 2), "client_cpu_seconds": round(self.cpu, 2),
                "client_peak_rss_mb": round(self.rss_mb, 1),
                "load_average": [round(x, 2) for x in self.load], "cpus": os.cpu_count()}


def run_measured(args: list[str], env: dict[str, str] | None = None, tool: Path = ROOT) -> Measured:
    """Run a command and measure it (its own resources, from wait4). ``tool``: the source tree
    whose ``provisioner`` it runs (`version_at`: an older one)."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tool,
                            env=_environment(tool, env))
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Measured(proc.returncode, out, wall, usage.ru_maxrss / 1024,
                    usage.ru_utime + usage.ru_stime, os.getloadavg())


def _environment(tool: Path, env: dict[str, str] | None) -> dict[str, str]:
    """A measured command's environment: ``tool``'s ``provisioner`` on the path (``python -m``
    also looks in the working directory first, so the command runs in ``tool`` too)."""
    return {**os.environ, "PYTHONPATH": str(tool), **(env or {})}


def version_at(rev: str, into: Path) -> Path:
    """The tool's ``provisioner`` package as it was at the git revision ``rev``, compiled, in
    ``into``: run beside this one (`run_measured(..., tool=)`), in the same minutes, its
    figures say how fast the machine is today."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "provisioner"], capture_output=True)
    if archive.returncode != 0:
        raise SystemExit(f"--beside {rev}: git cannot give that revision of the tool:"
                         f" {archive.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(into / "provisioner")],
                   check=True, stdout=subprocess.DEVNULL)
    return into


def instructions(args: list[str], env: dict[str, str] | None = None) -> int | None:
    """The instructions a command runs, counted by valgrind's cachegrind (None without
    valgrind): unlike its time, the same on a busy machine as on an idle one, so two versions
    of the tool can be compared on a shared machine. About 30 times as slow as the command."""
    if shutil.which("valgrind") is None:
        return None
    proc = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no",
                           "--cachegrind-out-file=/dev/null", *args], capture_output=True, text=True,
                          cwd=ROOT, env=_environment(ROOT, env))
    found = re.search(r"I\s+refs:\s+([\d,]+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"under valgrind the command failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return int(found[1].replace(",", ""))


def self_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def busy(n: int) -> Iterator[None]:
    """``n`` CPU-bound processes beside the benchmark: the machine of an admin with Teams open,
    or a CI runner shared with other jobs."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
