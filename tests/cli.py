"""Running the chatstore command for real, in a subprocess (tests/unit/test_cli.py,
tests/store/test_cli.py and tests/store/test_check.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CHATSTORE = str(Path(sys.executable).parent / "chatstore")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHATSTORE, *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})
