"""The todo agent: an Agents SDK ``Agent`` whose function tools act on the user's ``tasks``.

Every tool runs on the request's own database connection, inside the request's transaction
(see ``app.py``): the tasks a chat turn changes are committed together with the turn, and a
run that fails changes no task. A lock serialises the tools of one run, since the SDK runs
parallel tool calls concurrently and an asyncpg connection takes one query at a time.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agents import Agent, FunctionTool, Model, RunContextWrapper, function_tool

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
    """What the tools of one chat request need: whose tasks, and the request's connection
    (in its transaction)."""

    user_id: str
    conn: PoolConnectionProxy[asyncpg.Record]
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


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
    async with ctx.context.lock:
        row = await ctx.context.conn.fetchrow(ADD_TASK, ctx.context.user_id, title,
                                              description)
    return _reply({"added": _task(row)})


@function_tool(failure_error_function=None)
async def list_tasks(ctx: RunContextWrapper[TodoContext], status: str = "all") -> str:
    """List the user's tasks.

    Args:
        status: "all", "pending" or "completed".
    """
    completed = {"pending": False, "completed": True}.get(status)
    async with ctx.context.lock:
        rows = await ctx.context.conn.fetch(LIST_TASKS, ctx.context.user_id, completed)
    return _reply({"tasks": [_task(row) for row in rows]})


@function_tool(failure_error_function=None)
async def complete_task(ctx: RunContextWrapper[TodoContext], task_id: int) -> str:
    """Mark one of the user's tasks as done.

    Args:
        task_id: the task's id.
    """
    async with ctx.context.lock:
        row = await ctx.context.conn.fetchrow(COMPLETE_TASK, ctx.context.user_id, task_id)
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
    async with ctx.context.lock:
        row = await ctx.context.conn.fetchrow(UPDATE_TASK, ctx.context.user_id, task_id,
                                              title, description)
    return _reply({"updated": _task(row)} if row else {"error": f"no task {task_id}"})


@function_tool(failure_error_function=None)
async def delete_task(ctx: RunContextWrapper[TodoContext], task_id: int) -> str:
    """Delete one of the user's tasks.

    Args:
        task_id: the task's id.
    """
    async with ctx.context.lock:
        row = await ctx.context.conn.fetchrow(DELETE_TASK, ctx.context.user_id, task_id)
    return _reply({"deleted": _task(row)} if row else {"error": f"no task {task_id}"})


TOOLS: list[FunctionTool] = [add_task, list_tasks, complete_task, update_task, delete_task]


def default_model() -> Model | str:
    """A real model when ``OPENAI_API_KEY`` is set (``$TODO_MODEL``, default gpt-4.1-mini),
    else the offline scripted model."""
    if os.environ.get("OPENAI_API_KEY"):
        return os.environ.get("TODO_MODEL", "gpt-4.1-mini")
    return ScriptedTodoModel()


def build_agent(model: Model | str | None = None) -> Agent[TodoContext]:
    """The todo agent, on ``model`` (default: :func:`default_model`)."""
    return Agent[TodoContext](name="todo", instructions=INSTRUCTIONS, tools=list(TOOLS),
                              model=model if model is not None else default_model())
