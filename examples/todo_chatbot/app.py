"""The todo chatbot backend: a stateless FastAPI chat endpoint whose history lives in chatstore.

    POST   /api/{user_id}/chat                             {"conversation_id"?, "message"}
    POST   /api/{user_id}/chat/stream                      the same, answered as the Vercel AI
                                                           SDK's UI message stream (SSE)
    GET    /api/{user_id}/conversations?limit=&cursor=      one entry per chat (a tree's root,
                                                           with its current_id), newest first
    GET    /api/{user_id}/conversations/{id}/messages?limit=&before=&after=   paged by seq
    DELETE /api/{user_id}/conversations/{id}
    PATCH  /api/{user_id}/conversations/{id}                {"title"}: rename
    GET    /api/{user_id}/search?query=&limit=              messages matching, best first
    POST   /api/{user_id}/conversations/{id}/messages/{seq}/edit        {"message"}
    POST   /api/{user_id}/conversations/{id}/messages/{seq}/regenerate
    GET    /api/{user_id}/conversations/{id}/messages/{seq}/alternatives
    POST   /api/{user_id}/conversations/{id}/current       {"conversation_id", "expected_current"?}
    GET    /api/{user_id}/export                           the user's data (GDPR): JSON lines
    GET    /api/{user_id}/usage                            the user's tokens today (UTC), in
                                                           all and by model

Each chat request is one chat turn (``store.turn``): the agent's items are written under the
turn's lease through ``ChatStoreSession.for_turn``, a concurrent request to the same
conversation gets 409 at once, and a run that fails stores no message (its messages are
removed, a conversation it started is deleted). No pooled connection is held while the model
thinks: chatstore's calls and each tool call borrow one for a statement or two, so a burst
of chats needs no more connections than statements run at once. A tool's change to
``tasks`` commits when the tool returns and stays if a later step of the turn fails.

Every turn records what its model calls cost in chatstore's usage ledger
(``store_run_usage``, one entry per model request, also for a run that failed: the tokens
were spent, and the entries stay when the turn aborts); the chat response carries the turn's
tokens and ``GET /usage`` the day's. With ``daily_tokens`` (``TODO_DAILY_TOKENS``), a turn
does not start once the user's tokens today have reached it: 429 with ``Retry-After``.

Editing a user's message or regenerating a reply never overwrites: each is the same chat
turn on a new fork of the conversation (``store.turn(..., fork_at=seq - 1)``), made at the
seq before the message. The old version stays; ``alternatives`` lists the versions of a
message ("< 2/3 >"), ``current`` switches the chat's current version, and a run that fails
leaves no fork behind.

``GET /`` serves the web page (``page.py``, ``static/``), a client of the routes above.

The store's life, its dependency (``Store``), the mapping of errors to HTTP
(``error_response``: 404, 409, 422 naming the field, 503 with ``Retry-After``, 500) and the
413 for a body over ``MAX_BODY_BYTES`` come from :mod:`chatstore.integrations.fastapi`.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, date, datetime, time
from typing import Annotated, Any
from uuid import UUID

from agents import Agent, Model, RunConfig, Runner
from agents.exceptions import AgentsException
from agents.items import ToolCallItem, ToolCallOutputItem
from fastapi import Depends, FastAPI, Response
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from chatstore import (
    ChatStore,
    ChatStoreError,
    Conversation,
    InvalidInput,
    Message,
    NotFound,
    Quota,
    Role,
    Turn,
    Usage,
    UsageTotal,
)
from chatstore.integrations.fastapi import (
    BodySizeLimit,
    Store,
    error_response,
    install_error_handlers,
    lifespan,
)
from chatstore.integrations.openai_agents import ChatStoreSession
from chatstore.limits import MAX_SEQ
from chatstore.transfer import export_user

from .agent import TodoContext, build_agent
from .page import install_page
from .streaming import ChatStream, StreamedChat

# error_response is chatstore.integrations.fastapi's, named here for the code that used ours.
__all__ = ["ChatRequest", "ChatResponse", "EditRequest", "SetCurrentRequest", "create_app",
           "error_response"]

log = logging.getLogger("todo_chatbot")

# The newest history the model sees each turn, in tokens (calls and outputs kept whole).
HISTORY_TOKENS = 8000
RETRY_AFTER_SECONDS = 1
# At shutdown, how long closing the pool waits for connections still in use before it
# terminates them (asyncpg's own close would wait for ever).
CLOSE_TIMEOUT = 3.0


class ChatRequest(BaseModel):
    conversation_id: UUID | None = None
    message: str = Field(min_length=1, max_length=20_000)


class EditRequest(BaseModel):
    message: str = Field(min_length=1, max_length=20_000)


class RenameRequest(BaseModel):
    title: str = Field(min_length=1, max_length=200)


class SetCurrentRequest(BaseModel):
    conversation_id: UUID
    # The version the client shows: the switch is refused (409) if another tab moved it.
    expected_current: UUID | None = None


class ToolCallInfo(BaseModel):
    name: str
    arguments: Any
    output: Any = None


class TurnUsage(BaseModel):
    """What a turn's model calls cost (the ledger's entries of the turn, summed)."""

    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0

    @classmethod
    def of(cls, entries: list[Usage]) -> TurnUsage:
        return cls(input_tokens=sum(e.input_tokens for e in entries),
                   output_tokens=sum(e.output_tokens for e in entries),
                   requests=sum(e.requests for e in entries))


class ChatResponse(BaseModel):
    conversation_id: UUID
    response: str
    tool_calls: list[ToolCallInfo]
    usage: TurnUsage = Field(default_factory=TurnUsage)


class UsageResponse(BaseModel):
    day: date
    total: UsageTotal
    by_model: list[UsageTotal]


# -- errors: chatstore.integrations.fastapi maps them ------------------------------------

# What error_response answers: chatstore's errors and asyncpg's (install_error_handlers'
# own), the Agents SDK's (which wrap what a tool raised: the cause decides), and network
# errors of the app's own queries. Anything else is a bug: FastAPI answers 500.
WRAPPERS: tuple[type[Exception], ...] = (AgentsException, OSError)
# The largest request body: a 20,000-character message JSON-escaped at its worst (12 bytes
# a character, as a surrogate pair's two escapes) fits; a body over it is 413, unread.
MAX_BODY_BYTES = 256 * 1024


# -- authentication ----------------------------------------------------------------------

def authorized_user(user_id: Annotated[str, PathParam(min_length=1, max_length=200)]) -> str:
    """The path's ``user_id``, once the backend has checked it is the logged-in user.

    THIS is where a real backend binds ``user_id`` to its authentication (a session cookie,
    a JWT's subject...) and answers 401/403 when they differ. chatstore scopes every call by
    the ``user_id`` it is given; it cannot know who is logged in. The example trusts the path.
    """
    return user_id


User = Annotated[str, Depends(authorized_user)]
# A message's seq in a path.
Seq = Annotated[int, PathParam(ge=1, le=MAX_SEQ)]


# -- the app ------------------------------------------------------------------------------

def _tool_calls(items: list[Any]) -> list[ToolCallInfo]:
    calls: dict[str, ToolCallInfo] = {}
    for item in items:
        raw = item.raw_item
        if isinstance(item, ToolCallItem) and getattr(raw, "type", None) == "function_call":
            try:
                arguments = json.loads(raw.arguments)
            except ValueError:
                arguments = raw.arguments
            calls[raw.call_id] = ToolCallInfo(name=raw.name, arguments=arguments)
        elif isinstance(item, ToolCallOutputItem) and isinstance(raw, dict):
            call = calls.get(str(raw.get("call_id")))
            if call is not None:
                try:
                    call.output = json.loads(str(item.output))
                except ValueError:
                    call.output = item.output
    return list(calls.values())


async def message_at(store: ChatStore, user_id: str, conversation_id: UUID,
                     seq: int) -> tuple[Message, Message | None]:
    """The message at ``seq`` and the one before it (``None`` at seq 1), in one page read.

    :raises InvalidInput: ``seq`` is past the conversation's newest message.
    :raises NotFound: no such conversation for this user.
    """
    page = await store.list_messages(user_id, conversation_id, limit=2,
                                     after=max(seq - 2, 0))
    by_seq = {m.seq: m for m in page.items}
    if seq not in by_seq:
        raise InvalidInput("seq", "no message has this seq in the conversation")
    return by_seq[seq], by_seq.get(seq - 1)


async def record_failed_run(session: ChatStoreSession, exc: BaseException) -> None:
    """What a run that raised had spent (the SDK keeps it on its exception), recorded before
    the turn aborts: the tokens were paid for. A failure to record is logged, the run's own
    error is what the client gets."""
    run_data = getattr(exc, "run_data", None) if isinstance(exc, AgentsException) else None
    if run_data is None:
        return
    try:
        await session.store_run_usage(run_data)
    except ChatStoreError:
        log.warning("could not record the usage of a failed run on %s",
                    session.conversation_id, exc_info=True)


def daily_quota(value: int | None) -> Quota | None:
    """The per-user daily token quota: ``value``, else ``$TODO_DAILY_TOKENS``, else none."""
    if value is None and (configured := os.environ.get("TODO_DAILY_TOKENS")):
        value = int(configured)
    return None if value is None else Quota(value, "day")


def create_app(dsn: str | None = None, *, model: Model | str | None = None,
               history_tokens: int = HISTORY_TOKENS, daily_tokens: int | None = None,
               **pool_options: Any) -> FastAPI:
    """The FastAPI app.

    :param dsn: the database (``None``: ``$CHATSTORE_DSN``, then ``$DATABASE_URL``); it must
        hold the backend's tables and chatstore's (``python -m examples.todo_chatbot.database
        URL`` prepares one).
    :param model: the agent's model (default: a real one with ``OPENAI_API_KEY``, else the
        offline scripted one).
    :param history_tokens: the token budget of the history the model sees each turn.
    :param daily_tokens: each user's tokens (input + output) per UTC day: a turn does not
        start once they are spent (429). Default ``$TODO_DAILY_TOKENS``, else no limit.
    :param pool_options: passed to ``chatstore.connect`` (``min_size``, ``max_size``...).
    """
    agent: Agent[TodoContext] = build_agent(model)
    quota = daily_quota(daily_tokens)
    run_config = RunConfig(tracing_disabled=not os.environ.get("OPENAI_API_KEY"))

    # One pool for the app's life (app.state.chatstore): chatstore's statements and the
    # tools' share it. Its close at shutdown is bounded: asyncpg's own waits for every
    # connection in use to come back, and a request stuck on one would keep the process
    # from exiting (SIGTERM).
    app = FastAPI(title="todo chatbot (chatstore example)",
                  lifespan=lifespan(dsn, close_timeout=CLOSE_TIMEOUT, **pool_options))
    install_error_handlers(app, also=WRAPPERS, retry_after=RETRY_AFTER_SECONDS)
    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)
    install_page(app)

    async def run_agent(turn: Turn, message: str | None) -> ChatResponse:
        """The agent's run of one chat turn, on the turn's conversation (a fork for an edit
        or a regeneration): ``message`` is the user's new one, ``None`` for none (the model
        answers the history as it stands: a regenerated reply).

        Nothing here holds a pooled connection while the model thinks: the session's calls
        and each tool call borrow one briefly (a held one per request would exhaust the
        pool under a burst, each request waiting for a second one). A tool's change to
        `tasks` commits when the tool returns.
        """
        session = ChatStoreSession.for_turn(turn, max_tokens=history_tokens)
        try:
            result = await Runner.run(
                agent, [] if message is None else message, session=session,
                context=TodoContext(user_id=turn.user_id, store=turn.store),
                run_config=run_config, max_turns=8)
        except BaseException as exc:
            await record_failed_run(session, exc)
            raise
        # One ledger entry per model request, committed on its own: it stays if the turn
        # aborts after this. A failure here aborts the turn (nothing is acknowledged).
        spent = await session.store_run_usage(result)
        return ChatResponse(conversation_id=turn.conversation_id,
                            response=str(result.final_output or ""),
                            tool_calls=_tool_calls(result.new_items),
                            usage=TurnUsage.of(spent))

    @app.post("/api/{user_id}/chat")
    async def chat(user_id: User, body: ChatRequest, store: Store) -> ChatResponse:
        started: UUID | None = None
        conversation_id = body.conversation_id
        # The message is checked first, under its own name: the title is made from it, and
        # a NUL refused in the title would name a field the client never sent.
        message = store.validator.text(body.message, "message", required=True)
        assert message is not None
        if conversation_id is None:
            conversation = await store.create_conversation(user_id, title=message[:80])
            conversation_id = started = conversation.id
        try:
            # One chat turn: a second request on this conversation gets ConversationBusy
            # (409) at once; an exception inside aborts the turn (its items are removed).
            async with store.turn(user_id, conversation_id, quota=quota) as turn:
                answer = await run_agent(turn, message)
        except BaseException:
            if started is not None:
                # A first turn that failed leaves no empty conversation behind.
                try:
                    await store.delete_conversation(user_id, started)
                except ChatStoreError:
                    log.warning("could not delete conversation %s", started)
            raise
        return answer

    @app.post("/api/{user_id}/chat/stream")
    async def chat_stream(user_id: User, body: ChatRequest, store: Store) -> ChatStream:
        # The same turn as /chat, answered as it is made (see streaming.py): a busy
        # conversation is still a 409, because the turn is taken before the stream starts;
        # a client that leaves mid-reply keeps its message and the reply so far, marked
        # {"incomplete": true}.
        message = store.validator.text(body.message, "message", required=True)
        assert message is not None
        conversation_id = body.conversation_id
        started_here = conversation_id is None
        if conversation_id is None:
            conversation = await store.create_conversation(user_id, title=message[:80])
            conversation_id = conversation.id
        streamed = StreamedChat(store, agent, run_config, user_id, conversation_id, message,
                                started_here=started_here, history_tokens=history_tokens,
                                quota=quota)
        await streamed.begin()
        return ChatStream(streamed, headers={"x-conversation-id": str(conversation_id)})

    @app.get("/api/{user_id}/conversations")
    async def conversations(user_id: User, store: Store, limit: int = 20,
                            cursor: str | None = None) -> dict[str, Any]:
        # One entry per chat: its tree's root, whose current_id is the version to open (and
        # to send the next message to); an edit or a regeneration adds no entry.
        page = await store.list_conversations(user_id, limit=limit, cursor=cursor)
        return {"items": [c.model_dump(mode="json", exclude={"user_id"}) for c in page.items],
                "next_cursor": page.next_cursor}

    @app.get("/api/{user_id}/conversations/{conversation_id}/messages")
    async def messages(user_id: User, conversation_id: UUID, store: Store, limit: int = 50,
                       before: int | None = None, after: int | None = None) -> dict[str, Any]:
        page = await store.list_messages(user_id, conversation_id, limit=limit, before=before,
                                         after=after)
        return {"items": [m.model_dump(mode="json", exclude={"user_id", "conversation_id"})
                          for m in page.items],
                "next_cursor": page.next_cursor}

    @app.delete("/api/{user_id}/conversations/{conversation_id}", status_code=204)
    async def delete(user_id: User, conversation_id: UUID, store: Store) -> Response:
        # A root deletes its whole chat; a fork, itself and the forks made from it.
        await store.delete_conversation(user_id, conversation_id)
        return Response(status_code=204)

    @app.patch("/api/{user_id}/conversations/{conversation_id}")
    async def rename(user_id: User, conversation_id: UUID, body: RenameRequest,
                     store: Store) -> dict[str, Any]:
        # The chat list shows each tree's root: rename the root (the chat's id).
        renamed = await store.update_conversation(user_id, conversation_id, title=body.title)
        return renamed.model_dump(mode="json", exclude={"user_id"})

    @app.get("/api/{user_id}/search")
    async def search(user_id: User, query: str, store: Store, limit: int = 20) -> dict[str, Any]:
        # Each match with the conversation that stores it and that conversation's chat
        # (chat_id, its root, and current_id, the version the chat shows): the page opens
        # current_id when that version holds the match, else conversation_id.
        found = await store.search_messages(user_id, query, limit=limit)
        chats: dict[UUID, Conversation | None] = {}
        for message in found:
            if message.conversation_id not in chats:
                try:
                    chats[message.conversation_id] = await store.get_conversation(
                        user_id, message.conversation_id)
                except NotFound:  # deleted since the search: its matches are left out
                    chats[message.conversation_id] = None
        return {"items": [
            {"message": m.model_dump(mode="json", exclude={"user_id", "conversation_id"}),
             "conversation_id": str(m.conversation_id), "chat_id": str(chat.root_id),
             "current_id": str(chat.current_id)}
            for m in found if (chat := chats[m.conversation_id]) is not None]}

    # -- edit, regenerate, versions: each a chat turn on a new fork ----------------------

    @app.post("/api/{user_id}/conversations/{conversation_id}/messages/{seq}/edit")
    async def edit(user_id: User, conversation_id: UUID, seq: Seq, body: EditRequest,
                   store: Store) -> ChatResponse:
        message = store.validator.text(body.message, "message", required=True)
        assert message is not None
        edited, _ = await message_at(store, user_id, conversation_id, seq)
        if edited.role != Role.USER:
            raise InvalidInput("seq", "an edit replaces a user's message; this one is not")
        # The turn runs on a new fork made at seq - 1, holding messages 1..seq-1: the
        # session stores the edited message there, then the reply, as /chat does. The
        # conversation keeps its version; the fork becomes the chat's current version when
        # the turn ends, and a run that fails deletes it.
        async with store.turn(user_id, conversation_id, fork_at=seq - 1,
                              quota=quota) as turn:
            answer = await run_agent(turn, message)
        return answer

    @app.post("/api/{user_id}/conversations/{conversation_id}/messages/{seq}/regenerate")
    async def regenerate(user_id: User, conversation_id: UUID, seq: Seq,
                         store: Store) -> ChatResponse:
        # A reply starts where the model took over: right after the user's message or the
        # tools' results. Regenerating there re-runs the model on messages 1..seq-1 (its
        # tool calls too, when it makes them again: a real side effect on `tasks`).
        reply, before = await message_at(store, user_id, conversation_id, seq)
        if reply.role in (Role.USER, Role.TOOL, Role.SYSTEM) or (
                before is not None and before.role not in (Role.USER, Role.TOOL)):
            raise InvalidInput("seq", "must be the first message of a reply: the model's, "
                                      "right after the user's message or a tool result")
        async with store.turn(user_id, conversation_id, fork_at=seq - 1,
                              quota=quota) as turn:
            answer = await run_agent(turn, None)
        return answer

    @app.get("/api/{user_id}/conversations/{conversation_id}/messages/{seq}/alternatives")
    async def alternatives(user_id: User, conversation_id: UUID, seq: Seq,
                           store: Store) -> dict[str, Any]:
        # The versions of message seq, oldest first ("< 2/3 >"): each with a conversation
        # to open to show it, the one marked current being this conversation's own.
        versions = await store.alternatives(user_id, conversation_id, seq)
        return {"items": [v.model_dump(mode="json",
                                       exclude={"message": {"user_id", "conversation_id"}})
                          for v in versions]}

    @app.post("/api/{user_id}/conversations/{conversation_id}/current")
    async def set_current(user_id: User, conversation_id: UUID, body: SetCurrentRequest,
                          store: Store) -> dict[str, Any]:
        # Switch the chat to another of its versions (conversation_id may be any member of
        # the chat's tree). expected_current: the version the client shows; another tab's
        # switch since then is a 409 (chatstore's Conflict) and nothing changes.
        chat = await store.get_conversation(user_id, conversation_id)
        chosen = await store.get_conversation(user_id, body.conversation_id)
        if chosen.root_id != chat.root_id:
            raise InvalidInput("conversation_id",
                               f"is not a version of conversation {conversation_id}")
        root = await store.set_current(user_id, chosen.id,
                                       expected_current=body.expected_current)
        return root.model_dump(mode="json", exclude={"user_id"})

    @app.get("/api/{user_id}/export")
    async def export(user_id: User, store: Store) -> StreamingResponse:
        # The user's data (GDPR), as chatstore's export: one JSON line per conversation
        # (forks included), then one per usage entry ("kind": "usage"), read from one
        # snapshot. Unknown user: 404 before streaming.
        await store.list_conversations(user_id, limit=1)
        lines = export_user(store, user_id)
        return StreamingResponse((line + "\n" async for line in lines),
                                 media_type="application/x-ndjson")

    @app.get("/api/{user_id}/usage")
    async def usage(user_id: User, store: Store) -> UsageResponse:
        # Today (UTC) so far: a whole-day bound, so both totals read only the day's rollup
        # rows (one per model), however many turns the user made.
        today = datetime.now(UTC).date()
        since = datetime.combine(today, time(), UTC)
        (total,) = await store.usage_totals(user_id, since=since)
        by_model = await store.usage_totals(user_id, since=since, by="model")
        return UsageResponse(day=today, total=total, by_model=by_model)

    return app
