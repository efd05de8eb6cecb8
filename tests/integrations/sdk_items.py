"""Agents SDK items of every type, built with the real openai / openai-agents types.

Output items are pydantic models of ``openai.types.responses`` turned into input items by the
SDK itself (``ModelResponse.to_input_items``, what a run stores in its session); input-only
items are ``ResponseInputItemParam`` dicts checked against that type with pydantic.
"""

from __future__ import annotations

from typing import Any

from agents import ModelResponse, Usage
from agents.items import TResponseInputItem
from agents.models.fake_id import FAKE_RESPONSES_ID
from openai.types.responses import ResponseInputItemParam, ResponseOutputItem
from pydantic import TypeAdapter

_OUTPUT = TypeAdapter(ResponseOutputItem)
_INPUT = TypeAdapter(ResponseInputItemParam)

UNICODE = "naïve café ✓ 你好 🌍 \u200b zero-width, \"quotes\", back\\slash, tab\t, newline\n"

# Output items as the Responses API sends them (type -> fields).
OUTPUT_SPECS: list[dict[str, Any]] = [
    {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
     "content": [{"type": "output_text", "text": UNICODE, "annotations": [
         {"type": "url_citation", "url": "https://example.invalid/a", "title": "A",
          "start_index": 0, "end_index": 5}]}]},
    {"type": "message", "id": FAKE_RESPONSES_ID, "role": "assistant", "status": "completed",
     "content": [{"type": "refusal", "refusal": "I can't help with that."}]},
    {"type": "function_call", "id": FAKE_RESPONSES_ID, "call_id": "call_a", "name": "add_task",
     "arguments": '{"title": "milk ✓", "tags": ["a", {"deep": [1, 2.5, null, true]}]}',
     "status": "completed"},
    {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "think"}],
     "content": [{"type": "reasoning_text", "text": "step 1"}],
     "encrypted_content": "gAAAAB-opaque=="},
    {"type": "web_search_call", "id": "ws_1", "status": "completed",
     "action": {"type": "search", "query": "weather in Paris",
                "sources": [{"type": "url", "url": "https://example.invalid/w"}]}},
    {"type": "file_search_call", "id": "fs_1", "status": "completed", "queries": ["q1", "q2"],
     "results": [{"file_id": "file_1", "filename": "a.pdf", "score": 0.93, "text": "hit",
                  "attributes": {"page": 3, "lang": "en", "ok": True}}]},
    {"type": "computer_call", "id": "cu_1", "call_id": "call_cu", "status": "completed",
     "action": {"type": "click", "button": "left", "x": 10, "y": 20},
     "pending_safety_checks": [{"id": "sc_1", "code": "malicious_instructions",
                                "message": "check"}]},
    {"type": "image_generation_call", "id": "ig_1", "status": "completed",
     "result": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kg"
               "AAAABJRU5ErkJggg=="},
    {"type": "code_interpreter_call", "id": "ci_1", "status": "completed",
     "container_id": "cntr_1", "code": "print(6 * 7)",
     "outputs": [{"type": "logs", "logs": "42\n"},
                 {"type": "image", "url": "https://example.invalid/plot.png"}]},
    {"type": "local_shell_call", "id": "ls_1", "call_id": "call_ls", "status": "completed",
     "action": {"type": "exec", "command": ["ls", "-la"], "env": {"LANG": "C"},
                "timeout_ms": 1000, "working_directory": "/tmp"}},
    {"type": "mcp_list_tools", "id": "mcpl_1", "server_label": "todo",
     "tools": [{"name": "add", "input_schema": {"type": "object", "properties": {
         "title": {"type": "string"}}}, "description": "add a task"}]},
    {"type": "mcp_approval_request", "id": "mcpr_1", "server_label": "todo", "name": "add",
     "arguments": '{"title": "x"}'},
    {"type": "mcp_call", "id": "mcp_1", "server_label": "todo", "name": "add",
     "arguments": '{"title": "x"}', "output": '{"ok": true}', "status": "completed"},
    {"type": "custom_tool_call", "id": "ctc_1", "call_id": "call_custom", "name": "sql",
     "input": "SELECT 1; -- free-form ✓"},
    {"type": "shell_call", "id": "sh_1", "call_id": "call_sh", "status": "completed",
     "action": {"commands": ["echo hi"], "timeout_ms": 1000, "max_output_length": 100}},
    {"type": "shell_call_output", "id": "sho_1", "call_id": "call_sh", "status": "completed",
     "output": [{"stdout": "hi\n", "stderr": "", "outcome": {"type": "exit", "exit_code": 0}}]},
    {"type": "apply_patch_call", "id": "ap_1", "call_id": "call_ap", "status": "completed",
     "operation": {"type": "update_file", "path": "a.py", "diff": "@@ -1 +1 @@\n-a\n+b\n"}},
    {"type": "apply_patch_call_output", "id": "apo_1", "call_id": "call_ap",
     "status": "completed", "output": "patched"},
    {"type": "tool_search_call", "id": "ts_1", "call_id": "call_ts", "status": "completed",
     "arguments": {"query": "todo tools"}, "execution": "server"},
    {"type": "compaction", "id": "cmp_1", "encrypted_content": "opaque-compacted-history"},
]

# Input-only items (what the SDK sends back after running a tool, and the like).
INPUT_ITEMS: list[dict[str, Any]] = [
    {"role": "user", "content": "hi " + UNICODE},  # what the SDK stores for a string input
    {"role": "system", "content": "be brief"},
    {"role": "developer", "content": "prefer lists"},
    {"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "what is in this picture?"},
        {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=",
         "detail": "auto"},
        {"type": "input_file", "file_id": "file_1"}]},
    {"type": "function_call_output", "call_id": "call_a",
     "output": '{"added": {"id": 1, "title": "milk ✓"}}'},
    {"type": "function_call_output", "call_id": "call_b",
     "output": [{"type": "input_text", "text": "structured output"}]},
    {"type": "computer_call_output", "call_id": "call_cu",
     "output": {"type": "computer_screenshot", "image_url": "data:image/png;base64,AAAA"},
     "acknowledged_safety_checks": [{"id": "sc_1", "code": "malicious_instructions"}]},
    {"type": "local_shell_call_output", "id": "ls_1", "output": "total 0\n"},
    {"type": "mcp_approval_response", "approval_request_id": "mcpr_1", "approve": True},
    {"type": "custom_tool_call_output", "call_id": "call_custom", "output": "1 row"},
    {"type": "item_reference", "id": "msg_0"},
]

# Handoffs: the SDK writes a transfer as a function call and its output.
HANDOFF_ITEMS: list[dict[str, Any]] = [
    {"type": "function_call", "call_id": "call_h", "name": "transfer_to_billing_agent",
     "arguments": "{}", "id": FAKE_RESPONSES_ID},
    {"type": "function_call_output", "call_id": "call_h",
     "output": '{"assistant": "Billing agent"}'},
]

# A type the SDK does not know yet, with nested values of every JSON kind.
FUTURE_ITEMS: list[dict[str, Any]] = [
    {"type": "hologram_call", "id": "hg_1", "status": "completed",
     "payload": {"nested": [1, -2, 3.25, 1e-7, 2**53, None, True, False, "", [], {}],
                 "deep": {"a": {"b": {"c": [{"d": UNICODE}]}}}}},
]


def output_items() -> list[TResponseInputItem]:
    """The output specs as the SDK replays them (validated by the real models first)."""
    outputs = [_OUTPUT.validate_python(spec) for spec in OUTPUT_SPECS]
    return ModelResponse(output=outputs, usage=Usage(), response_id=None).to_input_items()


def input_items() -> list[TResponseInputItem]:
    """The input-only items, each checked against ``ResponseInputItemParam``."""
    for item in INPUT_ITEMS + HANDOFF_ITEMS:
        _INPUT.validate_python(item)
    return [dict(item) for item in INPUT_ITEMS + HANDOFF_ITEMS]  # type: ignore[misc]


def every_item() -> list[dict[str, Any]]:
    """Every item above, in one list."""
    items: list[Any] = [*output_items(), *input_items(), *FUTURE_ITEMS]
    return [dict(item) for item in items]


def item_types(items: list[dict[str, Any]]) -> list[str]:
    """Distinct ``type`` values (``message`` for typeless easy input messages), in order."""
    seen: list[str] = []
    for item in items:
        kind = str(item.get("type", "message"))
        if kind not in seen:
            seen.append(kind)
    return seen
