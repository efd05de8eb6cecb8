"""What the command says besides its results: one-line failures, progress bars, sizes."""

from __future__ import annotations

import sys
import time

from ..urls import redact

__all__ = ["CliError", "Progress", "fail", "size"]


class CliError(Exception):
    """A failure to report as one line on stderr."""


def fail(message: str) -> None:
    """One line on stderr, whatever the message's own line breaks."""
    print("chatstore: error: " + redact(" ".join(message.split())), file=sys.stderr)


class Progress:
    """A progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, label: str, total: int | None = None) -> None:
        self.label, self.total, self.done = label, total, 0
        self.enabled = sys.stderr.isatty()
        self.started = time.monotonic()

    def __call__(self, count: int) -> None:
        self.done += count
        if not self.enabled:
            return
        rate = self.done / max(time.monotonic() - self.started, 1e-9)
        if self.total:
            filled = int(30 * self.done / self.total)
            bar = "#" * filled + "." * (30 - filled)
            text = f"{self.label} [{bar}] {self.done:,}/{self.total:,}"
        else:
            text = f"{self.label} {self.done:,}"
        print(f"\r{text}  {rate:,.0f}/s", end="", file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.enabled and self.done:
            print(file=sys.stderr)


def size(n: int) -> str:
    """``n`` bytes in the largest unit (up to GiB) that keeps it at 1024 or more."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} TiB"  # pragma: no cover
