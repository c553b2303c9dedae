"""wrk: installed on demand, driven with bench/load.lua, its result read back as a dict."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parent / "load.lua"


def ensure_wrk() -> str:
    """The path of wrk; installs the Debian package first when it is not on PATH."""
    found = shutil.which("wrk")
    if found:
        return found
    if shutil.which("apt-get") is None:
        raise SystemExit("bench: wrk is not on PATH and there is no apt-get to install it")
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "wrk"]):
        print(f"bench: wrk is missing; running {' '.join(command)}", flush=True)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("bench: apt-get installed wrk but it is not on PATH")
    return found


async def run_wrk(
    url: str,
    paths_file: Path,
    *,
    connections: int,
    duration: float,
    threads: int = 1,
    method: str = "POST",
    tokens_file: Path | None = None,
    body: str | None = None,
    stop_status: int | None = None,
    until: Callable[[], Awaitable[bool]] | None = None,
    poll: float = 0.05,
    settle: float = 0.0,
    then_confirm: bool = False,
) -> dict[str, Any]:
    """Run wrk for `duration` seconds, or until `until()` answers True (then, `settle`
    seconds later, so that answers already decided reach wrk, wrk is interrupted with
    SIGINT, which makes it stop and still report). `body` may be
    "@FILE" (bodies in turn, one a line); `then_confirm` confirms every hold answered
    201 (see bench/load.lua)."""
    args = [
        ensure_wrk(), "-t", str(threads), "-c", str(connections), "-d", f"{duration:.0f}s",
        "--timeout", "30s", "-s", str(SCRIPT), url, "--",
        method, str(paths_file), str(tokens_file) if tokens_file else "-", body or "-",
        str(stop_status) if stop_status else "-", str(threads),
        "confirm" if then_confirm else "-",
    ]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        if until is not None:
            while proc.returncode is None:
                if await until():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(proc.wait(), settle)
                    if proc.returncode is None:
                        proc.send_signal(signal.SIGINT)
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), poll)
        out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode(errors="replace")
    for line in text.splitlines():
        if line.startswith("BENCH_RESULT "):
            result: dict[str, Any] = json.loads(line.removeprefix("BENCH_RESULT "))
            return result
    raise RuntimeError(f"wrk gave no result (exit {proc.returncode}):\n{text}\n{err.decode()}")
