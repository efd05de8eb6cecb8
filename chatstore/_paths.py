"""Paths of conversation trees, as pure functions (no database): what a pop, clear or delete
in a tree must hand over so that no other conversation's history changes.

A conversation's history is a list of *parts* ``(owner, after, upto)``: the messages with
seq in ``(after, upto]`` stored under the conversation ``owner``. Its row keeps them as a
*path* (``path_owners``/``path_ends``: the parts before its own rows) plus its own rows up to
``message_count``. Parts are kept *normal*: none empty, no two neighbours with one owner;
then two conversations read the same stored rows for seqs 1..k exactly when their parts cut
at k are equal (``alternatives`` relies on it).

Invariant (kept by every plan here): a row stored under a conversation lies on that
conversation's own history. So when a conversation stops reading some of its own rows, they
are either read by nobody (deleted) or handed to one conversation that reads them all (the
*heir*: the reader whose part reaches highest; every reader's parts are cuts of the owner's
history, so it reads every row the others read), and every reader is pointed at the heir.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

__all__ = ["Handover", "Member", "Part", "Plan", "normal", "parts_of", "path_of",
           "plan_delete", "plan_truncate", "subtree"]

Part = tuple[UUID, int, int]  # (owner, after, upto): seqs after < seq <= upto


def normal(parts: Iterable[Part]) -> list[Part]:
    """``parts`` without empty parts, neighbours with one owner merged."""
    out: list[Part] = []
    for owner, after, upto in parts:
        if upto <= after:
            continue
        if out and out[-1][0] == owner and out[-1][2] == after:
            out[-1] = (owner, out[-1][1], upto)
        else:
            out.append((owner, after, upto))
    return out


def parts_of(cid: UUID, owners: Sequence[UUID] | None, ends: Sequence[int] | None,
             count: int) -> list[Part]:
    """The history of ``cid`` from its row: its path, then its own rows up to ``count``."""
    parts: list[Part] = []
    after = 0
    for owner, end in zip(owners or (), ends or (), strict=True):
        parts.append((owner, after, end))
        after = end
    parts.append((cid, after, count))
    return normal(parts)


def path_of(cid: UUID, parts: Sequence[Part]) -> tuple[list[UUID], list[int]] | None:
    """The row's ``(path_owners, path_ends)`` for the history ``parts`` of ``cid`` (``None``:
    no path, every row its own): every part but a last one that ``cid`` owns."""
    body = list(parts)
    if body and body[-1][0] == cid:
        body.pop()
    if not body:
        return None
    return [owner for owner, _, _ in body], [upto for _, _, upto in body]


def cut(parts: Sequence[Part], seq: int) -> list[Part]:
    """``parts`` up to ``seq``."""
    return normal((owner, after, min(upto, seq)) for owner, after, upto in parts
                  if after < seq)


@dataclass(slots=True)
class Member:
    """A conversation of a tree, as ``tree_members`` reads it."""

    id: UUID
    parent_id: UUID | None
    parts: list[Part]
    created_at: datetime
    held: bool = False


@dataclass(frozen=True, slots=True)
class Handover:
    """Rows of ``owner`` with seq in ``(after, upto]`` to store under ``heir``."""

    owner: UUID
    heir: UUID
    after: int
    upto: int


@dataclass(slots=True)
class Plan:
    """What a change to a tree writes: hand-overs first, then the new paths."""

    handovers: list[Handover] = field(default_factory=list)
    parts: dict[UUID, list[Part]] = field(default_factory=dict)


def _heir(members: Iterable[Member], owner: UUID, above: int,
          excluded: set[UUID]) -> tuple[Member, int] | None:
    """The reader (outside ``excluded``) of ``owner``'s rows above ``above`` whose part
    reaches highest (the oldest among equals), and how high."""
    best: tuple[Member, int] | None = None
    for member in members:
        if member.id in excluded:
            continue
        for part_owner, _, upto in member.parts:
            if part_owner != owner or upto <= above:
                continue
            if (best is None or upto > best[1]
                    or (upto == best[1] and (member.created_at, member.id)
                        < (best[0].created_at, best[0].id))):
                best = (member, upto)
    return best


def _hand_over(members: Iterable[Member], owner: UUID, above: int, heir: UUID,
               excluded: set[UUID], plan: Plan) -> None:
    """Point every reader (outside ``excluded``) of ``owner``'s rows above ``above`` at
    ``heir``: a part reaching above is split there."""
    for member in members:
        if member.id in excluded:
            continue
        parts = plan.parts.get(member.id, member.parts)
        if not any(o == owner and upto > above for o, _, upto in parts):
            continue
        new: list[Part] = []
        for part_owner, after, upto in parts:
            if part_owner != owner or upto <= above:
                new.append((part_owner, after, upto))
            elif after >= above:
                new.append((heir, after, upto))
            else:
                new += [(owner, after, above), (heir, above, upto)]
        plan.parts[member.id] = normal(new)


def plan_truncate(members: Mapping[UUID, Member], cid: UUID, keep: int) -> Plan:
    """``cid`` keeps seqs 1..``keep`` of its history (a pop, a clear): its own rows above
    ``keep`` that other conversations read go to the heir; the rest are deleted by the
    caller (``truncate_history``)."""
    plan = Plan()
    heir = _heir(members.values(), cid, keep, {cid})
    if heir is not None:
        member, upto = heir
        plan.handovers.append(Handover(cid, member.id, keep, upto))
        _hand_over(members.values(), cid, keep, member.id, {cid}, plan)
    plan.parts[cid] = cut(members[cid].parts, keep)
    return plan


def subtree(members: Mapping[UUID, Member], cid: UUID) -> list[UUID]:
    """``cid`` and every conversation forked from it, directly or not (parents first)."""
    children: dict[UUID, list[UUID]] = {}
    for member in members.values():
        if member.parent_id is not None:
            children.setdefault(member.parent_id, []).append(member.id)
    order, todo = [], [cid]
    while todo:
        current = todo.pop()
        order.append(current)
        todo.extend(sorted(children.get(current, ()), reverse=True))
    return order


def plan_delete(members: Mapping[UUID, Member], doomed: Sequence[UUID]) -> Plan:
    """``doomed`` (a fork and its forks) are deleted: every row of theirs that a surviving
    conversation reads goes to an heir among the survivors first."""
    plan = Plan()
    excluded = set(doomed)
    for owner in doomed:
        survivors = [m if m.id not in plan.parts else Member(m.id, m.parent_id,
                                                              plan.parts[m.id], m.created_at)
                     for m in members.values() if m.id not in excluded]
        heir = _heir(survivors, owner, 0, excluded)
        if heir is None:
            continue
        member, upto = heir
        plan.handovers.append(Handover(owner, member.id, 0, upto))
        _hand_over(survivors, owner, 0, member.id, excluded, plan)
    return plan
