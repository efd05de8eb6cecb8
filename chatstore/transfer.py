"""Export a user's conversations as JSON Lines, and import such a file.

One line per conversation: its fields, and ``messages``, a list in seq order of OpenAI-style
dicts (``role``, ``content``, and ``tool_calls`` / ``tool_call_id`` where present), or
``{"item": {...}}`` for a message stored as an agent item, plus chatstore's fields
(``seq``, ``metadata``, ``token_count``, ``idempotency_key``, ``created_at``). Exporting,
importing into an empty database and exporting again gives the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any
from uuid import UUID

from ._input import Checker, PreparedMessage, _dumps
from .errors import CallState, InvalidInput, NotFound, translate_errors
from .models import Conversation, Message, conversation_from_row, messages_from_rows
from .queries import QUERIES
from .store import ChatStore

__all__ = ["ImportReport", "export_user", "import_file"]

Progress = Callable[[int], None]
MESSAGE_PAGE = 1000
CONVERSATION_PAGE = 200
BATCH_MESSAGES = 5000


def _message_dict(message: Message) -> dict[str, Any]:
    data = message.model_dump(mode="json")
    out = {"item": message.item} if message.item is not None else message.to_openai()
    for key in ("seq", "metadata", "token_count", "idempotency_key", "created_at"):
        out[key] = data[key]
    return out


async def export_user(store: ChatStore, user_id: str,
                      progress: Progress | None = None) -> AsyncIterator[str]:
    """Yield one JSON line (without newline) per conversation of ``user_id``, latest
    activity first, messages in seq order.

    Everything is read from one snapshot (one connection, one ``REPEATABLE READ READ ONLY``
    transaction): writes during the export are either wholly in the file or not at all, so
    every line's ``message_count`` matches its messages and no conversation is skipped.

    :raises NotFound: the user does not exist.
    """
    user_id = Checker().user_id(user_id)
    with translate_errors(CallState(idempotent=True)):
        async with store.pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                                  readonly=True):
            await conn.execute(QUERIES["set_call_settings"], user_id, None)
            if not await conn.fetchval(QUERIES["user_exists"], user_id):
                raise NotFound(f"user {user_id!r} not found")
            rows = await conn.fetch(QUERIES["list_conversations"], user_id, CONVERSATION_PAGE)
            while rows:
                for row in rows:
                    conversation = conversation_from_row(row)
                    messages: list[dict[str, Any]] = []
                    after = 0
                    while True:
                        chunk = messages_from_rows(await conn.fetch(
                            QUERIES["list_messages_after"], user_id, conversation.id, after,
                            MESSAGE_PAGE), user_id, conversation.id)
                        messages.extend(_message_dict(m) for m in chunk)
                        if progress:
                            progress(len(chunk))
                        if len(chunk) < MESSAGE_PAGE:
                            break
                        after = chunk[-1].seq
                    line = conversation.model_dump(mode="json")
                    line["messages"] = messages
                    yield _dumps(line)
                if len(rows) < CONVERSATION_PAGE:
                    break
                last = rows[-1]
                rows = await conn.fetch(QUERIES["list_conversations_before"], user_id,
                                        last["updated_at"], last["id"], CONVERSATION_PAGE)


@dataclass
class ImportReport:
    """What an import did."""

    conversations_read: int = 0
    messages_read: int = 0
    conversations_imported: int = 0
    messages_imported: int = 0
    users_created: int = 0


@dataclass
class _Parsed:
    conversation: Conversation
    messages: list[tuple[PreparedMessage, int, datetime]]


def _parse_line(store: ChatStore, number: int, text: str) -> _Parsed:
    where = f"line {number}"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(where, f"is not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(data, dict):
        raise InvalidInput(where, "must be a JSON object (one conversation)")
    raw_messages = data.pop("messages", None)
    data.setdefault("revision", 0)  # files exported before revisions existed
    if not isinstance(raw_messages, list):
        raise InvalidInput(f"{where}: messages", "must be a list")
    try:
        conversation = Conversation.model_validate(data)
    except ValueError as exc:
        raise InvalidInput(where, " ".join(str(exc).split())) from None
    check = store._check  # the store's own input rules
    check.user_id(conversation.user_id)
    check.text(conversation.title, f"{where}: title")
    check.metadata(conversation.metadata, f"{where}: metadata")
    if len(raw_messages) != conversation.message_count:
        raise InvalidInput(f"{where}: message_count",
                           f"is {conversation.message_count} but {len(raw_messages)} "
                           "messages follow")
    parsed: list[tuple[PreparedMessage, int, datetime]] = []
    keys: dict[str, int] = {}  # idempotency key -> index of the message that has it
    for index, raw in enumerate(raw_messages):
        field = f"{where}: messages[{index}]"
        if not isinstance(raw, dict):
            raise InvalidInput(field, "must be an object")
        raw = dict(raw)
        seq, created = raw.pop("seq", None), raw.pop("created_at", None)
        if seq != index + 1:
            raise InvalidInput(f"{field}.seq", f"must be {index + 1} (seqs run 1, 2, 3 ...)")
        try:
            created_at = datetime.fromisoformat(str(created))
        except ValueError:
            raise InvalidInput(f"{field}.created_at", "is not an ISO timestamp") from None
        if created_at.tzinfo is None:
            raise InvalidInput(f"{field}.created_at", "has no time zone")
        prepared = check.message(raw, field)
        key = prepared.idempotency_key
        if key is not None:
            if key in keys:
                raise InvalidInput(f"{field}.idempotency_key",
                                   f"duplicates messages[{keys[key]}] of this conversation")
            keys[key] = index
        parsed.append((prepared, seq, created_at))
    return _Parsed(conversation, parsed)


async def import_file(store: ChatStore, lines: Iterable[str] | IO[str], *,
                      create_users: bool = False,
                      progress: Progress | None = None) -> ImportReport:
    """Restore an export. All lines are checked before anything is written, and everything
    is written in one transaction: a malformed line imports nothing.

    A conversation already present (same user and id) is left as it is, so importing a file
    twice stores it once.

    :param create_users: add missing ``users`` rows (id only) instead of refusing.
    :raises InvalidInput: a malformed line, named by its number.
    :raises NotFound: a user that does not exist (without ``create_users``).
    """
    report = ImportReport()
    parsed: list[_Parsed] = []
    seen: dict[tuple[str, UUID], int] = {}  # (user, conversation) -> line number
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        item = _parse_line(store, number, text)
        ident = (item.conversation.user_id, item.conversation.id)
        if ident in seen:
            raise InvalidInput(f"line {number}: id", f"conversation {ident[1]} of user "
                               f"{ident[0]!r} is also on line {seen[ident]}")
        seen[ident] = number
        parsed.append(item)
        report.conversations_read += 1
        report.messages_read += len(item.messages)

    users = sorted({p.conversation.user_id for p in parsed})
    async with store._connection() as conn, conn.transaction():
        if create_users:
            status = await conn.execute(QUERIES["create_users"], users)
            report.users_created = int(status.split()[-1])
        unknown = [r["id"] for r in await conn.fetch(QUERIES["find_unknown_users"], users)]
        if unknown:
            raise NotFound(f"user {unknown[0]!r} not found ({len(unknown)} unknown user(s); "
                           "create them first or pass --create-users)")
        for start in range(0, len(parsed), 1000):
            chunk = parsed[start:start + 1000]
            inserted = {(r["user_id"], r["id"]) for r in await conn.fetch(
                QUERIES["import_conversations"],
                [p.conversation.user_id for p in chunk],
                [p.conversation.id for p in chunk],
                [p.conversation.title for p in chunk],
                [_dumps(p.conversation.metadata) for p in chunk],
                [p.conversation.message_count for p in chunk],
                [p.conversation.created_at for p in chunk],
                [p.conversation.updated_at for p in chunk],
                [p.conversation.revision for p in chunk],
            )}
            report.conversations_imported += len(inserted)
            rows = [(p.conversation.user_id, p.conversation.id, m)
                    for p in chunk if (p.conversation.user_id, p.conversation.id) in inserted
                    for m in p.messages]
            for offset in range(0, len(rows), BATCH_MESSAGES):
                batch = rows[offset:offset + BATCH_MESSAGES]
                await _insert_messages(conn, batch)
                report.messages_imported += len(batch)
                if progress:
                    progress(len(batch))
    return report


async def _insert_messages(conn: Any,
                           rows: list[tuple[str, UUID, tuple[PreparedMessage, int, datetime]]],
                           ) -> None:
    await conn.execute(
        QUERIES["import_messages"],
        [r[0] for r in rows], [r[1] for r in rows], [r[2][1] for r in rows],
        [r[2][0].role for r in rows], [r[2][0].content for r in rows],
        [r[2][0].tool_calls for r in rows], [r[2][0].tool_call_id for r in rows],
        [r[2][0].metadata for r in rows], [r[2][0].token_count for r in rows],
        [r[2][0].idempotency_key for r in rows], [r[2][2] for r in rows],
        [r[2][0].item for r in rows],
    )
