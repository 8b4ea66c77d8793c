"""Ray Client's entry points, ``ray.util.connect`` / ``disconnect``: here they are `init` / `shutdown`."""

from __future__ import annotations

from typing import Any

from .. import init, is_initialized, shutdown

__all__ = ["connect", "disconnect"]


def connect(
    conn_str: str,
    secure: bool = False,
    metadata: Any = None,
    connection_retries: int = 3,
    job_config: Any = None,
    namespace: str | None = None,
    *,
    ignore_version: bool = False,
    ray_init_kwargs: dict[str, Any] | None = None,
) -> dict:
    """Attach to the cluster at ``"host:port"`` (a ``ray://`` prefix is accepted), as ``init(address)``.

    Example::

        >>> from runtime.util import connect, disconnect
        >>> connect("127.0.0.1:6380")          # a head started with `nbcluster start --head`
        >>> disconnect()
    """
    if not isinstance(conn_str, str) or not conn_str:
        raise TypeError(f'connect() takes an address like "host:port", got {conn_str!r}')
    if is_initialized():
        raise RuntimeError(
            "connect() was called while already connected; call disconnect() (or runtime.shutdown()) first"
        )
    address = conn_str.removeprefix("ray://")
    return init(address, namespace=namespace, **(ray_init_kwargs or {}))


def disconnect() -> None:
    """Detach from the cluster (`shutdown`)."""
    shutdown()
