"""Progress goes to stderr, so that stdout holds only the summary."""

from __future__ import annotations

import sys


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
