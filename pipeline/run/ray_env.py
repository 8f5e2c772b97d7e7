"""Connecting to Ray: the cluster a job was submitted to, or a local Ray on this machine that only this
machine's loopback reaches, with Ray's token auth.

How a local Ray (:func:`start_local_ray`) is kept to loopback:

* Every server of a Ray node binds its node's address: the GCS, the raylet (node and object manager),
  each worker's and driver's gRPC server (127.0.0.1 when the node's address is 127.0.0.1, every interface
  otherwise), the dashboard agent (HTTP, gRPC and metrics export), the runtime-env agent and the
  dashboard's and autoscaler's metrics servers. Ray takes 127.0.0.1 as a local node's address only while
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read when Ray is imported (``_node_ip_address="127.0.0.1"``
  alone is turned into the machine's network address), so that is set before the import, and the address
  Ray would take is checked before it starts.
* The dashboard is off (``include_dashboard=False``: its process then listens for its metrics only); when
  asked for, it listens on 127.0.0.1, Ray's default dashboard host.
* Ray Train's gloo and NCCL connections use the loopback interface (``GLOO_SOCKET_IFNAME``,
  ``NCCL_SOCKET_IFNAME``). torch's TCPStore, which Ray Train starts on its first worker for the process
  group, listens on every interface whatever is set: torch has no option for its address.

Token auth: ``RAY_AUTH_MODE=token``, so that every RPC and HTTP request needs the cluster's token. Ray reads
it from ``RAY_AUTH_TOKEN``, the file that ``RAY_AUTH_TOKEN_PATH`` names, or ``~/.ray/auth_token``; where none
is there, a new token is written to ``~/.ray/auth_token`` readable by its owner only (Ray's own would be
readable by every local user under the usual umask). Auth is off only for a local Ray, and only when the
caller says so (``auth=False``: ``--local-ray-no-auth``); an environment or a flag that would turn it off
for a cluster a job joins is refused with its key named. A token file that group or others may read is
refused, with the ``chmod 600`` to run; a local Ray keeps its session (logs, sockets, spilled objects) in
``<tmp>/ray-<uid>``, readable by its owner only, not in the ``/tmp/ray`` every user shares.
"""

from __future__ import annotations

import os
import secrets
import shlex
import socket
import stat
import sys
import tempfile
from pathlib import Path

LOOPBACK = "127.0.0.1"
AUTH_MODE = "RAY_AUTH_MODE"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
NO_AUTH_FLAG = "--local-ray-no-auth"
_FIX = "see 'Ray's token' in docs/security.md"


class RayAccessError(RuntimeError):
    """Ray cannot be started or joined as this project requires; the message is one line with the fix."""


def local_ray_env(*, auth: bool = True) -> dict[str, str]:
    """The environment of a local Ray, set before Ray is imported (Ray reads it when its modules load, and
    its processes inherit it)."""
    env = {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # the node's address is 127.0.0.1: its servers bind loopback
        AUTH_MODE: "token" if auth else "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        # Ray starts its workers at niceness 15; a local run's workers are the run's work (the model actors
        # included), and beside any busy process of normal priority they got a few percent of a core: a
        # planning test of 21 s idle ran past 600 s beside two busy processes on 2 cores.
        "RAY_worker_niceness": "0",
    }
    lo = _loopback_interface()
    if lo:
        env.update(GLOO_SOCKET_IFNAME=lo, NCCL_SOCKET_IFNAME=lo)
    return env


def _loopback_interface() -> str | None:
    names = {name for _, name in socket.if_nameindex()} if hasattr(socket, "if_nameindex") else set()
    return next((n for n in ("lo", "lo0") if n in names), None)


def default_token_path() -> Path:
    """Where Ray looks for the token when neither ``RAY_AUTH_TOKEN`` nor ``RAY_AUTH_TOKEN_PATH`` is set."""
    return Path.home() / ".ray" / "auth_token"


def init_ray(address: str | None = None, *, auth: bool = True) -> bool:
    """Connect to ``address`` (or ``RAY_ADDRESS``, set by ``ray job submit``), else start a local Ray.

    Args:
        address: a Ray cluster's GCS address; None: ``RAY_ADDRESS``, else a local Ray on 127.0.0.1.
        auth: False starts the local Ray without token auth; refused when there is a cluster to join.

    Returns:
        True when a local Ray was started here.

    Raises:
        RayAccessError: auth turned off for a cluster to join, a token missing or refused, or a local Ray
            that would not be on loopback only.
    """
    address = address or os.environ.get("RAY_ADDRESS")
    check_auth_settings(address, auth=auth)
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        return False
    runtime_env = {"env_vars": {"PYTHONUNBUFFERED": "1"}}
    if not address:
        start_local_ray(auth=auth, runtime_env=runtime_env, logging_level="WARNING")
        return True
    os.environ[AUTH_MODE] = "token"
    _check_token(address)
    import ray

    ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
    return False


def check_auth_settings(address: str | None, *, auth: bool) -> None:
    """Refuse what would turn token auth off where it must stay on: ``auth=False`` (the flag) or
    ``RAY_AUTH_MODE`` other than token for a cluster to join (``address``), and ``RAY_AUTH_MODE`` other than
    token for a local Ray without the flag.

    Raises:
        RayAccessError: naming the flag or the variable.
    """
    if address and not auth:
        raise RayAccessError(
            f"{NO_AUTH_FLAG}: expected a local Ray, but got the cluster at {address} (--address or RAY_ADDRESS) "
            "instead: auth is turned off only for a local Ray, never for a cluster a job joins."
        )
    mode = os.environ.get(AUTH_MODE)
    if not auth or mode is None or mode.lower() == "token":
        return
    if address:
        raise RayAccessError(
            f"{AUTH_MODE}: expected token (or unset) to join the Ray cluster at {address}, but got {mode!r} "
            "instead: a job does not turn token auth off for a cluster it joins. Unset it."
        )
    raise RayAccessError(
        f"{AUTH_MODE}: expected token (or unset) for a local Ray, but got {mode!r} instead. Unset it; a local "
        f"Ray runs without auth only with {NO_AUTH_FLAG} (see docs/security.md)."
    )


def start_local_ray(*, auth: bool = True, **init_kwargs) -> None:
    """Start Ray on this machine, on 127.0.0.1 only, with token auth unless ``auth`` is False.

    ``init_kwargs`` go to ``ray.init`` (``num_cpus``, ``runtime_env``, ``logging_level``, ...); the dashboard
    is off unless ``include_dashboard=True`` is given, and then listens on 127.0.0.1 too.

    Raises:
        RayAccessError: ``RAY_AUTH_MODE`` turns auth off without ``auth=False``, ``RAY_AUTH_TOKEN_PATH`` names
            no token, or Ray was imported too early to take 127.0.0.1 as the node's address.
    """
    check_auth_settings(None, auth=auth)
    os.environ.update(local_ray_env(auth=auth))
    if auth:
        _ensure_token()
    import ray

    # Before ray.init: the node's address that Ray would take, and so every server's bind address.
    would_bind = ray.util.get_node_ip_address()
    if would_bind != LOOPBACK:
        raise RayAccessError(
            f"Expected a local Ray on {LOOPBACK}, but Ray would listen on {would_bind} instead: it was imported "
            "before RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was set. Start it through pipeline.run.ray_env before "
            "anything imports ray."
        )
    init_kwargs.setdefault("include_dashboard", False)
    init_kwargs.setdefault("_temp_dir", private_temp_dir())
    ray.init(**init_kwargs)


def _token_source() -> str | None:
    """Where Ray will take this process's token from (in Ray's own order), or None when there is none.

    Raises:
        RayAccessError: ``RAY_AUTH_TOKEN_PATH`` names a missing or empty file (Ray would abort on it).
    """
    if os.environ.get(TOKEN_ENV):
        return TOKEN_ENV
    configured = os.environ.get(TOKEN_PATH_ENV)
    if configured:
        path = Path(configured)
        if not (path.is_file() and path.read_text().strip()):
            raise RayAccessError(
                f"{TOKEN_PATH_ENV}: expected a file holding a Ray token, but got {configured} (missing or empty) "
                f"instead; {_FIX}."
            )
        _check_private(path, TOKEN_PATH_ENV)
        return f"{TOKEN_PATH_ENV} ({configured})"
    if default_token_path().is_file():
        _check_private(default_token_path(), "the Ray token")
        return str(default_token_path())
    if os.environ.get("RAY_ENABLE_K8S_TOKEN_AUTH", "").lower() in ("1", "true"):
        return "the pod's Kubernetes service account token"
    return None


def _check_private(path: Path, key: str) -> None:
    """Refuse a token file that others than its owner may read: whoever reads it may run code on the cluster.

    Raises:
        RayAccessError: the file's mode gives group or others any access; one line with the ``chmod`` to run.
    """
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise RayAccessError(
            f"{key}: expected a token file readable by its owner only, but got {path} with mode {mode:o} instead; "
            f"run: chmod 600 {shlex.quote(str(path))}"
        )


def private_temp_dir() -> str:
    """The local Ray's temp dir, ``<tmp>/ray-<uid>``, made or kept readable by its owner only (0700), instead
    of the ``/tmp/ray`` that every user of the machine shares (session logs, sockets, spilled objects).

    Raises:
        RayAccessError: the folder is there and belongs to another user.
    """
    path = os.path.join(tempfile.gettempdir(), f"ray-{os.getuid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if st.st_uid != os.getuid() or not stat.S_ISDIR(st.st_mode):
        raise RayAccessError(
            f"Expected the local Ray's temp dir {path} to be a folder of this user, but got one of uid {st.st_uid} "
            "instead: remove it, or set TMPDIR to a folder of your own."
        )
    os.chmod(path, 0o700)
    return path


def _ensure_token() -> None:
    """Make sure Ray finds a token for a new local cluster: the one configured, else a new one written to
    ``~/.ray/auth_token`` (owner read and write only)."""
    if _token_source() is not None:
        return
    path = default_token_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another local Ray wrote it first
        return
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))  # 256 bits, as `ray get-auth-token --generate` makes them


def _check_token(address: str) -> None:
    """Ask the cluster's GCS once whether it takes this process's token, before ``ray.init``, which would
    retry a refused token for 20 s and log every try.

    Raises:
        RayAccessError: no token, or the cluster refused it; one line that says the fix.
    """
    source = _token_source()
    if source is None:
        raise RayAccessError(
            f"The Ray cluster at {address} needs its token, but this process has none: put the cluster's token "
            f"in a file and point {TOKEN_PATH_ENV} at it; {_FIX}."
        )
    from ray._raylet import GcsClient  # the client Ray itself connects with; no public one in Ray 2.60
    from ray.exceptions import AuthenticationError

    try:
        GcsClient(address=address)
    except AuthenticationError:
        raise RayAccessError(
            f"The Ray cluster at {address} refused the token from {source}: it is not this cluster's. Point "
            f"{TOKEN_PATH_ENV} at a file holding the cluster's token; {_FIX}."
        ) from None
    except Exception as exc:  # nothing answers there (Ray gives up after its own retries)
        raise RayAccessError(
            f"Expected a Ray cluster at {address}, but got no answer ({type(exc).__name__}: {exc}) instead."
        ) from None
