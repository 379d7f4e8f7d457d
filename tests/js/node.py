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


def require_clients() -> str:
    """The node executable, once the clients are installed."""
    node = shutil.which("node")
    missing = (
        "node is not installed"
        if node is None
        else "tests/js/node_modules is missing: run `make test` (it runs `npm ci` in tests/js)"
        if not (HERE / "node_modules" / "ai").is_dir() or not (HERE / "node_modules" / "@ag-ui" / "client").is_dir()
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
