"""Row-level security, opt-in (chatstore/sql/rls.sql + ``connect(..., row_level_security=True)``),
as a role that neither owns the tables nor has BYPASSRLS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

import chatstore
from chatstore import ChatStore, NotFound

from .conftest import APP_ROLE, POOL_SIZE, Bouncer, apply_rls, message

OTHER_ROLE = f"{APP_ROLE}_other"


def as_role(url: str, role: str) -> str:
    parts = urlsplit(url)
    netloc = role + "@" + parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
async def rls_db(db_url: str, conn: asyncpg.Connection) -> str:
    """This test's database with rls.sql applied, users alice and bob, and the app role
    (LOGIN, no BYPASSRLS, owns nothing) granted the chat tables."""
    await apply_rls(conn, APP_ROLE, OTHER_ROLE)
    await conn.execute("INSERT INTO users (id) VALUES ('alice'), ('bob')")
    row = await conn.fetchrow(
        "SELECT rolbypassrls, rolsuper FROM pg_roles WHERE rolname = $1", APP_ROLE)
    assert row is not None and not row["rolbypassrls"] and not row["rolsuper"]
    assert await conn.fetchval(
        "SELECT bool_and(relforcerowsecurity AND relrowsecurity) AND count(*) = 5 "
        "FROM pg_class WHERE relname IN ('conversations', 'messages', 'usage_entries', "
        "'usage_daily', 'usage_conversation_daily')")
    return db_url


@pytest.fixture
async def app_store(rls_db: str) -> AsyncIterator[ChatStore]:
    store = await chatstore.connect(as_role(rls_db, APP_ROLE), row_level_security=True,
                                    min_size=1, max_size=1)
    try:
        yield store
    finally:
        await store.close()


async def tour(store: ChatStore, owner: str) -> None:
    """Every API call, for one user."""
    conv = await store.create_conversation(owner, title="t", metadata={"k": 1})
    assert (await store.get_conversation(owner, conv.id)).title == "t"
    await store.append_message(owner, conv.id, message("hello world"))
    await store.append_messages(owner, conv.id, [message("keyed", idempotency_key="k1")])
    await store.append_messages(owner, conv.id, [message("keyed", idempotency_key="k1")])
    await store.append_message(owner, conv.id, {
        "role": "assistant", "content": None,
        "tool_calls": [{"id": "c1", "type": "function",
                        "function": {"name": "f", "arguments": "{}"}}]})
    await store.append_message(owner, conv.id, {"role": "tool", "content": "42",
                                                "tool_call_id": "c1"})
    assert [m.seq for m in (await store.list_messages(owner, conv.id)).items] == [1, 2, 3, 4]
    assert len((await store.list_messages(owner, conv.id, after=1, limit=2)).items) == 2
    assert len(await store.context_messages(owner, conv.id, max_tokens=100)) == 4
    assert len(await store.context_messages(owner, conv.id, max_messages=2)) == 2
    assert [m.content for m in await store.search_messages(owner, "hello")] == ["hello world"]
    assert (await store.pop_message(owner, conv.id)) is not None
    await store.update_conversation(owner, conv.id, title="u")
    assert (await store.list_conversations(owner)).items[0].title == "u"
    assert await store.clear_messages(owner, conv.id) == 3
    await store.delete_conversation(owner, conv.id)
    # Turns, agent items, compare-and-set on the revision.
    chat = await store.create_conversation(owner, messages=[message("first")])
    async with store.turn(owner, chat.id) as turn:
        await turn.append([{"item": {"type": "function_call", "call_id": "c9", "name": "f",
                                     "arguments": "{}"}}])
        await turn.append([{"item": {"type": "function_call_output", "call_id": "c9",
                                     "output": "ok"}}])
        assert len(await turn.context()) == 3
    with pytest.raises(chatstore.Conflict):
        async with store.turn(owner, chat.id) as turn:
            await turn.append([message("dropped")])
            raise chatstore.Conflict("abort this turn")
    current = await store.get_conversation(owner, chat.id)
    await store.append_message(owner, chat.id, message("cas"),
                               expected_revision=current.revision)
    assert [m.item is not None for m in (await store.list_messages(owner, chat.id)).items] == [
        False, True, True, False]
    await store.delete_conversation(owner, chat.id)
    kept = await store.create_conversation(owner)
    await store.append_message(owner, kept.id, message("stays"))
    # Usage: recording (keyed, replayed), totals, a quota.
    usage = {"model": "m", "input_tokens": 3, "output_tokens": 2}
    first = await store.record_usage(owner, kept.id, usage, key="u1")
    assert await store.record_usage(owner, kept.id, usage, key="u1") == first
    async with store.turn(owner, kept.id, quota=chatstore.Quota(6)) as turn:
        await turn.record_usage(usage)
    (summed,) = await store.usage_totals(owner, by="conversation")
    assert (summed.key, summed.input_tokens, summed.entries) == (kept.id, 6, 2)
    with pytest.raises(chatstore.QuotaExceeded):
        async with store.turn(owner, kept.id, quota=chatstore.Quota(10)):
            pass


async def test_every_call_works_for_its_user_and_only_its_user(
        app_store: ChatStore, conn: asyncpg.Connection, rls_db: str) -> None:
    await tour(app_store, "alice")
    await tour(app_store, "bob")
    bobs = (await app_store.list_conversations("bob")).items[0]
    with pytest.raises(NotFound):
        await app_store.get_conversation("alice", bobs.id)
    assert await app_store.delete_user_data("alice") == 1
    # As the owner (a superuser here, so not bound): bob's data is all there, alice's gone.
    assert await conn.fetchval("SELECT count(*) FROM messages WHERE user_id = 'bob'") == 1
    assert await conn.fetchval("SELECT count(*) FROM messages WHERE user_id = 'alice'") == 0
    assert await conn.fetchval("SELECT count(*) FROM usage_entries WHERE user_id = 'bob'") == 2
    assert await conn.fetchval(
        "SELECT count(*) FROM usage_entries WHERE user_id = 'alice'") == 0


async def test_the_callers_transaction_gets_the_user_too(app_store: ChatStore,
                                                        rls_db: str) -> None:
    """store.using(conn): the setting goes into the caller's transaction (and ends with it)."""
    raw = await asyncpg.connect(as_role(rls_db, APP_ROLE))
    try:
        async with raw.transaction():
            view = app_store.using(raw)
            conv = await view.create_conversation("alice")
            await view.append_message("alice", conv.id, message("in the caller's tx"))
            assert len((await view.list_messages("alice", conv.id)).items) == 1
        assert await raw.fetchval("SELECT count(*) FROM messages") == 0  # the setting ended
        assert len((await app_store.list_messages("alice", conv.id)).items) == 1
    finally:
        await raw.close()


async def test_raw_sql_sees_nothing_of_another_user_or_without_a_user(
        app_store: ChatStore, rls_db: str) -> None:
    await tour(app_store, "alice")
    raw = await asyncpg.connect(as_role(rls_db, APP_ROLE))
    try:
        count = ("SELECT (SELECT count(*) FROM conversations) + "
                 "(SELECT count(*) FROM messages)")
        usage = ("SELECT (SELECT count(*) FROM usage_entries) + "
                 "(SELECT count(*) FROM usage_daily) + "
                 "(SELECT count(*) FROM usage_conversation_daily)")
        assert await raw.fetchval(count) == 0  # no user set
        assert await raw.fetchval(usage) == 0
        async with raw.transaction():
            await raw.execute("SELECT set_config('chatstore.user_id', 'bob', true)")
            assert await raw.fetchval(count) == 0
            assert await raw.fetchval("SELECT count(*) FROM conversations "
                                      "WHERE user_id = 'alice'") == 0
            assert await raw.execute("UPDATE messages SET content = 'x'") == "UPDATE 0"
            assert await raw.execute("DELETE FROM conversations") == "DELETE 0"
            assert await raw.fetchval(usage) == 0
            assert await raw.execute("DELETE FROM usage_entries") == "DELETE 0"
            with pytest.raises(asyncpg.InsufficientPrivilegeError):  # WITH CHECK
                await raw.execute("INSERT INTO conversations (user_id) VALUES ('alice')")
        async with raw.transaction():
            await raw.execute("SELECT set_config('chatstore.user_id', 'alice', true)")
            assert await raw.fetchval(count) == 2
            assert await raw.fetchval(usage) == 2 + 1 + 1  # two entries, one day, one model
        assert await raw.fetchval(count) == 0  # the setting ended with the transaction
    finally:
        await raw.close()
    # A store without the option, on the same role, is refused everything by the policies.
    blind = await chatstore.connect(as_role(rls_db, APP_ROLE))
    try:
        assert (await blind.list_conversations("alice")).items == []
    finally:
        await blind.close()


async def test_export_and_import_run_on_the_call_path(app_store: ChatStore,
                                                    rls_db: str) -> None:
    """Export goes through the store's call path, so its row-level-security user is set for
    it too: the app role exports its user's rows only, and an export through a store without
    the setting sees no conversation at all (the policies hide every row). Import writes many
    users' rows, so it runs as the tables' owner (docs/reliability.md), and as the app role
    it is refused by the policies with nothing written."""
    from chatstore.transfer import export_user, import_file

    await tour(app_store, "alice")
    await tour(app_store, "bob")
    lines = [line async for line in export_user(app_store, "alice")]
    # the conversation the tour kept, then its two usage entries (the usage policies apply)
    assert len(lines) == 3 and all('"user_id":"alice"' in line for line in lines)
    assert [line.startswith('{"kind":"usage"') for line in lines] == [False, True, True]
    assert not any("bob" in line for line in lines)
    async with await chatstore.connect(as_role(rls_db, APP_ROLE), min_size=1,
                                       max_size=1) as unset:
        assert [line async for line in export_user(unset, "alice")] == []
    await app_store.delete_user_data("alice")
    with pytest.raises(chatstore.ChatStoreError, match="row-level security"):
        await import_file(app_store, lines)
    assert [line async for line in export_user(app_store, "alice")] == []
    async with await chatstore.connect(rls_db, min_size=1, max_size=1) as owner:
        report = await import_file(owner, lines)
    assert report.conversations_imported == 1 and report.messages_imported == 1
    assert report.usage_imported == 2
    assert [line async for line in export_user(app_store, "alice")] == lines


async def test_setting_never_carries_over_on_a_pooled_connection(app_store: ChatStore) -> None:
    await tour(app_store, "alice")
    async with app_store.pool.acquire() as pooled:  # max_size=1: the very connection used
        assert await pooled.fetchval("SELECT current_setting('chatstore.user_id', true)") in (
            None, "")
        assert await pooled.fetchval("SELECT count(*) FROM conversations") == 0


async def test_setting_never_carries_over_through_pgbouncer(rls_db: str,
                                                            pgbouncer: Bouncer) -> None:
    url = pgbouncer.url(rls_db, user=APP_ROLE)
    store = await chatstore.connect(url, pooler="transaction", row_level_security=True,
                                    min_size=4, max_size=4)
    try:
        await asyncio.gather(tour(store, "alice"), tour(store, "bob"))
        # Hold a transaction on as many clients as pgbouncer has server connections for this
        # database and role: every server connection the tours used is asked what it carries.
        clients = [await asyncpg.connect(url, statement_cache_size=0)
                   for _ in range(POOL_SIZE)]
        try:
            seen: set[object] = set()
            pids: set[int] = set()
            transactions = [c.transaction() for c in clients]
            for client, tx in zip(clients, transactions, strict=True):
                await tx.start()
                row = await client.fetchrow(
                    "SELECT current_setting('chatstore.user_id', true) AS who, "
                    "pg_backend_pid() AS pid, (SELECT count(*) FROM messages) AS visible")
                assert row is not None
                seen.add(row["who"] or "")
                pids.add(row["pid"])
                assert row["visible"] == 0
            assert seen == {""}
            assert len(pids) == POOL_SIZE  # the whole server pool was checked
            for tx in transactions:
                await tx.rollback()
        finally:
            for client in clients:
                await client.close()
    finally:
        await store.close()


async def test_cost_per_call(rls_db: str, conn: asyncpg.Connection) -> None:
    """Prints what row-level security costs per call (a read and an append)."""
    owner_store = await chatstore.connect(rls_db, min_size=1, max_size=1)
    app_store = await chatstore.connect(as_role(rls_db, APP_ROLE), row_level_security=True,
                                        min_size=1, max_size=1)
    await conn.execute("ALTER TABLE conversations NO FORCE ROW LEVEL SECURITY;"
                       "ALTER TABLE messages NO FORCE ROW LEVEL SECURITY")  # owner unbound
    try:
        timings: dict[str, float] = {}
        for name, store in (("without", owner_store), ("with", app_store)):
            conv = await store.create_conversation("alice")
            for _ in range(20):  # warm up
                await store.get_conversation("alice", conv.id)
            rounds = 300
            started = time.perf_counter()
            for i in range(rounds):
                await store.get_conversation("alice", conv.id)
                await store.append_message("alice", conv.id, message(f"m{i}"))
            timings[name] = (time.perf_counter() - started) / (2 * rounds)
        extra = timings["with"] - timings["without"]
        print(f"\nrow-level security: {timings['without'] * 1e6:.0f} us per call without, "
              f"{timings['with'] * 1e6:.0f} us with (+{extra * 1e6:.0f} us, "
              f"{timings['with'] / timings['without']:.2f}x)")
        assert timings["with"] > 0
    finally:
        await owner_store.close()
        await app_store.close()
