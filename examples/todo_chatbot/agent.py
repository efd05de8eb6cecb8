"""The todo agent: an Agents SDK ``Agent`` whose function tools act on the user's ``tasks``.

No connection is held while the model thinks: each tool call borrows a pooled connection
for its one statement (its own short transaction, committed when the tool returns) and
gives it back, waiting at most the store's ``acquire_timeout`` for it (else
``chatstore.Timeout``, ``kind="acquire"``: the app answers 503). Parallel tool calls of one
run each borrow their own. A task change is therefore committed when its tool returns: a
later failure of the same chat turn aborts the turn (its messages are removed) but leaves
the change in ``tasks`` (see the README, "How a chat request runs").
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agents import Agent, FunctionTool, Model, RunContextWrapper, function_tool

from chatstore import ChatStore

from .scripted_model import ScriptedTodoModel

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

__all__ = ["TOOLS", "TodoContext", "build_agent", "default_model"]

INSTRUCTIONS = (
    "You are a todo assistant. Use the tools to add, list, complete, rename and delete the "
    "user's tasks; refer to tasks by their id. Answer briefly."
)

# The backend's own statements on its `tasks` table: every one filters on the user.
ADD_TASK = """INSERT INTO tasks (user_id, title, description) VALUES ($1, $2, $3)
              RETURNING id, title, description, completed"""
LIST_TASKS = """SELECT id, title, description, completed FROM tasks
                WHERE user_id = $1 AND ($2::boolean IS NULL OR completed = $2) ORDER BY id"""
COMPLETE_TASK = """UPDATE tasks SET completed = true, updated_at = now()
                   WHERE user_id = $1 AND id = $2
                   RETURNING id, title, description, completed"""
UPDATE_TASK = """UPDATE tasks SET title = coalesce($3, title),
                        description = coalesce($4, description), updated_at = now()
                 WHERE user_id = $1 AND id = $2
                 RETURNING id, title, description, completed"""
DELETE_TASK = """DELETE FROM tasks WHERE user_id = $1 AND id = $2
                 RETURNING id, title, description, completed"""


@dataclass
class TodoContext:
    """What the tools of one chat request need: whose tasks, and the store whose pool
    they borrow a connection from, one tool call at a time."""

    user_id: str
    store: ChatStore

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[PoolConnectionProxy[asyncpg.Record]]:
        """A pooled connection for one tool call, from the store's call path: within its
        ``acquire_timeout``, with its statement timeout, and driver errors as chatstore's.

        :raises chatstore.Timeout: ``kind="acquire"``, no connection came free in time
            (nothing was sent; retrying is safe).
        """
        async with self.store.call_path.connection(self.user_id) as conn:
            yield conn


def _task(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "title": row["title"], "description": row["description"],
            "completed": row["completed"]}


def _reply(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@function_tool(failure_error_function=None)
async def add_task(ctx: RunContextWrapper[TodoContext], title: str,
                   description: str | None = None) -> str:
    """Add a task to the user's list.

    Args:
        title: what to do.
        description: optional details.
    """
    async with ctx.context.connection() as conn:
        row = await conn.fetchrow(ADD_TASK, ctx.context.user_id, title, description)
    return _reply({"added": _task(row)})


@function_tool(failure_error_function=None)
async def list_tasks(ctx: RunContextWrapper[TodoContext], status: str = "all") -> str:
    """List the user's tasks.

    Args:
        status: "all", "pending" or "completed".
    """
    completed = {"pending": False, "completed": True}.get(status)
    async with ctx.context.connection() as conn:
        rows = await conn.fetch(LIST_TASKS, ctx.context.user_id, completed)
    return _reply({"tasks": [_task(row) for row in rows]})


@function_tool(failure_error_function=None)
async def complete_task(ctx: RunContextWrapper[TodoContext], task_id: int) -> str:
    """Mark one of the user's tasks as done.

    Args:
        task_id: the task's id.
    """
    async with ctx.context.connection() as conn:
        row = await conn.fetchrow(COMPLETE_TASK, ctx.context.user_id, task_id)
    return _reply({"completed": _task(row)} if row else {"error": f"no task {task_id}"})


@function_tool(failure_error_function=None)
async def update_task(ctx: RunContextWrapper[TodoContext], task_id: int,
                      title: str | None = None, description: str | None = None) -> str:
    """Change a task's title and/or description.

    Args:
        task_id: the task's id.
        title: the new title (unchanged if omitted).
        description: the new description (unchanged if omitted).
    """
    async with ctx.context.connection() as conn:
        row = await conn.fetchrow(UPDATE_TASK, ctx.context.user_id, task_id,
                                  title, description)
    return _reply({"updated": _task(row)} if row else {"error": f"no task {task_id}"})


@function_tool(failure_error_function=None)
async def delete_task(ctx: RunContextWrapper[TodoContext], task_id: int) -> str:
    """Delete one of the user's tasks.

    Args:
        task_id: the task's id.
    """
    async with ctx.context.connection() as conn:
        row = await conn.fetchrow(DELETE_TASK, ctx.context.user_id, task_id)
    return _reply({"deleted": _task(row)} if row else {"error": f"no task {task_id}"})


TOOLS: list[FunctionTool] = [add_task, list_tasks, complete_task, update_task, delete_task]


def default_model() -> Model | str:
    """A real model when ``OPENAI_API_KEY`` is set (``$TODO_MODEL``, default gpt-4.1-mini),
    else the offline scripted model, thinking ``$TODO_MODEL_DELAY`` seconds per call
    (default 0) as a real model would, and, when streaming, ``$TODO_MODEL_CHUNK_DELAY``
    seconds between two chunks of its text (default 0)."""
    if os.environ.get("OPENAI_API_KEY"):
        return os.environ.get("TODO_MODEL", "gpt-4.1-mini")
    return ScriptedTodoModel(delay=float(os.environ.get("TODO_MODEL_DELAY") or 0),
                             chunk_delay=float(os.environ.get("TODO_MODEL_CHUNK_DELAY") or 0))


def build_agent(model: Model | str | None = None) -> Agent[TodoContext]:
    """The todo agent, on ``model`` (default: :func:`default_model`)."""
    return Agent[TodoContext](name="todo", instructions=INSTRUCTIONS, tools=list(TOOLS),
                              model=model if model is not None else default_model())
