"""What a run measures: the sizes of a quick and a full run, and the constants every row
shares."""

from __future__ import annotations

from dataclasses import dataclass

USER = "bench-user"
TOKEN_BUDGET = 4000
COPY = "bare COPY (same schema)"
# Pool of chatstore and raw asyncpg in the load row (the SQLAlchemy-based libraries keep
# their default pool of 5 + 10 overflow; langchain-postgres its one connection).
LOAD_POOL = 8
# The wide load row: more clients than connections (wide_clients clients, this pool).
WIDE_POOL = 16
SEARCH_WORD = "milk"  # in about a third of the seeded messages
# The turn every write row and the load row store.
ONE = {"role": "user", "content": "Please add 'call the plumber' to my list.",
       "token_count": 12}
REPLY = {"role": "assistant", "content": "Done, it is on your list.", "token_count": 9}

# Message size and shape (bench/shapes.py): the whole history and an append with messages of
# about LONG_BYTES, and the whole history of an Agents SDK run's items.
LONG_BYTES = 2_000
LONG_WHOLE_OP = "whole history, ~2 KB messages"
LONG_APPEND_OP = "append one ~2 KB message"
ITEMS_WHOLE_OP = "whole history, Agents SDK items"

# Conversation trees (bench/trees.py). The same in a quick and a full run: both load a plain
# conversation of TREE_LENGTH messages, which the rows on a deep fork are compared with.
TREE_LENGTH = 10_000
TREE_DEPTH = 10  # the deep fork: a root and this many forks, each forked from the one before
REGENERATIONS = 5  # alternatives: a reply regenerated this many times (this many + 1 versions)
BRANCH_LENGTHS = (1_000, 10_000)  # branching beside the Agents SDK's AdvancedSQLiteSession
DEEP = f"{TREE_LENGTH:,}, fork {TREE_DEPTH} deep"  # the size column of the deep fork's rows
# The rows of the report's "Conversation trees" table (not of the latency table): chatstore,
# raw asyncpg and, for branching, the Agents SDK's AdvancedSQLiteSession on SQLite.
CREATE_OP = "create a conversation"
FORK_OP = "fork"
ALTERNATIVES_OP = "alternatives"
BRANCH_OP = "branch"
BRANCH_READ_OP = "branch, then read it whole"
TREE_OPS = (CREATE_OP, FORK_OP, ALTERNATIVES_OP, BRANCH_OP, BRANCH_READ_OP)

# Usage, retention and compaction (bench/usage.py): the rows of the report's own table.
USAGE_TURN_OP = "chat turn in store.turn"
TOTALS_OP = "usage_totals, a month"
TOTALS_DAY_OP = "usage_totals, a month by day"
COMPACT_OP = "context window (4,000 tokens), compacted"
USAGE_OPS = (USAGE_TURN_OP, TOTALS_OP, TOTALS_DAY_OP, COMPACT_OP)
# The sizes of the chat turn's cells: the same turn without usage, with it recorded by the
# reply's append, and with it recorded by a call of its own.
NO_USAGE = "no usage"
USAGE_WITH_REPLY = "turn.append(reply, usage=...)"
USAGE_OWN_CALL = "then turn.record_usage(...)"
USAGE_TURN_LENGTH = 1_000  # messages in each chat turn's conversation
COMPACT_LENGTH = 10_000  # the compacted conversation, beside one of COMPACT_WINDOW messages
COMPACT_WINDOW = 50


@dataclass
class Plan:
    lengths: list[int]
    conversation_counts: list[int]
    background_messages: int
    rounds: int
    budget_seconds: float
    delete_samples: int
    import_conversations: int
    import_length: int
    load_clients: int
    wide_clients: int
    load_length: int
    load_seconds: float
    load_slices: int
    storage_length: int
    search_users: int
    search_conversations: int
    search_length: int
    long_lengths: list[int]  # the ~2 KB messages' histories (bench/shapes.py)
    item_lengths: list[int]  # the Agents SDK items' histories
    # bench/usage.py: usage_totals of one user with each of usage_user_entries entries,
    # beside usage_other_entries entries of usage_other_users other users (a database of
    # its own); purge of purge_conversations idle conversations of purge_length messages, in
    # purge_slices parts, while purge_clients clients do chat turns.
    usage_user_entries: list[int]
    usage_other_entries: int
    usage_other_users: int
    purge_conversations: int
    purge_length: int
    purge_slices: int
    purge_clients: int
    # the chat turn with and without usage and the compacted context window: their own
    # number of rounds, with no time budget (their cells differ by less than the noise)
    usage_rounds: int


QUICK = Plan(lengths=[100, 1_000, 10_000], conversation_counts=[10, 1_000],
             background_messages=20_000, rounds=30, budget_seconds=0.5, delete_samples=2,
             import_conversations=5, import_length=1_000, load_clients=32, wide_clients=128,
             load_length=100,
             load_seconds=2.0, load_slices=4, storage_length=2_000, search_users=100,
             search_conversations=2, search_length=100, long_lengths=[100, 1_000],
             item_lengths=[1_000], usage_user_entries=[100, 10_000],
             usage_other_entries=100_000, usage_other_users=100, purge_conversations=200,
             purge_length=100, purge_slices=4, purge_clients=16, usage_rounds=150)
FULL = Plan(lengths=[100, 1_000, 10_000, 100_000], conversation_counts=[10, 1_000, 10_000],
            background_messages=5_000_000, rounds=200, budget_seconds=6.0, delete_samples=5,
            import_conversations=50, import_length=1_000, load_clients=32, wide_clients=128,
            load_length=1_000, load_seconds=20.0, load_slices=10, storage_length=10_000,
            search_users=100, search_conversations=100, search_length=100,
            long_lengths=[100, 1_000, 10_000, 100_000], item_lengths=[1_000, 10_000],
            usage_user_entries=[100, 100_000], usage_other_entries=10_000_000,
            usage_other_users=1_000, purge_conversations=10_000, purge_length=100,
            purge_slices=10, purge_clients=16, usage_rounds=600)
