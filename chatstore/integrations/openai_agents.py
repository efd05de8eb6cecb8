"""An OpenAI Agents SDK session on a chatstore conversation.

    from chatstore.integrations.openai_agents import ChatStoreSession

    session = await ChatStoreSession.create(store, user_id, title="Todo help")
    result = await Runner.run(agent, "add milk to my list", session=session)

    # one whole chat turn: a concurrent request gets ConversationBusy, an exception aborts
    async with store.turn(user_id, conversation_id) as turn:
        result = await Runner.run(agent, text, session=ChatStoreSession.for_turn(turn))

Needs ``openai-agents`` (``pip install 'chatstore[openai-agents]'``).

Each item the SDK adds is stored as one chatstore message ``{"item": item}``: the exact item
(read back equal, whatever its type, unknown future types included) next to its chat-format
projection (role, content, tool calls) that search, psql and context windows use. An item's
own ``id`` is never used as an idempotency key: Chat Completions models give every item the
same placeholder id, and all of them are kept.

``session.store_run_usage(result)`` records what a run cost in chatstore's usage ledger
(the name the SDK's own ``AdvancedSQLiteSession`` uses), one entry per model request.

``get_items`` returns the model's view (``ChatStore.view_messages``): after a compaction,
the newest summary and what follows it. The SDK's ``OpenAIResponsesCompactionSession``
wrapped around a ``ChatStoreSession`` replaces the session's history with the compacted
items through the session's atomic-replace hook, which chatstore implements as
``ChatStore.compact``: the compacted items become the view, and the whole transcript stays
readable with ``ChatStore.list_messages``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self, cast
from uuid import UUID, uuid4

from agents.items import TResponseInputItem
from agents.memory.session_settings import (
    SessionSettings,
    coerce_session_settings,
    resolve_session_limit,
)

from .. import ChatStore, InvalidInput, Message, Usage, to_items
from ..limits import MAX_CONTEXT_MESSAGES
from . import conversation_uuid

if TYPE_CHECKING:
    from agents.exceptions import RunErrorDetails
    from agents.result import RunResultBase

    from .. import Turn

__all__ = ["ChatStoreSession"]

# context_messages reads at most this many messages.
_MAX_WINDOW = MAX_CONTEXT_MESSAGES


class ChatStoreSession:
    """The Agents SDK ``Session`` protocol on one conversation of one user.

    ``isinstance(session, agents.memory.Session)`` holds, so it goes wherever the SDK takes
    a session (``Runner.run(..., session=session)``).

    :param store: the application's :class:`~chatstore.ChatStore`.
    :param user_id: the owner. A session built with another user's conversation id raises
        :class:`~chatstore.NotFound` on use, exactly like a missing conversation, and never
        reads or changes that conversation.
    :param conversation_id: the conversation (a ``UUID`` or its string); ``session_id`` is
        its string form.
    :param session_settings: the SDK's ``SessionSettings`` (or a dict of them); its
        ``limit`` applies when ``get_items`` is given none.
    :param max_tokens: a token budget for the history the model sees: ``get_items`` returns
        the newest items that fit, tool calls and their outputs kept whole (chatstore's
        context-window rule), instead of every item.
    """

    session_id: str
    session_settings: SessionSettings | None

    def __init__(self, store: ChatStore, user_id: str, conversation_id: UUID | str, *,
                 session_settings: SessionSettings | dict[str, Any] | None = None,
                 max_tokens: int | None = None) -> None:
        if max_tokens is not None and (isinstance(max_tokens, bool)
                                       or not isinstance(max_tokens, int) or max_tokens < 1):
            raise InvalidInput("max_tokens", f"must be a whole number of at least 1, "
                                             f"got {max_tokens!r}")
        self.store = store
        self.user_id = user_id
        self.conversation_id = conversation_uuid(conversation_id)
        self.session_id = str(self.conversation_id)
        self.session_settings = (coerce_session_settings(session_settings)
                                 if session_settings is not None else SessionSettings())
        self.max_tokens = max_tokens
        self.turn: Turn | None = None

    @classmethod
    async def create(cls, store: ChatStore, user_id: str, title: str | None = None, *,
                     session_settings: SessionSettings | dict[str, Any] | None = None,
                     max_tokens: int | None = None) -> Self:
        """Start a new conversation for ``user_id`` and return a session on it.

        :raises NotFound: the user does not exist.
        """
        conversation = await store.create_conversation(user_id, title=title)
        return cls(store, user_id, conversation.id, session_settings=session_settings,
                   max_tokens=max_tokens)

    @classmethod
    def for_turn(cls, turn: Turn, *,
                 session_settings: SessionSettings | dict[str, Any] | None = None,
                 max_tokens: int | None = None) -> Self:
        """A session whose writes go through ``turn`` (from ``store.turn(...)``).

        ``add_items`` appends under the turn's lease, so a ``Runner.run`` inside the
        ``async with store.turn(...)`` block writes one contiguous turn, and an exception
        that leaves the block aborts it (every item the run added is removed). Reads see
        the turn's own items. ``pop_item`` and ``clear_session`` are writes from outside the
        turn and raise :class:`~chatstore.ConversationBusy` while it holds the conversation.

        ``for_turn(turn.using(conn))`` runs the session's reads and writes on a connection
        the caller holds, inside the caller's transaction: the run's items then commit (or
        roll back) together with whatever else that transaction wrote.
        """
        session = cls(turn.store, turn.user_id, turn.conversation_id,
                      session_settings=session_settings, max_tokens=max_tokens)
        session.turn = turn
        return session

    # -- the Session protocol -----------------------------------------------------------

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The conversation's items as the model sees them, oldest first: every item, or
        after a compaction (``ChatStore.compact``, or the SDK's compaction session around
        this one), the newest summary and the items after it
        (``ChatStore.view_messages``). ``ChatStore.list_messages`` reads the whole
        transcript.

        :param limit: ``None``: every item of the view (``session_settings.limit`` if set;
            with ``max_tokens``, the newest that fit). ``N``: the newest N items of the view
            in chronological order, reading only those rows. ``0``: ``[]``.
        :raises NotFound: no such conversation for this user.
        :raises InvalidInput: a negative limit.
        """
        limit = resolve_session_limit(limit, self.session_settings)
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise InvalidInput("limit", f"must be None or a whole number of at least 0, "
                                            f"got {limit!r}")
            if limit == 0:
                return []
        if self.max_tokens is not None:
            cap = min(limit, _MAX_WINDOW) if limit is not None else None
            if self.turn is not None:
                window = await self.turn.context(max_messages=cap, max_tokens=self.max_tokens)
            else:
                window = await self.store.context_messages(
                    self.user_id, self.conversation_id, max_messages=cap,
                    max_tokens=self.max_tokens)
            return self._items(window)
        return self._items(await self.store.view_messages(self.user_id, self.conversation_id,
                                                          limit=limit))

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append the items in one atomic call (under the turn's lease when bound to one);
        ``[]`` does nothing.

        :raises NotFound: no such conversation for this user.
        :raises InvalidInput: an item chatstore cannot store (named by its index).
        :raises ConversationBusy: a chat turn other than this session's holds the
            conversation.
        """
        if not items:
            return
        messages = [{"item": item} for item in items]
        if self.turn is not None:
            await self.turn.append(messages)
        else:
            await self.store.append_messages(self.user_id, self.conversation_id, messages)

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove and return the newest item; ``None`` when there is none.

        :raises NotFound: no such conversation for this user.
        :raises ConversationBusy: a chat turn holds the conversation.
        """
        popped = await self.store.pop_message(self.user_id, self.conversation_id)
        if popped is None:
            return None
        return self._items([popped])[0]

    async def clear_session(self) -> None:
        """Delete every item of the conversation; the conversation stays and new items can
        be added.

        :raises NotFound: no such conversation for this user.
        :raises ConversationBusy: a chat turn holds the conversation.
        """
        await self.store.clear_messages(self.user_id, self.conversation_id)

    # -- usage ----------------------------------------------------------------------------

    async def store_run_usage(self, result: RunResultBase | RunErrorDetails, *,
                              model: str | None = None,
                              key: str | None = None) -> list[Usage]:
        """Record what the run cost in chatstore's usage ledger, in this session's
        conversation (under its turn, with :meth:`for_turn`: see
        :meth:`~chatstore.Turn.record_usage`, which an abort does not undo).

        One entry per model request the result reports
        (``result.context_wrapper.usage.request_usage_entries``), each with ``requests=1``;
        whatever the run's totals hold beyond those requests (requests a provider reported
        no per-request usage for) is one more entry, so the entries always add up to the
        run's totals. ``cached_input_tokens`` and ``reasoning_tokens`` come from the token
        details. A run that reports nothing records nothing.

        Idempotent: each entry's key derives from the result (a random run id kept on the
        result object the first time, or ``key``, then the entry's index), so calling this
        twice for one result records once and returns the same entries. The entries of a
        run are recorded in one transaction (one commit). Unlike the SDK's session, a
        failure is raised, not logged and swallowed.

        :param result: what ``Runner.run`` (or ``run_streamed``, once its stream is done)
            returned, or the ``run_data`` of the SDK exception a failed run raised (what it
            had spent until then).
        :param model: the model name to record (default: the run's last agent's model: its
            name, or a model object's ``model``; with none, the SDK's default model). Pass
            it when a ``RunConfig`` overrode the agent's model, or when a handoff mixed
            models (the result does not say which request used which).
        :param key: the run's own idempotency key (an id the application keeps for the run,
            so that a retry from another process records once too); each entry's key is
            ``f"{key}:{index}"``.
        :returns: the stored entries, in request order.
        :raises NotFound: the conversation is gone (a ``fork_at`` turn that aborted has
            deleted its fork: record before leaving its block).
        :raises InvalidInput: a count the ledger cannot take, or a bad ``key``.
        """
        usage = result.context_wrapper.usage
        entries = _usage_entries(usage, model if model is not None else _model_name(result))
        if not entries:
            return []
        run_key = key if key is not None else _run_key(result)
        keys = [f"{run_key}:{index}" for index in range(len(entries))]
        # The turn's store is the session's (bound to the caller's connection after
        # turn.using(conn)); the usage is recorded on its own either way, not under the lease.
        store = self.turn.store if self.turn is not None else self.store
        if len(entries) == 1:
            return [await store.record_usage(self.user_id, self.conversation_id, entries[0],
                                             key=keys[0])]
        # Several requests: one transaction, one commit (a savepoint in the caller's
        # transaction on a bound store); a failure records none of them.
        async with store.call_path.connection(self.user_id) as conn, \
                conn.transaction(isolation="read_committed"):
            bound = store.using(conn)
            return [await bound.record_usage(self.user_id, self.conversation_id, entry,
                                             key=entry_key)
                    for entry, entry_key in zip(entries, keys, strict=True)]

    # -- helpers --------------------------------------------------------------------------
    # -- the SDK's compaction session -----------------------------------------------------

    async def _atomic_replace_items(self, items: list[TResponseInputItem]) -> bool:
        """The hook through which the SDK's ``OpenAIResponsesCompactionSession`` replaces
        this session's history with the compacted ``items`` (instead of ``clear_session``
        then ``add_items``, which would delete the transcript): one ``ChatStore.compact``
        (under the turn's lease when bound to one), the first item as the summary of every
        message so far and the rest stored after it. ``get_items`` then returns exactly
        ``items``, as after a replacement; ``ChatStore.list_messages`` still reads every
        message, the compacted items after them. ``[]`` stores nothing (a compaction needs a
        summary) and leaves the view as it was.

        :returns: ``True``: replaced, in one transaction.
        """
        if not items:
            return True
        summary, rest = {"item": items[0]}, [{"item": item} for item in items[1:]]
        if self.turn is not None:
            await self.turn.compact(summary, messages=rest)
        else:
            await self.store.compact(self.user_id, self.conversation_id, summary=summary,
                                     messages=rest)
        return True

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    def _items(messages: list[Message]) -> list[TResponseInputItem]:
        return cast(list[TResponseInputItem], to_items(messages))


# -- usage of a run -------------------------------------------------------------------------

_RUN_KEY = "_chatstore_usage_key"


def _run_key(result: Any) -> str:
    """The run's idempotency key: made once, kept on the result object."""
    kept = getattr(result, "__dict__", None)
    if kept is None:
        raise InvalidInput("key", "this result cannot keep a run id: pass key=")
    found = kept.get(_RUN_KEY)
    if not isinstance(found, str):
        found = kept[_RUN_KEY] = f"agents-run:{uuid4()}"
    return found


def _model_name(result: Any) -> str:
    agent = getattr(result, "last_agent", None)
    chosen = getattr(agent, "model", None)
    if isinstance(chosen, str) and chosen:
        return chosen
    if chosen is None:
        from agents.models import get_default_model

        return get_default_model()
    name = getattr(chosen, "model", None)
    return name if isinstance(name, str) and name else type(chosen).__name__


def _details(usage: Any) -> tuple[int, int]:
    cached = getattr(getattr(usage, "input_tokens_details", None), "cached_tokens", 0)
    reasoning = getattr(getattr(usage, "output_tokens_details", None), "reasoning_tokens", 0)
    return cached or 0, reasoning or 0


def _usage_entries(usage: Any, model: str) -> list[dict[str, Any]]:
    """The entries to record for a run's usage: one per request entry, then what the
    run's totals hold beyond them (never below 0)."""
    entries: list[dict[str, Any]] = []
    for index, request in enumerate(getattr(usage, "request_usage_entries", None) or []):
        cached, reasoning = _details(request)
        entries.append({"model": model, "input_tokens": request.input_tokens or 0,
                        "output_tokens": request.output_tokens or 0,
                        "cached_input_tokens": cached, "reasoning_tokens": reasoning,
                        "requests": 1,
                        "metadata": {"source": "openai-agents", "request": index}})
    cached, reasoning = _details(usage)
    rest = {"input_tokens": usage.input_tokens or 0, "output_tokens": usage.output_tokens or 0,
            "cached_input_tokens": cached, "reasoning_tokens": reasoning,
            "requests": usage.requests or 0}
    for entry in entries:
        for name in rest:
            rest[name] -= entry[name]
    if any(value > 0 for value in rest.values()):
        entries.append({"model": model, **{name: max(value, 0) for name, value in rest.items()},
                        "metadata": {"source": "openai-agents", "request": None}})
    return entries
