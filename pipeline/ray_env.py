"""Connecting to Ray: the cluster a job was submitted to, or a local Ray on this machine."""

from __future__ import annotations

import os

# A local Ray started by us talks over loopback only, has no token auth and sends no usage stats;
# set just before it starts, never for a cluster we join.
LOCAL_RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def init_ray(address: str | None = None) -> bool:
    """Connect to ``address`` (or ``RAY_ADDRESS``, set by ``ray job submit``), else start a local Ray.

    Returns True when a local Ray was started here.
    """
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        # Before importing ray: it reads these when its modules load.
        for key, value in LOCAL_RAY_ENV.items():
            os.environ.setdefault(key, value)
    import ray

    if ray.is_initialized():
        return False
    runtime_env = {"env_vars": {"PYTHONUNBUFFERED": "1"}}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
        return False
    ray.init(include_dashboard=False, runtime_env=runtime_env, logging_level="WARNING")
    return True
