"""dev.py, the newcomer's entry point: one install serves every command, quietly."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_dev(venv: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("EVENTBOOK_VENV", str(venv))
    spec = importlib.util.spec_from_file_location("dev_under_test", ROOT / "dev.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def record_installs(monkeypatch: pytest.MonkeyPatch, dev: ModuleType) -> list[list[str]]:
    calls: list[list[str]] = []
    monkeypatch.setattr(dev, "quiet", lambda args: calls.append(list(args)))
    return calls


def test_serve_after_test_reuses_the_install(tmp_path: Path, monkeypatch) -> None:
    dev = load_dev(tmp_path, monkeypatch)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").touch()
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    (tmp_path / ".installed").write_text(
        json.dumps({"digest": digest, "extras": ["embedded", "test"]})
    )
    calls = record_installs(monkeypatch, dev)
    dev.ensure_venv("embedded")
    dev.ensure_venv("embedded,test")
    assert calls == []


def test_a_wider_install_keeps_the_extras_already_there(tmp_path: Path, monkeypatch) -> None:
    dev = load_dev(tmp_path, monkeypatch)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").touch()
    (tmp_path / ".installed").write_text(json.dumps({"digest": "old", "extras": ["test"]}))
    calls = record_installs(monkeypatch, dev)
    dev.ensure_venv("embedded")
    assert calls[-1][-1] == f"{ROOT}[embedded,test]"
    installed = json.loads((tmp_path / ".installed").read_text())
    assert installed["extras"] == ["embedded", "test"]
    calls.clear()
    dev.ensure_venv("test")
    assert calls == []


def test_the_package_builds_without_warnings_and_ships_the_docs_page(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    # pip's own notes about this machine's index locations are not the build's.
    lines = [line for line in (result.stdout + result.stderr).splitlines()
             if line.strip() and "Location 'file:" not in line]
    assert not [line for line in lines if "arning" in line], lines
    [wheel] = tmp_path.glob("eventbook-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"eventbook/static/docs.html", "eventbook/static/docs.js"} <= set(names)
