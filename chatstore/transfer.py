"""Export a user's conversations as JSON Lines, and import such a file.

One line per conversation: its fields, and ``messages``, a list in seq order of OpenAI-style
dicts (``role``, ``content``, and ``tool_calls`` / ``tool_call_id`` where present), or
``{"item": {...}}`` for a message stored as an agent item, plus chatstore's fields
(``seq``, ``metadata``, ``token_count``, ``idempotency_key``, ``created_at``, and
``summary_through`` on a summary that ``ChatStore.compact`` stored). Exporting, importing
into an empty database and exporting again gives the same bytes.

Trees: a line carries its conversation's tree fields (``root_id``, ``parent_id``,
``forked_at``, ``current_id``). A fork's line also has ``path`` (``[[owner, last seq],
...]``: where its history before its own rows is stored) and lists only the messages stored
under it (its own rows, with their seqs); a root's lists its whole history, 1..n, as before
trees existed. Import restores the tree as it was: ids, forks, shared rows, current version.

Retention: a line carries ``expires_at`` (its tree's expiry, the same on every line of a
tree; import keeps the root's) and ``held`` (its legal hold); a file written before they
existed imports with no expiry and no hold.

Usage: after the conversations, one line per entry of the user's usage ledger, oldest first,
marked ``"kind": "usage"`` (its first field; a line without ``kind`` is a conversation, as
in every file before usage was exported): ``user_id``, ``id`` (the entry's), ``created_at``,
``conversation_id`` (the conversation may have been deleted: entries outlive it), ``key``
(its idempotency key, or null), ``model``, the counts (``input_tokens``, ``output_tokens``,
``cached_input_tokens``, ``reasoning_tokens``, ``requests``), ``cost_micros`` (or null) and
``metadata``. Import stores each entry as it was (id, time and key kept) and moves the usage
rollups by the entries it inserted in the same statement; an entry already stored (its id,
or its user's key) is skipped, so importing a file twice counts its usage once. A file
without usage lines imports as before.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, cast
from uuid import UUID

from ._paths import parts_of
from .errors import InvalidInput, NotFound
from .models import (
    Conversation,
    Message,
    conversation_from_row,
    messages_from_rows,
    usage_from_row,
)
from .sql import SQL
from .store import ChatStore
from .validation import USAGE_FIELDS, Validator, dumps_json

__all__ = ["ImportReport", "export_user", "import_file"]

#: Every usage line starts with this (``kind`` is its first field).
USAGE_LINE_START = '{"kind":"usage",'
USAGE_PAGE = 1000

Progress = Callable[[int], None]
MESSAGE_PAGE = 1000
CONVERSATION_PAGE = 200
# Rows (conversations and messages) an import checks and writes at a time: a chunk's round
# trips (under 1 ms) are noise against its COPY (~40 us a row), and checking the first chunk,
# which nothing overlaps (~12 us a row), is short.
CHUNK_ROWS = 2000
# The columns an import COPies into messages. content is copied as exported (an item's text
# too: an import does not store it once as appends do; reads give the same text either way).
_MESSAGE_COLUMNS = ["user_id", "conversation_id", "seq", "role", "content", "tool_calls",
                    "tool_call_id", "metadata", "token_count", "idempotency_key",
                    "created_at", "item", "summary_through"]


def _message_dict(message: Message) -> dict[str, Any]:
    data = message.model_dump(mode="json")
    out: dict[str, Any] = ({"item": message.item} if message.item is not None
                           else message.to_openai())
    for key in ("seq", "metadata", "token_count", "idempotency_key", "created_at"):
        out[key] = data[key]
    if message.summary_through is not None:
        out["summary_through"] = message.summary_through
    return out


def _usage_line(row: Any) -> str:
    entry = usage_from_row(row).model_dump(mode="json")
    return dumps_json({"kind": "usage", "user_id": entry.pop("user_id"), "id": str(row["id"]),
                       "created_at": entry.pop("created_at"), **entry})


async def export_user(store: ChatStore, user_id: str,
                      progress: Progress | None = None) -> AsyncIterator[str]:
    """Yield one JSON line (without newline) per conversation of ``user_id``, latest
    activity first, messages in seq order; then one per entry of the user's usage ledger,
    oldest first (lines that start with :data:`USAGE_LINE_START`).

    Everything is read from one snapshot (one connection, one ``REPEATABLE READ READ ONLY``
    transaction, on the store's call path: its timeouts, row-level security and error
    mapping apply): writes during the export are either wholly in the file or not at all, so
    every line's ``message_count`` matches its messages, no conversation is skipped, and the
    usage lines are the ledger as of that moment.

    :raises NotFound: the user does not exist.
    """
    user_id = store.validator.user_id(user_id)
    async with store.call_path.snapshot(user_id) as conn:
        if not await conn.fetchval(SQL.user_exists, user_id):
            raise NotFound(f"user {user_id!r} not found")
        rows = await conn.fetch(SQL.list_all_conversations, user_id, CONVERSATION_PAGE)
        while rows:
            for row in rows:
                conversation = conversation_from_row(row)
                messages: list[dict[str, Any]] = []
                after = 0
                while True:
                    chunk = messages_from_rows(await conn.fetch(
                        SQL.export_messages, user_id, conversation.id, after,
                        MESSAGE_PAGE), user_id, conversation.id)
                    messages.extend(_message_dict(m) for m in chunk)
                    if progress:
                        progress(len(chunk))
                    if len(chunk) < MESSAGE_PAGE:
                        break
                    after = chunk[-1].seq
                line = conversation.model_dump(mode="json")
                if row["path_owners"] is not None:
                    line["path"] = [[str(owner), end] for owner, end
                                    in zip(row["path_owners"], row["path_ends"], strict=True)]
                line["messages"] = messages
                yield dumps_json(line)
            if len(rows) < CONVERSATION_PAGE:
                break
            last = rows[-1]
            rows = await conn.fetch(SQL.list_all_conversations_before, user_id,
                                    last["updated_at"], last["id"], CONVERSATION_PAGE)
        entries = await conn.fetch(SQL.export_usage, user_id, USAGE_PAGE)
        while entries:
            for row in entries:
                yield _usage_line(row)
            if len(entries) < USAGE_PAGE:
                break
            last = entries[-1]
            entries = await conn.fetch(SQL.export_usage_after, user_id, last["created_at"],
                                       last["id"], USAGE_PAGE)


@dataclass
class ImportReport:
    """What an import did."""

    conversations_read: int = 0
    messages_read: int = 0
    conversations_imported: int = 0
    messages_imported: int = 0
    users_created: int = 0
    usage_read: int = 0
    usage_imported: int = 0  # the rest were stored already (same id, or same user and key)


@dataclass
class _Parsed:
    conversation: Conversation
    rows: bytes  # its messages, one COPY text-format line each
    count: int
    path: tuple[list[UUID], list[int]] | None = None


@dataclass
class _UsageEntry:
    """A usage line, checked: the columns of import_usage, in its order."""

    user_id: str
    id: UUID
    created_at: datetime
    conversation_id: UUID
    key: str | None
    model: str
    counts: tuple[int, int, int, int, int]
    cost_micros: int | None
    metadata: str


@dataclass
class _Chunk:
    conversations: list[_Parsed]
    usage: list[_UsageEntry]

    def __bool__(self) -> bool:
        return bool(self.conversations or self.usage)

    def users(self) -> set[str]:
        return ({p.conversation.user_id for p in self.conversations}
                | {u.user_id for u in self.usage})


def _copy_text(value: str | int | None) -> str:
    """A value as a field of COPY's text format (no NUL: the checks refuse or replace it)."""
    if value is None:
        return "\\N"
    if isinstance(value, int):
        return str(value)
    return (value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
            .replace("\t", "\\t"))


def _parse_json(number: int, text: str) -> dict[str, Any]:
    where = f"line {number}"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(where, f"is not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(data, dict):
        raise InvalidInput(where, "must be a JSON object (a conversation or a usage entry)")
    kind = data.pop("kind", "conversation")
    if kind not in ("conversation", "usage"):
        raise InvalidInput(f"{where}: kind", "must be 'usage', or absent for a conversation "
                           "(a file of a newer chatstore?)")
    data["kind"] = kind
    return data


def _instant(value: Any, field: str) -> datetime:
    try:
        instant = datetime.fromisoformat(str(value))
    except ValueError:
        raise InvalidInput(field, "is not an ISO timestamp") from None
    if instant.tzinfo is None:
        raise InvalidInput(field, "has no time zone")
    return instant


def _uuid(value: Any, field: str) -> UUID:
    try:
        return UUID(str(value))
    except ValueError:
        raise InvalidInput(field, "is not a UUID") from None


def _parse_usage(check: Validator, number: int, data: dict[str, Any]) -> _UsageEntry:
    """A usage line: the entry's identity (user, id, time, conversation, key) and the
    fields ``record_usage`` takes, checked by the same rules."""
    where = f"line {number}"
    identity = {name: data.pop(name, None)
                for name in ("kind", "user_id", "id", "created_at", "conversation_id", "key")}
    for name in ("user_id", "id", "created_at", "conversation_id"):
        if identity[name] is None:
            raise InvalidInput(f"{where}: {name}", "is missing")
    unknown = sorted(name for name in data if name not in USAGE_FIELDS)
    if unknown:
        raise InvalidInput(f"{where}: {unknown[0]}", "is not a field of a usage line")
    usage = check.usage(data, f"{where}: usage")
    return _UsageEntry(
        user_id=check.user_id(identity["user_id"]), id=_uuid(identity["id"], f"{where}: id"),
        created_at=_instant(identity["created_at"], f"{where}: created_at"),
        conversation_id=_uuid(identity["conversation_id"], f"{where}: conversation_id"),
        key=check.usage_key(identity["key"], f"{where}: key"), model=usage.model,
        counts=(usage.input_tokens, usage.output_tokens, usage.cached_input_tokens,
                usage.reasoning_tokens, usage.requests),
        cost_micros=usage.cost_micros, metadata=usage.metadata)


def _parse_line(check: Validator, number: int, data: dict[str, Any]) -> _Parsed:
    where = f"line {number}"
    data.pop("kind")
    raw_messages = data.pop("messages", None)
    raw_path = data.pop("path", None)
    data.setdefault("revision", 0)  # files exported before revisions existed
    # files exported before trees existed: every conversation a root
    for name, default in (("root_id", data.get("id")), ("parent_id", None),
                          ("forked_at", None), ("current_id", data.get("id"))):
        data.setdefault(name, default)
    # files exported before retention existed: no expiry, no hold
    data.setdefault("expires_at", None)
    data.setdefault("held", False)
    if not isinstance(raw_messages, list):
        raise InvalidInput(f"{where}: messages", "must be a list")
    try:
        conversation = Conversation.model_validate(data)
    except ValueError as exc:
        raise InvalidInput(where, " ".join(str(exc).split())) from None
    check.user_id(conversation.user_id)
    check.text(conversation.title, f"{where}: title")
    check.metadata(conversation.metadata, f"{where}: metadata")
    path = _parse_path(where, conversation, raw_path)
    # the seqs stored under this conversation: 1..n for a root, its own parts for a fork
    owners, ends = path if path is not None else (None, None)
    stored = [seq for owner, after, upto in parts_of(conversation.id, owners, ends,
                                                     conversation.message_count)
              if owner == conversation.id for seq in range(after + 1, upto + 1)]
    if len(raw_messages) != len(stored):
        raise InvalidInput(f"{where}: message_count",
                           f"is {conversation.message_count} but {len(raw_messages)} "
                           f"messages follow ({len(stored)} are stored under it)")
    owner = f"{_copy_text(conversation.user_id)}\t{conversation.id}\t"
    rows: list[str] = []
    keys: dict[str, int] = {}  # idempotency key -> index of the message that has it
    for index, raw in enumerate(raw_messages):
        if index % 50 == 49:
            # Hand the GIL to the event loop's thread if it waits: it feeds the COPY's socket,
            # which wakes it only when nearly drained; waiting out the 5 ms switch interval
            # would leave the server idle (measured: ~12% of an import's time).
            time.sleep(0)
        field = f"{where}: messages[{index}]"
        if not isinstance(raw, dict):
            raise InvalidInput(field, "must be an object")
        raw = dict(raw)
        seq, created = raw.pop("seq", None), raw.pop("created_at", None)
        if seq != stored[index]:
            raise InvalidInput(f"{field}.seq", f"must be {stored[index]} (seqs run 1, 2, 3 "
                               "... after the fork's path)")
        through = raw.pop("summary_through", None)
        if through is not None and (type(through) is not int or not 0 <= through < seq):
            raise InvalidInput(f"{field}.summary_through",
                               "must be a whole number from 0 to the message's seq - 1")
        created_at = _instant(created, f"{field}.created_at")
        m = check.message(raw, field)
        key = m.idempotency_key
        if key is not None:
            if key in keys:
                raise InvalidInput(f"{field}.idempotency_key",
                                   f"duplicates messages[{keys[key]}] of this conversation")
            keys[key] = index
        # The columns of _MESSAGE_COLUMNS, in order.
        rows.append(f"{owner}{seq}\t{_copy_text(m.role)}\t{_copy_text(m.content)}\t"
                    f"{_copy_text(m.tool_calls)}\t{_copy_text(m.tool_call_id)}\t"
                    f"{_copy_text(m.metadata)}\t{_copy_text(m.token_count)}\t"
                    f"{_copy_text(key)}\t{created_at.isoformat()}\t{_copy_text(m.item)}\t"
                    f"{_copy_text(through)}\n")
    return _Parsed(conversation, "".join(rows).encode(), len(rows), path)


def _parse_path(where: str, conversation: Conversation,
                raw: Any) -> tuple[list[UUID], list[int]] | None:
    """A fork's ``path`` (``[[owner, last seq], ...]``), checked against its tree fields."""
    is_root = conversation.root_id == conversation.id
    if is_root != (conversation.parent_id is None) or is_root != (
            conversation.forked_at is None):
        raise InvalidInput(f"{where}: parent_id", "a root has neither parent_id nor "
                           "forked_at (root_id is its id); a fork has both")
    if raw is None:
        return None
    if is_root:
        raise InvalidInput(f"{where}: path", "a root has no path")
    owners: list[UUID] = []
    ends: list[int] = []
    try:
        for owner, end in raw:
            owners.append(UUID(str(owner)))
            ends.append(end)
    except (TypeError, ValueError):
        raise InvalidInput(f"{where}: path", "must be a list of [conversation id, seq] "
                           "pairs") from None
    previous = 0
    for end in ends:
        if type(end) is not int or not previous < end <= conversation.message_count:
            raise InvalidInput(f"{where}: path", "its seqs must rise, within message_count")
        previous = end
    return owners, ends


class _Reader:
    """The file's lines, checked and encoded a chunk at a time (in a worker thread)."""

    def __init__(self, check: Validator, lines: Iterable[str], chunk_rows: int) -> None:
        self._check, self._chunk_rows = check, chunk_rows
        self._lines = enumerate(lines, start=1)
        self._seen: dict[tuple[str, UUID], int] = {}  # (user, conversation) -> line number
        # (user, entry id) and (user, key) of the usage lines -> line number
        self._entries: dict[tuple[str, UUID | str], int] = {}

    def chunk(self) -> _Chunk:
        """The next lines' conversations and usage entries, about ``chunk_rows`` rows
        (conversations, messages and entries; a line is never split); empty at the end of
        the file.

        :raises InvalidInput: a malformed line, or one repeating an earlier conversation
            or usage entry (its id, or its user's key).
        """
        chunk = _Chunk([], [])
        rows = 0
        for number, text in self._lines:
            if not text.strip():
                continue
            data = _parse_json(number, text)
            if data["kind"] == "usage":
                entry = _parse_usage(self._check, number, data)
                self._once(number, entry)
                chunk.usage.append(entry)
                rows += 1
            else:
                item = _parse_line(self._check, number, data)
                ident = (item.conversation.user_id, item.conversation.id)
                if ident in self._seen:
                    raise InvalidInput(f"line {number}: id", f"conversation {ident[1]} of "
                                       f"user {ident[0]!r} is also on line {self._seen[ident]}")
                self._seen[ident] = number
                chunk.conversations.append(item)
                rows += 1 + item.count
            if rows >= self._chunk_rows:
                break
        return chunk

    def _once(self, number: int, entry: _UsageEntry) -> None:
        """Refuse a usage entry whose id, or whose user's key, an earlier line has (the
        import would keep only one of them)."""
        idents: list[tuple[str, tuple[str, UUID | str]]] = [("id", (entry.user_id, entry.id))]
        if entry.key is not None:
            idents.append(("key", (entry.user_id, entry.key)))
        for field, ident in idents:
            if ident in self._entries:
                raise InvalidInput(f"line {number}: {field}", f"a usage entry of user "
                                   f"{entry.user_id!r} with this {field} is also on line "
                                   f"{self._entries[ident]}")
        for _, ident in idents:
            self._entries[ident] = number


async def import_file(store: ChatStore, lines: Iterable[str] | IO[str], *,
                      create_users: bool = False, progress: Progress | None = None,
                      chunk_rows: int = CHUNK_ROWS) -> ImportReport:
    """Restore an export, in one transaction: a malformed line imports nothing.

    The file streams through in chunks of about ``chunk_rows`` rows: a worker thread checks
    the next chunk while the server COPies the messages of this one. A chunk's conversations
    are inserted first; one already present (same user and id) is left as it is and its
    messages are skipped, so importing a file twice stores it once. The first problem found
    in file order is raised, and nothing is imported.

    :param create_users: add missing ``users`` rows (id only) instead of refusing.
    :raises InvalidInput: a malformed line, named by its number.
    :raises NotFound: a user that does not exist (without ``create_users``).
    """
    report = ImportReport()
    reader = _Reader(store.validator, lines, chunk_rows)
    known: set[str] = set()  # users already checked
    trees: set[tuple[str, UUID]] = set()  # (user, root) of every fork imported
    calls = store.call_path
    async with calls.connection() as conn, calls.atomic(conn):
        chunk = await asyncio.to_thread(reader.chunk)
        while chunk:
            await _check_users(conn, chunk.users(), report, create_users, known)
            fresh = await _insert_conversations(conn, chunk.conversations, report)
            trees.update((p.conversation.user_id, p.conversation.root_id) for p in fresh
                         if p.conversation.parent_id is not None)
            # Check the next chunk in a worker thread while the server writes this one's
            # messages (its per-row work, the foreign key and the search entry, runs on
            # another core) and usage entries.
            following, copied = await asyncio.gather(
                asyncio.to_thread(reader.chunk),
                _write_rows(conn, fresh, chunk.usage, report, progress),
                return_exceptions=True)
            for outcome in (copied, following):  # the first problem in file order
                if isinstance(outcome, BaseException):
                    raise outcome
            chunk = cast(_Chunk, following)
        if trees:
            users, roots = zip(*sorted(trees), strict=True)
            await conn.execute(SQL.restore_tree_activity, list(users), list(roots))
    return report


async def _check_users(conn: Any, users_of_chunk: set[str], report: ImportReport,
                       create_users: bool, known: set[str]) -> None:
    """Check (or create) the chunk's users not seen before."""
    users = sorted(users_of_chunk - known)
    if users:
        if create_users:
            status = await conn.execute(SQL.create_users, users)
            report.users_created += int(status.split()[-1])
        unknown = [r["id"] for r in await conn.fetch(SQL.find_unknown_users, users)]
        if unknown:
            raise NotFound(f"user {unknown[0]!r} not found ({len(unknown)} unknown user(s); "
                           "create them first or pass --create-users)")
        known.update(users)


async def _insert_conversations(conn: Any, chunk: list[_Parsed],
                                report: ImportReport) -> list[_Parsed]:
    """Insert the chunk's conversations, and return the ones inserted (not already
    present)."""
    report.conversations_read += len(chunk)
    report.messages_read += sum(p.count for p in chunk)
    if not chunk:
        return []
    conversations = [p.conversation for p in chunk]
    inserted = {(r["user_id"], r["id"]) for r in await conn.fetch(
        SQL.import_conversations,
        [c.user_id for c in conversations], [c.id for c in conversations],
        [c.title for c in conversations], [dumps_json(c.metadata) for c in conversations],
        [c.message_count for c in conversations], [c.created_at for c in conversations],
        [c.updated_at for c in conversations], [c.revision for c in conversations],
        [c.root_id for c in conversations], [c.parent_id for c in conversations],
        [c.forked_at for c in conversations], [c.current_id for c in conversations],
        [None if p.path is None else _array(p.path[0]) for p in chunk],
        [None if p.path is None else _array(p.path[1]) for p in chunk],
        [c.expires_at for c in conversations], [c.held for c in conversations],
    )}
    fresh = [p for p in chunk if (p.conversation.user_id, p.conversation.id) in inserted]
    report.conversations_imported += len(fresh)
    return fresh


async def _write_rows(conn: Any, conversations: list[_Parsed], usage: list[_UsageEntry],
                      report: ImportReport, progress: Progress | None) -> None:
    await _copy_messages(conn, conversations, report, progress)
    await _insert_usage(conn, usage, report)


async def _insert_usage(conn: Any, entries: list[_UsageEntry], report: ImportReport) -> None:
    """Insert the chunk's usage entries not stored yet, and move the rollups by them, in
    one statement."""
    report.usage_read += len(entries)
    if not entries:
        return
    counts = list(zip(*(e.counts for e in entries), strict=True))
    report.usage_imported += await conn.fetchval(
        SQL.import_usage, [e.user_id for e in entries], [e.id for e in entries],
        [e.created_at for e in entries], [e.conversation_id for e in entries],
        [e.key for e in entries], [e.model for e in entries], *(list(c) for c in counts),
        [e.cost_micros for e in entries], [e.metadata for e in entries])


def _array(values: list[UUID] | list[int]) -> str:
    return "{" + ",".join(str(value) for value in values) + "}"


async def _copy_messages(conn: Any, conversations: list[_Parsed], report: ImportReport,
                         progress: Progress | None) -> None:
    count = sum(p.count for p in conversations)
    if not count:
        return
    data = b"".join(p.rows for p in conversations)
    # Text format: asyncpg's binary COPY refuses jsonb columns under the text-format jsonb
    # codec chatstore's pools register. A memoryview: asyncpg would take bytes for a path.
    await conn.copy_to_table("messages", source=memoryview(data), columns=_MESSAGE_COLUMNS,
                             format="text")
    report.messages_imported += count
    if progress:
        progress(count)
