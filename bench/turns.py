"""What an application does with each library: a context window, and a stateless chat turn."""

from __future__ import annotations

from typing import Any

from .own import ChatstorePeer, RawAsyncpgPeer
from .peers import NotSupported, Peer
from .plan import TOKEN_BUDGET, USER


async def context(peer: Peer, key: str) -> Any:
    if isinstance(peer, ChatstorePeer | RawAsyncpgPeer):
        return await peer.context(USER, key, TOKEN_BUDGET)
    raise NotSupported("no token-budgeted context window")


async def chat_turn(peer: Peer, key: str, user_msg: dict[str, Any],
                    reply: dict[str, Any]) -> None:
    """Read the context, store the user's message, (call the model,) store the reply."""
    if isinstance(peer, ChatstorePeer | RawAsyncpgPeer):
        await peer.context(USER, key, TOKEN_BUDGET)
    else:
        await peer.newest(USER, key, 50)
    await peer.append_one(USER, key, user_msg)
    await peer.append_one(USER, key, reply)
