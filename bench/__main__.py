"""Benchmark chatstore side by side with the libraries people use for chat history today.

    python -m bench            # the full run: writes docs/benchmarks.md and its plots
    python -m bench --quick    # small sizes, under three minutes; writes to a temp folder
    python -m bench --only usage [--quick]  # the usage, retention and compaction rows alone

Everything runs on one PostgreSQL (an embedded one unless --database is given), with the
same conversations loaded into every library, and every operation measured interleaved:
round after round, each library in turn, in an order shuffled every round (seeded: the seed
is printed and recorded), so that machine noise and call-order effects hit all of them alike.
Prints medians, p99 and each library's ratio to chatstore; see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

from .fixture import Fixture, tuned_embedded
from .log import log
from .plan import FULL, QUICK
from .report.console import summary
from .report.markdown import write_report
from .results import Results
from .suite import run, run_usage

REPO = Path(__file__).resolve().parent.parent


async def amain(args: argparse.Namespace) -> int:
    plan = QUICK if args.quick else FULL
    started = time.perf_counter()
    server = None
    dsn = args.database
    if not dsn:
        base = Path(tempfile.mkdtemp(prefix="chatstore-bench-"))
        server = await tuned_embedded(base / "pgdata", args.pg)
        dsn = server.dsn
        log(f"embedded PostgreSQL {args.pg} in {base}")
    order_seed = args.order_seed if args.order_seed is not None else (
        random.SystemRandom().randrange(1 << 31))
    log(f"order seed {order_seed} (replay with --order-seed {order_seed})")
    fx = Fixture(plan, dsn, seed=args.seed, order_seed=order_seed,
                 freeze=not args.no_gc_freeze)
    if args.only:
        fx.peers = [fx.own, fx.raw]
    if args.no_gc_freeze:
        log("no gc.freeze() after loading: the collector walks everything loaded")
    results = Results(plan, args.seed, order_seed, fx.peers)
    try:
        await (run_usage if args.only == "usage" else run)(fx, results)
    finally:
        await fx.close()
        if server is not None:
            server.stop()
    out_dir = Path(args.out) if args.out else (
        Path(tempfile.mkdtemp(prefix="chatstore-bench-out-")) if args.quick or args.only
        else REPO / "docs")
    command = "python -m bench" + (" --quick" if args.quick else "") + (
        f" --only {args.only}" if args.only else "")
    path = write_report(results, out_dir, command, time.perf_counter() - started)
    print("\n".join(summary(results, path)))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, under three minutes")
    parser.add_argument("--only", choices=["usage"],
                        help="run only these rows (usage: bench/usage.py's, with no background "
                             "messages), report in a temp folder unless --out")
    parser.add_argument("--database", help="postgresql:// URL (default: embedded server)")
    parser.add_argument("--pg", type=int, default=16, help="embedded PostgreSQL version")
    parser.add_argument("--out", help="folder for benchmarks.md and the plot "
                                      "(default: docs/, or a temp folder with --quick)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated data")
    parser.add_argument("--no-gc-freeze", action="store_true",
                        help="do not gc.freeze() the loaded objects before timing (a backend "
                             "that does not freeze; see bench/outside.py)")
    parser.add_argument("--order-seed", type=int, default=None,
                        help="seed of the order of libraries in every round (default: a "
                             "fresh one, printed and recorded in the report)")
    return asyncio.run(amain(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
