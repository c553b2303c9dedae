"""Optional sampling profiles of the server during a scenario (`--profile`), with py-spy.

py-spy is not a dependency: `pip install py-spy` into the virtualenv to use it. The
collapsed stacks are kept next to the run's logs, and a summary (the share of samples
in which each function is on the stack) is printed and stored with the figures.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@contextlib.contextmanager
def profiled(pid: int, out: Path, summary: dict[str, Any]) -> Iterator[None]:
    """Sample `pid` while the block runs; fill `summary` with the top functions."""
    binary = py_spy()
    if binary is None:
        summary["skipped"] = "py-spy is not installed (pip install py-spy)"
        yield
        return
    proc = subprocess.Popen(
        [binary, "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
         "--output", str(out), "--nonblocking", "--gil"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if out.exists():
        summary.update(summarize(out))


def summarize(collapsed: Path, top: int = 40) -> dict[str, Any]:
    """Inclusive and self shares of samples by function, from py-spy's raw output."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [frame.split(" (")[0] + " " + _where(frame) for frame in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    if not total:
        return {"samples": 0}
    return {
        "samples": total,
        "inclusive": [(f, round(100 * n / total, 1)) for f, n in inclusive.most_common(top)],
        "self": [(f, round(100 * n / total, 1)) for f, n in own.most_common(top)],
        "file": str(collapsed),
    }


def _where(frame: str) -> str:
    # "name (path/to/module.py:123)" -> "module.py"
    if " (" not in frame:
        return ""
    place = frame.split(" (", 1)[1].rstrip(")")
    return "(" + place.rsplit("/", 1)[-1].split(":")[0] + ")"


def report(name: str, summary: dict[str, Any], lines: int = 25) -> str:
    if "inclusive" not in summary:
        return f"profile of {name}: {summary.get('skipped', 'no samples')}"
    out = [f"profile during {name} ({summary['samples']} samples): "
           "% of samples with the function on the stack / at the top"]
    tops = dict(summary["self"])
    for frame, share in summary["inclusive"][:lines]:
        out.append(f"  {share:5.1f}%  {tops.get(frame, 0.0):5.1f}%  {frame}")
    out.append("  top of stack:")
    for frame, share in summary["self"][:12]:
        out.append(f"  {share:5.1f}%  {frame}")
    return "\n".join(out)
