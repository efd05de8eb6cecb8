"""Adapters that run the benchmark's operations against other chat-history libraries.

Each module wraps one library behind the :class:`~bench.peers.base.Peer` interface. The
libraries are imported lazily (``all_peers``), so ``bench.peers.base`` works without them;
install them with ``pip install -r bench/requirements-peers.txt``.
"""

from __future__ import annotations

from .base import NotSupported, Peer

__all__ = ["NotSupported", "Peer", "all_peers"]


def all_peers() -> list[Peer]:
    """A fresh, not yet set up, instance of every peer."""
    from .agents_sqlalchemy import AgentsSQLAlchemyPeer
    from .langchain_pg import LangchainPostgresPeer
    from .llamaindex_pg import LlamaIndexPostgresPeer
    from .sqlmodel_plain import SQLModelPeer

    return [LangchainPostgresPeer(), AgentsSQLAlchemyPeer(), LlamaIndexPostgresPeer(),
            SQLModelPeer()]
