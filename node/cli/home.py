"""The node home as a command opens it: made on a first start where a command needs one
(the container's empty volume), its key logged and said, as `init` does."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from attestation.schema import NodeEventKind

if TYPE_CHECKING:
    from node.runtime import Node


def open_home(home: Path | None, create: bool = False) -> Node:
    """The node at `home`; with `create`, a new home is made on first start (the
    container's volume), as `init` makes it, and said so."""
    from node.runtime import open_node

    node = open_node(home, create=create)
    if node.created:
        announce(node, "node home created")
    return node


def announce(node: Node, what: str) -> None:
    """Log the node key's creation (once) and print the home and the key."""
    from node.tlog.records import EVENT_KIND, event_statement

    existed = node.key_path.exists()
    tlog = node.log()  # creates the key if the home has none
    if tlog.size == 0:
        tlog.append(EVENT_KIND, event_statement(tlog.node_id, NodeEventKind.NODE_KEY_CREATED))
        tlog.checkpoint()
    print(f"{what}: {node.settings.home}")
    print(f"node key {'kept' if existed else 'created'}: {tlog.node_id} ({node.key_path})")
