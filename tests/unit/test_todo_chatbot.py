"""The todo chatbot's parts that need no database: the scripted model's rules and the one
place errors become HTTP responses."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from agents.exceptions import UserError

from chatstore import ConnectionLost, ConversationBusy, InvalidInput, NotFound
from examples.todo_chatbot.app import error_response
from examples.todo_chatbot.scripted_model import plan


def test_scripted_model_rules() -> None:
    assert plan("add milk and eggs") == [("add_task", {"title": "milk"}),
                                         ("add_task", {"title": "eggs"})]
    assert plan("please complete 3") == [("complete_task", {"task_id": 3})]
    assert plan("rename 4 to buy oat milk") == [("update_task",
                                                 {"task_id": 4, "title": "buy oat milk"})]
    assert plan("delete task 5") == [("delete_task", {"task_id": 5})]
    assert plan("show my tasks") == [("list_tasks", {})]
    assert plan("hello there") == []


def test_errors_map_to_http_in_one_place() -> None:
    def status(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
        response = error_response(exc)
        return response.status_code, json.loads(bytes(response.body)), dict(response.headers)

    assert status(NotFound("conversation x not found"))[0] == 404
    code, body, _ = status(InvalidInput("limit", "must be between 1 and 200"))
    assert code == 422 and body["field"] == "limit"
    assert status(ConversationBusy("busy"))[0] == 409
    code, _, headers = status(ConnectionLost("gone"))
    assert code == 503 and headers["retry-after"] == "1"
    # What a tool raised reaches the handler wrapped by the SDK: the cause decides.
    wrapped = UserError("Error running tool")
    wrapped.__cause__ = ConnectionLost("gone")
    assert status(wrapped)[0] == 503
    lost = UserError("Error running tool")
    lost.__cause__ = asyncpg.ConnectionDoesNotExistError("connection was closed")
    assert status(lost)[0] == 503
    code, body, _ = status(RuntimeError("password=hunter2"))
    assert code == 500 and "hunter2" not in json.dumps(body)
