"""The README's commands work as written: the API walk-through runs against a real
server, and every `eventbook ...` command it shows is one the program accepts."""

from __future__ import annotations

import ast
import asyncio
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from eventbook.cli import build_parser
from eventbook.config import Config
from tests.processes import Server, environment

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end != -1 else None]


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.DOTALL)


async def test_the_api_walk_through_runs_as_written(config: Config, tmp_path: Path) -> None:
    [block] = shell_blocks(section("The API in five minutes"))
    server = Server(environment(config), tmp_path / "serve.log")
    try:
        await server.wait_ready()
        # The one change: the server under test listens on a port of its own.
        script = block.replace("API=http://127.0.0.1:8080\n", f"API={server.url}\n", 1)
        assert script != block
        result = await asyncio.to_thread(
            subprocess.run, ["bash", "-e", "-o", "pipefail", "-c", script],
            capture_output=True, text=True, timeout=120,
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stdout + result.stderr + server.output
    status, subject, version, kind, announcement = result.stdout.splitlines()
    assert status == "sent"
    assert "Jazz night" in subject
    assert version == "2"
    assert kind == "event_updated"
    shown = ast.literal_eval(announcement)
    assert (shown["recipients_total"], shown["delivered"]) == (1, 1)
    assert shown["finished_at"] is not None


def documented_commands() -> list[str]:
    """Every `eventbook ...` command line in the README, inline or in a sh block, run
    directly or through dev.py."""
    inline = re.findall(r"`eventbook ([^`]+)`", README)
    lines = [line.split("#", 1)[0].strip() for block in shell_blocks(README)
             for line in block.splitlines()]
    found = {*inline}
    for line in lines:
        line = line.removeprefix('eval "$(').removesuffix(')"')
        for prefix in ("eventbook ", "python3 dev.py eventbook "):
            if line.startswith(prefix):
                found.add(line.removeprefix(prefix))
    return sorted(found - {"..."})  # "`eventbook ...`" names the command, not a use of it


@pytest.mark.parametrize("command", documented_commands())
def test_every_documented_command_is_accepted(command: str) -> None:
    words = shlex.split(command.split("|", 1)[0])
    try:
        build_parser().parse_args(words)
    except SystemExit as stop:  # 0 for --help; 2 for an unknown word or a missing value
        assert stop.code == 0, command


def test_the_commands_run_through_dev_py_and_from_the_activated_venv() -> None:
    env = {**os.environ, "EVENTBOOK_VENV": sys.prefix}
    through_dev = subprocess.run(
        [sys.executable, str(ROOT / "dev.py"), "eventbook", "queues", "--help"],
        capture_output=True, text=True, timeout=120, env=env, cwd=ROOT,
    )
    assert through_dev.returncode == 0, through_dev.stderr
    assert "usage: eventbook queues" in through_dev.stdout
    activated = subprocess.run(
        ["bash", "-c", f". {shlex.quote(sys.prefix)}/bin/activate && eventbook queues --help"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert activated.returncode == 0, activated.stderr
    assert "usage: eventbook queues" in activated.stdout
