"""Where a Ray cluster's dashboard listens, asked of its GCS: run as a short-lived subprocess.

``python -m kernel_ext.lab.ray_locate HOST:PORT`` (token in ``RAY_AUTH_TOKEN``) prints
``{"dashboard": "http://host:port"}`` or ``{"error": "..."}``. The sidebar's server runs it
once per added Ray cluster (and again only when the dashboard stops answering): reading
Ray's GCS needs Ray's own client, which keeps process-wide state (the address, the token)
that a Jupyter server must not take on, and ``ray.init`` would make the server a Ray driver.
"""

from __future__ import annotations

import json
import sys


def locate(address: str) -> dict[str, str]:
    """The dashboard URL the GCS at `address` knows, or the reason it could not be read."""
    try:
        from ray._private import ray_constants
        from ray._raylet import GcsClient
    except ImportError as e:
        return {"error": f"Ray is not installed where the Jupyter server runs ({e})"}
    try:
        gcs = GcsClient(address=address)
        url = gcs.internal_kv_get(
            ray_constants.DASHBOARD_ADDRESS.encode(), ray_constants.KV_NAMESPACE_DASHBOARD, timeout=10
        )
    except Exception as e:  # noqa: BLE001 - the parent says it in one line
        text = " ".join(str(e).split())
        if "auth" in text.lower() or "token" in text.lower():
            return {
                "error": f"the Ray cluster at {address} wants its authentication token, or refused the "
                "one given: remove it and add it again with the token (`ray get-auth-token` on its head)"
            }
        return {"error": f"could not read the Ray cluster at {address}: {text[:300]}"}
    if not url:
        return {"error": "the Ray cluster runs no dashboard (start it with ray[default])"}
    return {"dashboard": "http://" + url.decode()}


def main() -> None:
    print(json.dumps(locate(sys.argv[1])), flush=True)


if __name__ == "__main__":
    main()
