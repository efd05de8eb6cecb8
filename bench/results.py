"""What a run measured: the rows of timed samples and the figures of the rows that are not
simple timings. The report is written from this alone."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from .peers import Peer
from .plan import Plan
from .rows import LoadResult, SearchData


@dataclass
class Row:
    """One operation at one size: each library's samples, in seconds."""

    op: str
    size: str
    samples: dict[str, list[float]] = field(default_factory=dict)

    def median(self, peer: str) -> float | None:
        values = self.samples.get(peer)
        return statistics.median(values) if values else None

    def p99(self, peer: str) -> float | None:
        values = sorted(self.samples.get(peer) or [])
        return values[math.ceil(len(values) * 0.99) - 1] if values else None


@dataclass
class PurgeResult:
    """``store.purge`` of idle conversations while clients do chat turns: what it deleted,
    how long it took, and the clients' turns during its slices and during the slices of the
    same length without it (bench/usage.py)."""

    conversations: int  # idle conversations made
    messages: int  # their messages
    clients: int
    slices: int
    conversations_deleted: int = 0
    messages_deleted: int = 0
    seconds: float = 0.0  # purging, all slices
    skipped: dict[str, int] = field(default_factory=dict)
    during: LoadResult | None = None
    without: LoadResult | None = None

    @property
    def rate(self) -> float:
        return self.messages_deleted / self.seconds if self.seconds else 0.0


@dataclass
class Results:
    plan: Plan
    seed: int
    order_seed: int
    peers: list[Peer]  # chatstore, raw asyncpg, then the other libraries: the table's columns
    rows: list[Row] = field(default_factory=list)
    import_rates: dict[str, float] = field(default_factory=dict)
    load_results: dict[str, LoadResult] = field(default_factory=dict)  # load_clients
    wide_load: dict[str, LoadResult] = field(default_factory=dict)  # wide_clients
    # history -> library -> bytes/message
    storage: dict[str, dict[str, float]] = field(default_factory=dict)
    search: SearchData | None = None
    plans: dict[str, str] = field(default_factory=dict)
    # operation -> statements one chatstore call of it sends (bench/trees.py)
    statements: dict[str, int] = field(default_factory=dict)
    server_version: str = "?"
    # bench/usage.py: the purge row, and how long each of its data sets took to make (what
    # -> seconds)
    purge: PurgeResult | None = None
    usage_setup: dict[str, float] = field(default_factory=dict)
