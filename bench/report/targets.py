"""Each target of the benchmark issue: what it asks, what this run measured, met or not.

A missed target's last column is a note of an earlier run (``why.md``: what stands in the
way, found with profiles, EXPLAIN and scratch-copy experiments; structural, not recomputed
per run), shown with that note's date.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ..plan import (
    ALTERNATIVES_OP,
    COMPACT_LENGTH,
    COMPACT_OP,
    COMPACT_WINDOW,
    COPY,
    CREATE_OP,
    DEEP,
    FORK_OP,
    ITEMS_WHOLE_OP,
    LONG_APPEND_OP,
    LONG_WHOLE_OP,
    NO_USAGE,
    REGENERATIONS,
    SEARCH_WORD,
    TOTALS_DAY_OP,
    TOTALS_OP,
    TREE_DEPTH,
    TREE_LENGTH,
    USAGE_OWN_CALL,
    USAGE_TURN_OP,
    USAGE_WITH_REPLY,
    WIDE_POOL,
)
from ..results import Results
from .format import fmt_ms

NOTES = Path(__file__).with_name("why.md")


@dataclass
class Target:
    what: str
    measured: str
    met: bool | None  # None: not measured in this run
    why: str = ""


@cache
def notes() -> tuple[str, dict[str, str]]:
    """``why.md``'s date and its notes by name, each note's lines joined into one line."""
    text = NOTES.read_text()
    dated = re.search(r"^Notes of (\d{4}-\d{2}-\d{2})", text, re.MULTILINE)
    date = dated.group(1) if dated else "an earlier run"
    sections = re.split(r"^## (\S+)\n", text, flags=re.MULTILINE)
    return date, {name: " ".join(body.split()) for name, body in
                  zip(sections[1::2], sections[2::2], strict=True)}


def note(name: str) -> str:
    date, found = notes()
    text = found.get(name, "")
    return f"*Notes of {date}:* {text}" if text else ""


def targets(results: Results) -> list[Target]:
    """Each target of the benchmark issue: what it asks, what was measured, met or not."""
    found = {(r.op, r.size): r for r in results.rows}
    out: list[Target] = []
    own, raw = "chatstore", "raw asyncpg"
    others = [p.name for p in results.peers if p.name not in (own, raw)]

    def ratio(op: str, size: str, a: str, b: str) -> float | None:
        row = found.get((op, size))
        if row is None:
            return None
        top, bottom = row.median(a), row.median(b)
        return None if top is None or bottom is None else top / bottom

    def add(what: str, value: float | None, text: str, ok: bool, why: str) -> None:
        if value is None:
            out.append(Target(what, "not measured", None))
        else:
            out.append(Target(what, text, ok, "" if ok else note(why)))

    lengths = results.plan.lengths
    worst = max((v for n in lengths if (v := ratio("newest 50", f"{n:,}", own, raw))),
                default=None)
    add("newest 50, any size: ≤ 1.25× raw asyncpg (worst size)", worst,
        f"{worst or 0:.2f}×", (worst or 9) <= 1.25, "read")
    worst = max((v for n in lengths
                 if (v := ratio("page of 1,000 in the middle", f"{n:,}", own, raw))),
                default=None)
    add("page of 1,000: ≤ 1.5× raw asyncpg (worst size)", worst, f"{worst or 0:.2f}×",
        (worst or 9) <= 1.5, "read")
    for op, what in (("whole history", "~200 B messages"),
                     (LONG_WHOLE_OP, "~2 KB messages"),
                     (ITEMS_WHOLE_OP, "Agents SDK items")):
        # The slowest size's speed-up over that size's fastest peer.
        sized = [(min(v for n in others if (v := ratio(op, r.size, n, own))), r.size)
                 for r in results.rows if r.op == op
                 and any(ratio(op, r.size, n, own) for n in others)]
        worst = min(sized, default=None)
        add(f"whole history, {what}, every size: ≥ 1.25× faster than the fastest peer "
            "(slowest size)", None if worst is None else worst[0],
            "" if worst is None else f"{worst[0]:.2f}× at {worst[1]} (" + "; ".join(
                f"{s} {v:.2f}×" for v, s in sized) + ")",
            worst is not None and worst[0] >= 1.25, "whole")
    for op, what in (("append one message", "~200 B"), (LONG_APPEND_OP, "~2 KB")):
        floor = ratio(op, "1,000", own, raw)
        # chatstore's time over the fastest peer's: the largest of chatstore / peer.
        peer_gaps = [(v, n) for n in others if (v := ratio(op, "1,000", own, n))]
        if floor is not None and peer_gaps:
            to_peer, name = max(peer_gaps)
            add(f"append one {what} message: ≤ 1.15× raw asyncpg and ≤ 1.05× the fastest "
                "peer's time", floor, f"{floor:.2f}× raw; {to_peer:.2f}× {name}",
                floor <= 1.15 and to_peer <= 1.05, "append")
    search = results.search
    if search is not None:
        many = found.get((f"search '{SEARCH_WORD}', 1 of {search.users} users",
                          f"{search.messages:,}"))
        solo = found.get((f"search '{SEARCH_WORD}', only that user's messages",
                          f"{search.messages // search.users:,}"))
        if many is not None and solo is not None and many.median(own) and solo.median(own):
            ms = (many.median(own) or 0) * 1e3
            vs_solo = (many.median(own) or 0) / (solo.median(own) or 1)
            add(f"search, common word, 1 of {search.users} users, {search.messages:,} "
                "messages: ≤ 10 ms and ≤ 2× the same query on that user's messages only",
                ms, f"{ms:.2f} ms; {vs_solo:.2f}× alone", ms <= 10 and vs_solo <= 2,
                "search")
    rate, ceiling = results.import_rates.get(own), results.import_rates.get(COPY)
    if rate and ceiling:
        add("import: ≥ 0.8× a bare COPY into the same schema", rate / ceiling,
            f"{rate / ceiling:.2f}× ({rate:,.0f}/s against {ceiling:,.0f}/s)",
            rate / ceiling >= 0.8, "import")
    load = results.load_results
    peer_rates = [(r.rate, n) for n, r in load.items() if n in others and r.turns]
    leased = load.get("chatstore (store.turn)")
    if leased is not None and leased.turns and peer_rates:
        best, name = max(peer_rates)
        text = (f"store.turn {leased.rate / best:.2f}× ({leased.rate:,.0f} against {name}'s "
                f"{best:,.0f} turns/s), p99 {fmt_ms(leased.percentile(0.99))} ms")
        if own in load and load[own].turns:
            plain = load[own]
            text += (f"; without the lease {plain.rate / best:.2f}×, p99 "
                     f"{fmt_ms(plain.percentile(0.99))} ms")
        add(f"load, {results.plan.load_clients} clients: chat turns/s with store.turn ≥ 1.5× "
            "the fastest peer's, p99 reported", leased.rate / best, text,
            leased.rate / best >= 1.5, "load")
    else:
        add(f"load, {results.plan.load_clients} clients: chat turns/s with store.turn ≥ 1.5× "
            "the fastest peer's", None, "", False, "load")
    wide = results.wide_load
    if wide:
        broken = sorted(n for n, r in wide.items() if r.error or not r.turns)
        text = "; ".join(f"{n} {r.rate:,.0f}/s p99 {fmt_ms(r.percentile(0.99))} ms"
                         for n, r in wide.items() if n in (own, "chatstore (store.turn)"))
        if broken:
            text += "; failed: " + ", ".join(broken)
        add(f"load, {results.plan.wide_clients} clients on a pool of {WIDE_POOL}: p99 reported "
            "for every library (chatstore's without an error)", 1.0, text,
            not (wide.get(own) and wide[own].error), "load")
    big, small = (found.get(("newest 50", f"{lengths[-1]:,}")),
                  found.get(("newest 50", f"{lengths[0]:,}")))
    if big is not None and small is not None:
        flat = (big.median(own) or 0) / (small.median(own) or 1)
        add(f"flat: newest 50 at {lengths[-1]:,} within 1.2× of at {lengths[0]:,}", flat,
            f"{flat:.2f}×", flat <= 1.2, "flat")
    items = results.storage.get("Agents SDK items", {})
    chat = results.storage.get("chat messages", {})
    smallest = min(((b, n) for n, b in items.items() if n != own), default=None)
    if own in items and smallest is not None:
        times = items[own] / smallest[0]
        chat_small = min(((b, n) for n, b in chat.items() if n != own), default=None)
        text = (f"items: {items[own]:,.0f} B against {smallest[1]}'s {smallest[0]:,.0f} B "
                f"({times:.2f}×)")
        if own in chat and chat_small is not None:
            text += (f"; chat: {chat[own]:,.0f} B against {chat_small[1]}'s "
                     f"{chat_small[0]:,.0f} B ({chat[own] / chat_small[0]:.2f}×)")
        add("storage: bytes per message reported beside each peer's; Agents SDK items "
            "stored losslessly ≤ 1.5× the smallest peer's", times, text, times <= 1.5,
            "storage")
    else:
        add("storage: Agents SDK items stored losslessly ≤ 1.5× the smallest peer's", None,
            "", False, "storage")
    out += tree_targets(results)
    out += usage_targets(results)
    return out


def tree_targets(results: Results) -> list[Target]:
    """The conversation trees' targets: a fork costs about a create whatever its seq, reads
    of a deep fork cost about the same as of a plain conversation, alternatives are one
    round trip."""
    own = "chatstore"
    out: list[Target] = []

    def median(op: str, size: str | None = None) -> float | None:
        found = [r for r in results.rows if r.op == op and (size is None or r.size == size)]
        return found[0].median(own) if found else None

    def add(what: str, text: str | None, ok: bool, why: str) -> None:
        out.append(Target(what, "not measured", None) if text is None else
                   Target(what, text, ok, "" if ok else note(why)))

    fork, create = median(FORK_OP), median(CREATE_OP)
    ratio = fork / create if fork and create else None
    add(f"fork at seq {TREE_LENGTH:,}: ≤ 1.5× create_conversation",
        None if ratio is None else f"{ratio:.2f}× ({fmt_ms(fork)} ms against "
                                   f"{fmt_ms(create)} ms)", (ratio or 9) <= 1.5, "fork")
    reads = {"newest 50": "newest 50", "page of 50 in the middle": "page of 50",
             "context window (4,000 tokens)": "context window", "stateless chat turn":
             "chat turn"}
    ratios: dict[str, float] = {}
    for op, short in reads.items():
        deep, plain = median(op, DEEP), median(op, f"{TREE_LENGTH:,}")
        if deep and plain:
            ratios[short] = deep / plain
    worst = max(ratios.values(), default=None)
    add(f"fork {TREE_DEPTH} levels deep, {TREE_LENGTH:,} messages: newest 50, page of 50 in "
        "the middle, 4,000-token context window and stateless chat turn each ≤ 1.3× the same "
        "call on a plain conversation of the same length",
        None if len(ratios) < len(reads) else "; ".join(
            f"{short} {r:.2f}×" for short, r in ratios.items()),
        (worst or 9) <= 1.3, "deep_fork")
    took, sent = median(ALTERNATIVES_OP), results.statements.get(ALTERNATIVES_OP)
    add(f"alternatives ({REGENERATIONS + 1} versions of a reply): one round trip, its time "
        "reported",
        None if took is None or sent is None else
        f"{sent} statement{'s' if sent != 1 else ''}; {fmt_ms(took)} ms", sent == 1,
        "alternatives")
    return out


def paired_difference(results: Results, op: str, size: str, base: str) -> float | None:
    """The median over rounds of chatstore's sample of ``(op, size)`` minus that of
    ``(op, base)`` in the same round: rows timed in the same rounds with no time budget
    hold one sample per round each, in round order."""
    found = {r.size: r for r in results.rows if r.op == op}
    if size not in found or base not in found:
        return None
    top, bottom = (found[size].samples.get("chatstore"),
                   found[base].samples.get("chatstore"))
    if not top or not bottom or len(top) != len(bottom):
        return None
    return statistics.median(a - b for a, b in zip(top, bottom, strict=True))


def usage_targets(results: Results) -> list[Target]:
    """Usage, retention and compaction (bench/usage.py): recording usage adds little to a
    chat turn, a month's totals cost the same at few and many entries, purge leaves
    concurrent chat turns' p99 within 2x, a compacted long conversation's context window
    costs what a short one's does."""
    own = "chatstore"
    plan = results.plan
    out: list[Target] = []

    def median(op: str, size: str) -> float | None:
        found = [r for r in results.rows if r.op == op and r.size == size]
        return found[0].median(own) if found else None

    def add(what: str, text: str | None, ok: bool, why: str) -> None:
        out.append(Target(what, "not measured", None) if text is None else
                   Target(what, text, ok, "" if ok else note(why)))

    plain, with_reply = median(USAGE_TURN_OP, NO_USAGE), median(USAGE_TURN_OP,
                                                                USAGE_WITH_REPLY)
    own_call = median(USAGE_TURN_OP, USAGE_OWN_CALL)
    text = None
    added = None
    if plain and with_reply:
        added = with_reply - plain
        text = (f"{added * 1e3:+.3f} ms ({fmt_ms(with_reply)} against {fmt_ms(plain)} ms, "
                f"{with_reply / plain:.2f}×)")
        paired = paired_difference(results, USAGE_TURN_OP, USAGE_WITH_REPLY, NO_USAGE)
        if paired is not None:
            text += f"; per round (same moments): median {paired * 1e3:+.3f} ms"
        if own_call:
            text += (f"; recorded by a call of its own: {(own_call - plain) * 1e3:+.3f} ms "
                     f"({own_call / plain:.2f}×)")
    add("recording usage (`turn.append(reply, usage=...)`) adds ≤ 0.2 ms to a chat turn in "
        "`store.turn` (difference of medians; ratio)", text,
        added is not None and added <= 0.0002, "usage_turn")

    sizes = plan.usage_user_entries
    cells = {(op, n): median(op, f"{n:,} entries") for op in (TOTALS_OP, TOTALS_DAY_OP)
             for n in sizes}
    took = [v for v in cells.values() if v is not None]
    text = None
    if len(took) == len(cells):
        text = "; ".join(
            f"{'by day' if op == TOTALS_DAY_OP else 'one total'}: " + ", ".join(
                f"{fmt_ms(cells[(op, n)])} ms at {n:,}" for n in sizes)
            for op in (TOTALS_OP, TOTALS_DAY_OP))
        flat = (cells[(TOTALS_OP, sizes[-1])] or 0) / (cells[(TOTALS_OP, sizes[0])] or 1)
        text += f"; {sizes[-1]:,} over {sizes[0]:,}: {flat:.2f}×"
    add(f"`usage_totals` of one user for a month ≤ 2 ms at "
        f"{' and at '.join(f'{n:,}' for n in sizes)} entries of that user, among "
        f"{plan.usage_other_entries:,} entries of other users (one total and by day)", text,
        bool(took) and max(took) <= 0.002, "usage_totals")

    purge = results.purge
    text = None
    ratio = None
    if purge is not None and purge.during is not None and purge.without is not None:
        during, without = purge.during.percentile(0.99), purge.without.percentile(0.99)
        if during and without:
            ratio = during / without
            text = (f"{purge.rate:,.0f} messages/s ({purge.messages_deleted:,} messages in "
                    f"{purge.conversations_deleted:,} conversations in {purge.seconds:.1f} s); "
                    f"p99 {fmt_ms(during)} ms during against {fmt_ms(without)} ms without "
                    f"({ratio:.2f}×)")
    add(f"`purge` of {plan.purge_conversations * plan.purge_length:,} idle messages in "
        f"{plan.purge_conversations:,} conversations: messages deleted per second reported; "
        f"the p99 of {plan.purge_clients} clients' concurrent chat turns ≤ 2× their p99 "
        "without it", text, ratio is not None and ratio <= 2, "purge")

    short, long = median(COMPACT_OP, f"{COMPACT_WINDOW}"), median(
        COMPACT_OP, f"{COMPACT_LENGTH:,}, compacted")
    ratio = long / short if long and short else None
    add(f"context window of a compacted {COMPACT_LENGTH:,}-message conversation ≤ 1.1× that "
        f"of a {COMPACT_WINDOW}-message one",
        None if ratio is None else f"{ratio:.2f}× ({fmt_ms(long)} ms against "
                                   f"{fmt_ms(short)} ms)", (ratio or 9) <= 1.1, "compaction")
    return out
