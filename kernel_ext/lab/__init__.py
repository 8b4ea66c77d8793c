"""The Jupyter server side of the nbcluster sidebar.

Loaded by Jupyter Server (``jupyter server extension list`` shows
``kernel_ext.lab``); the front end is the prebuilt lab extension
``nbcluster-labextension``, built from ``labextension/`` and installed by the
wheel. REST API, every route authenticated, under ``<base_url>/nbcluster/``::

    GET    clusters                    every cluster on this machine, a snapshot each
    POST   clusters                    start one: {"num_cpus", "num_gpus", "memory", "resources"}
    GET    clusters/<id>               one cluster
    DELETE clusters/<id>               stop it
    GET    clusters/<id>/events?since  finished tasks (the task stream; runtime.timeline's events)
    GET    ray                         whether Ray is installed here; the Ray clusters added by address
    POST   ray                         add one: {"address": "host:port" (its GCS), "token"}
    DELETE ray/<id>                    forget it (it keeps running: it is not ours to stop)

Ray clusters added by address are listed by ``GET clusters`` too (ids ``ray-…``,
``"engine": "ray"``); ``DELETE clusters/ray-…`` is refused (409): Stop never
touches someone else's Ray cluster.
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "kernel_ext.lab"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "nbcluster-labextension"}]


def _load_jupyter_server_extension(server_app: Any) -> None:
    """Register the handlers; called once by Jupyter Server."""
    from .handlers import setup_handlers

    setup_handlers(server_app)
    server_app.log.info("nbcluster: sidebar API at %snbcluster/", server_app.base_url)
