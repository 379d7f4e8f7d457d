"""Running a driver script (tests/js/*.mjs) under Node against a test server.

The clients are pinned in tests/js/package.json and package-lock.json and installed by `make test`
(`npm ci`). Without node or the installed packages the tests skip on a laptop; under CI=true they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent


def not_installed() -> list[str]:
    """Each package.json dependency that node_modules lacks at its pinned version, as `name@version`:
    a node_modules from before a pin changed fails here, clearly, not somewhere inside a driver."""
    pins = json.loads((HERE / "package.json").read_text())["dependencies"]
    return [f"{name}@{pin}" for name, pin in pins.items() if installed_version(name) != pin]


def installed_version(name: str) -> str | None:
    manifest = HERE / "node_modules" / name / "package.json"
    return json.loads(manifest.read_text())["version"] if manifest.is_file() else None


def require_clients() -> str:
    """The node executable, once the clients are installed."""
    node = shutil.which("node")
    stale = not_installed()
    missing = (
        "node is not installed"
        if node is None
        else f"tests/js/node_modules lacks {', '.join(stale)}: run `make js-clients` (`npm ci` in tests/js)"
        if stale
        else None
    )
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    assert node is not None
    return node


def run(script: str, url: str, program: dict[str, Any], timeout: float = 90) -> list[dict[str, Any]]:
    """Run a driver's program of steps; its record of each step."""
    node = require_clients()
    done = subprocess.run(
        [node, str(HERE / script), url, json.dumps(program)],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "SUPPRESS_TRANSFORMATION_WARNINGS": "true"},
    )
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])
