"""What a direct link brings that names another node's segments: held until our node has copies.

::

    DirectLink ──batch──▶ take(batch, link)
        names no other node's segment, nothing held for that link ──▶ dispatch now
        else ──▶ held[link] (in arrival order) ── FETCH(id, [(path, move)]) ──▶ our node
                                                   (it pulls them: runtime/node/transfer.py)
    our node ──FETCHED(id, {path: local copy | None})──▶ on_fetched ──▶ paths.rewrite
        ──▶ dispatch the held batches of that link from the front, in order, while ready
    the link closed ──▶ closed(link): after what is held for it, in order (like the gateway's
        Stream on the relay path: a worker's last DONE comes before its end)

On the relay path the gateways do this on the way (`gateway.Stream`); on a
direct link the receiving process asks its own node. A moved result
(``DONE``) becomes ours; a copied argument stays the node's cached copy.
"""

from __future__ import annotations

import os
from collections import deque

from ..wire import paths, transport
from ..wire.protocol import Kind
from .services import CoreServices

CLOSED = object()  # in a link's queue: the link closed after what is before it


class Arrivals:
    """Batches from direct links waiting for our node's copies of other nodes' segments."""

    def __init__(self, core: CoreServices) -> None:
        self.core = core
        self.held: dict[transport.Link, deque[list]] = {}  # link -> [[batch, mapping or None]]
        # FETCH id -> (link, its entry, what was asked); (None, None, asked) once the link is gone
        self.waiting: dict[int, tuple] = {}
        self.next_id = 0

    def take(self, batch: list, link: transport.Link) -> list | None:
        """`batch` if it can be dispatched now; None if it waits (for our node, or its turn)."""
        queue = self.held.get(link)
        wanted = paths.foreign_paths(batch, self.core.node_id)
        if not wanted and not queue:
            return batch
        if queue is None:
            queue = self.held[link] = deque()
        entry = [batch, None if wanted else {}]
        queue.append(entry)
        if wanted:
            self.next_id += 1
            self.waiting[self.next_id] = (link, entry, wanted)
            self.core.send_node((Kind.FETCH, self.next_id, wanted))
        return None

    def holding(self, link: transport.Link) -> bool:
        return bool(self.held.get(link))

    def close_after(self, link: transport.Link) -> None:
        """The link closed while batches wait: it closes for us after them."""
        self.held[link].append([CLOSED, {}])

    def on_fetched(self, req_id: int, mapping: dict[str, str | None]) -> None:
        link, entry, wanted = self.waiting.pop(req_id, (None, None, ()))
        if link is None:  # its link was dropped meanwhile: results moved here are nobody's
            for path, move in wanted:
                local = mapping.get(path)
                if move and local:
                    try:
                        os.unlink(local)
                    except OSError:
                        pass
            return
        entry[1] = mapping
        self.release(link)

    def release(self, link: transport.Link) -> None:
        queue = self.held.get(link)
        core = self.core
        while queue and queue[0][1] is not None:
            batch, mapping = queue.popleft()
            if batch is CLOSED:
                del self.held[link]
                core.on_peer_closed(link)
                link.close()
                return
            core.dispatch(paths.rewrite(batch, mapping) if mapping else batch, link)
        if not queue:
            self.held.pop(link, None)

    def forget(self, link: transport.Link) -> None:
        """The link is gone at once (its node died): what waits for it is dropped."""
        if self.held.pop(link, None):
            for req_id, (owner, _, wanted) in self.waiting.items():
                if owner is link:
                    self.waiting[req_id] = (None, None, wanted)
