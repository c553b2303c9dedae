"""The README's commands work as written: the API walk-through runs against a real
server, the webhook receiver example verifies real messages, and every `eventbook ...`
command it shows is one the program accepts."""

from __future__ import annotations

import ast
import asyncio
import datetime as dt
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from standardwebhooks import Webhook

from eventbook.cli import build_parser
from eventbook.config import Config
from eventbook.embedded import free_port
from eventbook.webhooks import new_secret
from tests.client import Api, User, eventually, expect
from tests.processes import Process, Server, environment
from tests.webhook_receivers import once_recorded

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end != -1 else None]


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.DOTALL)


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.DOTALL)


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


async def test_the_webhook_receiver_example_verifies_and_handles_each_message_once(
    webhooks_api: Api, organizer: User, customer: User, tmp_path: Path
) -> None:
    [example] = python_blocks(section("Webhooks"))
    (tmp_path / "receiver.py").write_text(example)
    api = webhooks_api
    port = free_port()
    url = f"http://127.0.0.1:{port}/eventbook"
    endpoint = await expect(await api.post("/api/v1/webhooks", organizer, json={"url": url}), 201)
    deliveries = f"/api/v1/webhooks/{endpoint['id']}/deliveries"
    env = environment(WEBHOOK_SECRET=endpoint["secret"], PORT=str(port), PYTHONUNBUFFERED="1",
                      INBOX=str(tmp_path / "inbox.sqlite3"))
    receiver = Process([], env, tmp_path / "receiver.log", tmp_path, module="receiver",
                       port=port)
    try:
        await asyncio.to_thread(receiver.wait_for_output, "Running on", 30)
        event = await api.create_event(organizer)
        booking = await expect(await api.book(customer, event), 201)
        await asyncio.to_thread(receiver.wait_for_output, f"booking.created {booking['id']}", 30)
        [delivery] = (await once_recorded(api, organizer, deliveries))["items"]
        assert (delivery["status"], delivery["last_status_code"]) == ("succeeded", 204)

        # The same message sent again (same webhook-id, a new signature) is answered 2xx
        # and not handled twice.
        await expect(await api.post(f"{deliveries}/{delivery['id']}/retry", organizer), 202)

        async def sent_again() -> Any:
            again = await expect(await api.get(f"{deliveries}/{delivery['id']}", organizer), 200)
            attempted = dt.datetime.fromisoformat(again["last_attempt_at"])
            return (again["status"] == "succeeded"
                    and attempted > dt.datetime.fromisoformat(delivery["last_attempt_at"])
                    and again)

        assert (await eventually(sent_again))["last_status_code"] == 204
        # A message signed with another secret is refused, and not handled.
        forged = b'{"type":"booking.created","data":{"id":"forged"}}'
        now = dt.datetime.now(dt.UTC)
        headers = {"webhook-id": "msg_forged", "webhook-timestamp": str(int(now.timestamp())),
                   "webhook-signature": Webhook(new_secret()).sign("msg_forged", now,
                                                                   forged.decode())}
        async with aiohttp.ClientSession() as session:
            async with session.post(url, data=forged, headers=headers) as answer:
                assert answer.status == 401
        # The receiver handles in the order received: a ping after all of that comes next.
        await expect(await api.post(f"/api/v1/webhooks/{endpoint['id']}/ping", organizer), 202)
        await asyncio.to_thread(receiver.wait_for_output, "webhook.ping", 30)
    finally:
        receiver.stop()
    handled = [line for line in receiver.output.splitlines()
               if line.startswith(("booking.", "webhook."))]
    assert handled == [f"booking.created {booking['id']}", "webhook.ping None"]


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
