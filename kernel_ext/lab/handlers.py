"""REST handlers of the sidebar, under ``<base_url>/nbcluster/``; every verb is authenticated.

The registry's calls block (they wait on a cluster's head), so they run in
threads; the server's event loop never waits on a cluster.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import math
import time
from typing import Any

import tornado
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from .ray_clusters import INSTALL, RayClusterError, RayClusters, ray_installed
from .registry import Registry, UnknownCluster

EVENTS_WINDOW = 60.0  # seconds of task events sent when the client does not say since when
MAX_EVENTS = 2000


class _Handler(APIHandler):
    @property
    def registry(self) -> Registry:
        return self.settings["nbcluster_registry"]

    @property
    def ray(self) -> RayClusters:
        return self.settings["nbcluster_ray"]

    async def ray_cluster(self, cluster_id: str) -> Any:
        cluster = await asyncio.to_thread(self.ray.find, cluster_id)
        if cluster is None:
            raise tornado.web.HTTPError(404, f"no Ray cluster {cluster_id!r} was added")
        return cluster

    async def kernel_owners(self) -> dict[int, dict[str, Any]]:
        """pid -> the kernel (and its notebook) of every kernel this server runs."""
        sessions = await self.session_manager.list_sessions()
        by_kernel = {s["kernel"]["id"]: s for s in sessions if s.get("kernel")}
        owners: dict[int, dict[str, Any]] = {}
        for kernel_id in self.kernel_manager.list_kernel_ids():
            kernel = self.kernel_manager.get_kernel(kernel_id)
            provisioner = getattr(kernel, "provisioner", None)
            pid = getattr(provisioner, "pid", None) or getattr(
                getattr(provisioner, "process", None), "pid", 0
            )
            if not pid:
                continue
            session = by_kernel.get(kernel_id, {})
            owners[pid] = {
                "kind": "kernel",
                "pid": pid,
                "kernel_id": kernel_id,
                "kernel_name": kernel.kernel_name,
                "path": session.get("path", ""),
                "name": session.get("name", ""),
            }
        return owners

    async def described(self, info: Any) -> dict[str, Any]:
        owners = await self.kernel_owners() if info.embedded else {}
        return await asyncio.to_thread(self.registry.describe, info, owners.get(info.owner_pid))

    async def lookup(self, cluster_id: str) -> Any:
        try:
            return await asyncio.to_thread(self.registry.find, cluster_id)
        except UnknownCluster as e:
            raise tornado.web.HTTPError(404, str(e)) from None


class ClustersHandler(_Handler):
    @tornado.web.authenticated
    async def get(self) -> None:
        """Every running cluster on this machine, with a snapshot each."""
        infos = await asyncio.to_thread(self.registry.infos)
        added = await asyncio.to_thread(self.ray.list)
        owners = await self.kernel_owners()
        clusters = await asyncio.gather(
            *(
                asyncio.to_thread(self.registry.describe, i, owners.get(i.owner_pid) if i.embedded else None)
                for i in infos
            ),
            *(asyncio.to_thread(self.ray.describe, c) for c in added),
        )
        self.finish(json.dumps({"clusters": clusters, "now": time.time()}))

    @tornado.web.authenticated
    async def post(self) -> None:
        """Start a cluster: ``{"num_cpus", "num_gpus", "memory" (bytes), "resources" {name: amount}}``."""
        body = self.get_json_body() or {}
        if not isinstance(body, dict):
            raise tornado.web.HTTPError(400, "expected a JSON object")
        try:
            kwargs = {
                "num_cpus": _number(body, "num_cpus"),
                "num_gpus": _number(body, "num_gpus"),
                "memory": _number(body, "memory", integer=True),
                "object_store_memory": _number(body, "object_store_memory", integer=True),
                "resources": _resources(body.get("resources")),
            }
            info = await asyncio.to_thread(self.registry.start, **kwargs)
        except ValueError as e:
            raise tornado.web.HTTPError(400, str(e)) from None
        self.set_status(201)
        self.finish(json.dumps(await self.described(info)))


class ClusterHandler(_Handler):
    @tornado.web.authenticated
    async def get(self, cluster_id: str) -> None:
        if cluster_id.startswith("ray-"):
            cluster = await self.ray_cluster(cluster_id)
            self.finish(json.dumps(await asyncio.to_thread(self.ray.describe, cluster)))
            return
        self.finish(json.dumps(await self.described(await self.lookup(cluster_id))))

    @tornado.web.authenticated
    async def delete(self, cluster_id: str) -> None:
        """Stop the cluster (every process of it) and answer when it is gone."""
        if cluster_id.startswith("ray-"):  # never someone else's Ray cluster
            cluster = await self.ray_cluster(cluster_id)
            raise tornado.web.HTTPError(
                409,
                f"the Ray cluster at {cluster.address} was added by address and is not stopped from "
                f"here; to take it off the list, remove it (DELETE nbcluster/ray/{cluster_id})",
            )
        info = await self.lookup(cluster_id)
        await asyncio.to_thread(self.registry.stop, info)
        self.set_status(204)
        self.finish()


class EventsHandler(_Handler):
    @tornado.web.authenticated
    async def get(self, cluster_id: str) -> None:
        """Tasks of every node that finished after ``?since=`` (seconds since the epoch; default:
        the last minute): ours from the node files here and the head, Ray's from its dashboard."""
        now = time.time()
        try:
            since = float(self.get_query_argument("since", str(now - EVENTS_WINDOW)))
        except ValueError:
            raise tornado.web.HTTPError(400, "since must be a number of seconds since the epoch") from None
        if cluster_id.startswith("ray-"):
            cluster = await self.ray_cluster(cluster_id)
            events = await asyncio.to_thread(self.ray.events, cluster, since)
        else:
            info = await self.lookup(cluster_id)
            events = await asyncio.to_thread(self.registry.events, info, since)
        self.finish(json.dumps({"now": now, "events": events[-MAX_EVENTS:]}))


class RayClustersHandler(_Handler):
    @tornado.web.authenticated
    async def get(self) -> None:
        """Whether Ray is installed here (the form says how to install it), and the clusters added."""
        added = await asyncio.to_thread(self.ray.list)
        self.finish(
            json.dumps(
                {
                    "installed": ray_installed(),
                    "install": INSTALL,
                    "clusters": [{"cluster_id": c.cluster_id, "address": c.address} for c in added],
                }
            )
        )

    @tornado.web.authenticated
    async def post(self) -> None:
        """Add a Ray cluster: ``{"address": "host:port" (its GCS), "token": "..." (optional)}``."""
        body = self.get_json_body() or {}
        address, token = body.get("address"), body.get("token") or ""
        if not isinstance(address, str) or not isinstance(token, str):
            raise tornado.web.HTTPError(400, 'expected {"address": "host:port", "token": "..."}')
        try:
            cluster = await asyncio.to_thread(self.ray.add, address, token)
        except RayClusterError as e:
            raise tornado.web.HTTPError(400, str(e)) from None
        self.set_status(201)
        self.finish(json.dumps(await asyncio.to_thread(self.ray.describe, cluster)))


class RayClusterHandler(_Handler):
    @tornado.web.authenticated
    async def delete(self, cluster_id: str) -> None:
        """Forget a Ray cluster added by address; it keeps running."""
        if not await asyncio.to_thread(self.ray.remove, cluster_id):
            raise tornado.web.HTTPError(404, f"no Ray cluster {cluster_id!r} was added")
        self.set_status(204)
        self.finish()


def _number(body: dict, key: str, integer: bool = False) -> float | int | None:
    value = body.get(key)
    if value in (None, ""):
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{key} must be a non-negative number, got {value!r}")
    return int(value) if integer else float(value)


def _resources(value: Any) -> dict[str, float] | None:
    if value in (None, {}):
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and k for k in value):
        raise ValueError('resources must be an object like {"alice": 2}')
    return value


def setup_handlers(server_app: Any) -> None:
    """Add the routes to the server's web app, with one registry shared by them."""
    web_app = server_app.web_app
    registry = Registry()
    web_app.settings["nbcluster_registry"] = registry
    web_app.settings["nbcluster_ray"] = RayClusters()
    base = url_path_join(web_app.settings["base_url"], "nbcluster")
    cluster = r"/clusters/(?P<cluster_id>[0-9a-f]+|ray-[0-9a-f]+)"
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "clusters") + "/?", ClustersHandler),
            (base + cluster + "/?", ClusterHandler),
            (base + cluster + "/events/?", EventsHandler),
            (url_path_join(base, "ray") + "/?", RayClustersHandler),
            (base + r"/ray/(?P<cluster_id>ray-[0-9a-f]+)/?", RayClusterHandler),
        ],
    )
    atexit.register(registry.close)  # its clients; the clusters keep running
