"""The todo chatbot backend: a stateless FastAPI chat endpoint whose history lives in chatstore.

    POST   /api/{user_id}/chat                             {"conversation_id"?, "message"}
    POST   /api/{user_id}/chat/stream                      the same, answered as the Vercel AI
                                                           SDK's UI message stream (SSE)
    GET    /api/{user_id}/conversations?limit=&cursor=      newest activity first, cursor paged
    GET    /api/{user_id}/conversations/{id}/messages?limit=&before=&after=   paged by seq
    DELETE /api/{user_id}/conversations/{id}

Each chat request is one chat turn (``store.turn``): the agent's items are written under the
turn's lease through ``ChatStoreSession.for_turn``, a concurrent request to the same
conversation gets 409 at once, and a run that fails stores no message (its messages are
removed, a conversation it started is deleted). No pooled connection is held while the model
thinks: chatstore's calls and each tool call borrow one for a statement or two, so a burst
of chats needs no more connections than statements run at once. A tool's change to
``tasks`` commits when the tool returns and stays if a later step of the turn fails.

The store's life, its dependency (``Store``), the mapping of errors to HTTP
(``error_response``: 404, 409, 422 naming the field, 503 with ``Retry-After``, 500) and the
413 for a body over ``MAX_BODY_BYTES`` come from :mod:`chatstore.integrations.fastapi`.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Annotated, Any
from uuid import UUID

from agents import Agent, Model, RunConfig, Runner
from agents.exceptions import AgentsException
from agents.items import ToolCallItem, ToolCallOutputItem
from fastapi import Depends, FastAPI, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from chatstore import ChatStoreError
from chatstore.integrations.fastapi import (
    BodySizeLimit,
    Store,
    error_response,
    install_error_handlers,
    lifespan,
)
from chatstore.integrations.openai_agents import ChatStoreSession

from .agent import TodoContext, build_agent
from .streaming import ChatStream, StreamedChat

# error_response is chatstore.integrations.fastapi's, named here for the code that used ours.
__all__ = ["ChatRequest", "ChatResponse", "create_app", "error_response"]

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


class ToolCallInfo(BaseModel):
    name: str
    arguments: Any
    output: Any = None


class ChatResponse(BaseModel):
    conversation_id: UUID
    response: str
    tool_calls: list[ToolCallInfo]


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


def create_app(dsn: str | None = None, *, model: Model | str | None = None,
               history_tokens: int = HISTORY_TOKENS, **pool_options: Any) -> FastAPI:
    """The FastAPI app.

    :param dsn: the database (``None``: ``$CHATSTORE_DSN``, then ``$DATABASE_URL``); it must
        hold the backend's tables and chatstore's (``python -m examples.todo_chatbot.database
        URL`` prepares one).
    :param model: the agent's model (default: a real one with ``OPENAI_API_KEY``, else the
        offline scripted one).
    :param history_tokens: the token budget of the history the model sees each turn.
    :param pool_options: passed to ``chatstore.connect`` (``min_size``, ``max_size``...).
    """
    agent: Agent[TodoContext] = build_agent(model)
    run_config = RunConfig(tracing_disabled=not os.environ.get("OPENAI_API_KEY"))

    # One pool for the app's life (app.state.chatstore): chatstore's statements and the
    # tools' share it. Its close at shutdown is bounded: asyncpg's own waits for every
    # connection in use to come back, and a request stuck on one would keep the process
    # from exiting (SIGTERM).
    app = FastAPI(title="todo chatbot (chatstore example)",
                  lifespan=lifespan(dsn, close_timeout=CLOSE_TIMEOUT, **pool_options))
    install_error_handlers(app, also=WRAPPERS, retry_after=RETRY_AFTER_SECONDS)
    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)

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
            # Nothing here holds a pooled connection while the model thinks: the session's
            # calls and each tool call borrow one briefly (a held one per request would
            # exhaust the pool under a burst, each request waiting for a second one).
            # A tool's change to `tasks` commits when the tool returns.
            async with store.turn(user_id, conversation_id) as turn:
                result = await Runner.run(
                    agent, message,
                    session=ChatStoreSession.for_turn(turn, max_tokens=history_tokens),
                    context=TodoContext(user_id=user_id, store=store),
                    run_config=run_config, max_turns=8)
        except BaseException:
            if started is not None:
                # A first turn that failed leaves no empty conversation behind.
                try:
                    await store.delete_conversation(user_id, started)
                except ChatStoreError:
                    log.warning("could not delete conversation %s", started)
            raise
        return ChatResponse(conversation_id=conversation_id,
                            response=str(result.final_output or ""),
                            tool_calls=_tool_calls(result.new_items))

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
                                started_here=started_here, history_tokens=history_tokens)
        await streamed.begin()
        return ChatStream(streamed, headers={"x-conversation-id": str(conversation_id)})

    @app.get("/api/{user_id}/conversations")
    async def conversations(user_id: User, store: Store, limit: int = 20,
                            cursor: str | None = None) -> dict[str, Any]:
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
        await store.delete_conversation(user_id, conversation_id)
        return Response(status_code=204)

    return app
