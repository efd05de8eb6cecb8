"""One sample of every input item type the installed OpenAI SDK knows (the Responses API
items the Agents SDK stores), built from the SDK's own TypedDicts, so a new item type in a
later SDK release is covered without editing this file.

Each sample fills every key the type declares (the first option of each union, the first
value of each Literal, unicode in every string) and is checked against the real type with
pydantic, so it is an item the SDK could produce or accept.
"""

from __future__ import annotations

import collections.abc
import types
import typing
from typing import Any, Union, get_args, get_origin, get_type_hints

import typing_extensions
from openai.types.responses import ResponseInputItemParam
from pydantic import TypeAdapter
from typing_extensions import is_typeddict

_WRAPPERS = {typing.Annotated, typing.Required, typing.NotRequired, typing_extensions.Required,
             typing_extensions.NotRequired, typing_extensions.ReadOnly}
_SEQUENCES = {list, collections.abc.Iterable, collections.abc.Sequence}


def _sample(tp: Any, path: str, depth: int = 0) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if origin in _WRAPPERS:
        return _sample(args[0], path, depth)
    if tp is Any or tp is object:
        return {"any": path, "nested": [1, 2.5, None, True, {"ü": "✓"}]}
    if origin in (typing.Literal, typing_extensions.Literal):
        return args[0]
    if origin in (Union, types.UnionType):
        return _sample(next(a for a in args if a is not type(None)), path, depth)
    if tp is str:
        return f"{path} ünï ✓ \U0001f95b"
    if tp is bool:
        return True
    if tp is int:
        return 7
    if tp is float:
        return 0.25
    if tp in (dict, typing.Dict):  # noqa: UP006 - the SDK's own annotations use it
        return {}
    if origin in _SEQUENCES or getattr(origin, "__name__", "") == "SequenceNotStr":
        return [_sample(args[0], path + "[0]", depth + 1)] if args and depth < 6 else []
    if origin in (dict, collections.abc.Mapping):
        return {"k": _sample(args[1], path + ".k", depth + 1)} if depth < 6 else {}
    if is_typeddict(tp):
        return {key: _sample(ann, f"{path}.{key}", depth + 1)
                for key, ann in get_type_hints(tp, include_extras=True).items()}
    raise TypeError(f"no sample for {path}: {tp!r}")


def every_input_item() -> dict[str, dict[str, Any]]:
    """``{type name: sample item}`` for every member of ``ResponseInputItemParam``."""
    out = {}
    for member in get_args(ResponseInputItemParam):
        item = _sample(member, member.__name__)
        TypeAdapter(member).validate_python(item)  # a real item of that type
        out[member.__name__] = item
    return out
