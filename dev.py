"""Set up a private virtualenv from the project's own files, then run eventbook or its tests.

    python3 dev.py serve [ARGS...]   run `eventbook serve` (embedded PostgreSQL and Redis
                                     unless DATABASE_URL / REDIS_URL are set)
    python3 dev.py test [ARGS...]    lint (ruff, mypy), then the whole test suite (pytest ARGS)
    python3 dev.py bench [ARGS...]   run the benchmarks (python -m bench ARGS...)
    python3 dev.py eventbook ARGS    run any eventbook subcommand

Only Python 3.11+ is needed. The virtualenv lives in .venv/ and is refreshed when
pyproject.toml changes; one install serves every command.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("EVENTBOOK_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
EXTRAS = {
    "serve": "embedded",
    "eventbook": "embedded",
    "test": "embedded,test",
    "bench": "embedded,test",
}


def quiet(args: list[str]) -> None:
    """Run pip; show what it printed only when it failed. Even with -q, pip passes on the
    build backend's notes (setuptools' editable-install caveat), which would otherwise
    open the server's log."""
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"dev.py: {' '.join(args)} failed ({result.returncode})")


def ensure_venv(extras: str) -> None:
    """Install eventbook with `extras` unless an install of this pyproject.toml already
    has them: switching between serve and test reuses one install. The stamp records
    the extras installed, so a later install keeps them (never narrows the venv)."""
    stamp = VENV / ".installed"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    wanted = set(extras.split(","))
    try:
        installed = json.loads(stamp.read_text())
        have = set(installed["extras"])
        if installed["digest"] == digest and wanted <= have:
            return
    except (OSError, ValueError, KeyError, TypeError):
        have = set()
    if not (BIN / "python").exists():
        print(f"dev.py: creating {VENV}", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted |= have
    print(f"dev.py: installing eventbook[{','.join(sorted(wanted))}] into {VENV}",
          file=sys.stderr)
    pip = [str(BIN / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    quiet([*pip, "install", "-U", "pip"])
    quiet([*pip, "install", "-e", f"{ROOT}[{','.join(sorted(wanted))}]"])
    stamp.write_text(json.dumps({"digest": digest, "extras": sorted(wanted)}))


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in EXTRAS:
        print(__doc__, file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    ensure_venv(EXTRAS[command])
    if command == "serve":
        args = [str(BIN / "eventbook"), "serve", *rest]
    elif command == "eventbook":
        args = [str(BIN / "eventbook"), *rest]
    elif command == "test":
        os.chdir(ROOT)
        for lint in (["ruff", "check", "eventbook", "tests", "bench"], ["mypy"]):
            result = subprocess.run([str(BIN / lint[0]), *lint[1:]])
            if result.returncode != 0:
                return result.returncode
        args = [str(BIN / "python"), "-m", "pytest", *rest]
    else:
        args = [str(BIN / "python"), "-m", "bench", *rest]
    os.chdir(ROOT)
    if os.name == "nt":
        return subprocess.call(args)
    os.execv(args[0], args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
