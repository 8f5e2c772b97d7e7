"""Nobody else gets in: the project's local Ray listens on loopback only and keeps token auth, a client
without the token is refused, and auth is turned off only for a local Ray, only by the flag.

Listening sockets are read from ``/proc/net/tcp`` and ``/proc/net/tcp6`` for a process and everything it
started (:mod:`tests.sockets`), sampled while a run goes on, so that workers and agents are seen too.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from jobs.restore_bucket import main
from pipeline.run.ray_env import (
    AUTH_MODE,
    TOKEN_ENV,
    TOKEN_PATH_ENV,
    RayAccessError,
    check_auth_settings,
    local_ray_env,
    private_temp_dir,
)
from tests.jobs import save_photos, write_spec
from tests.servers import RayHead
from tests.sockets import listening_sockets, watching

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# The servers of a Ray node, by process name; workers are named ray::<what they run>.
SERVERS = ("gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent")


def _without_ray_settings(**extra: str) -> dict[str, str]:
    """This environment without the session's Ray settings (its token, loopback, auth mode), as a user's."""
    drop = {*local_ray_env(), TOKEN_PATH_ENV, TOKEN_ENV, "RAY_ADDRESS"}
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def _unlisted(listeners) -> list[str]:
    return sorted(str(x) for x in listeners if not x.loopback)


@pytest.fixture(scope="module")
def ray_head():
    old = os.environ.get("PATH")
    os.environ["PATH"] = f"{BIN}{os.pathsep}{old or ''}"  # `ray` of this environment
    head = RayHead(tempfile.mkdtemp(prefix="rh", dir="/tmp"))
    yield head
    head.stop()
    os.environ["PATH"] = old or ""


@pytest.mark.parametrize("auth", [True, False], ids=["token", "local-ray-no-auth"])
def test_the_jobs_local_ray_listens_on_loopback_only(tmp_path, tiny_weights, auth):
    """A restore run without --address, as the demo runs, from a user's environment (nothing of the tests'
    Ray settings, a home of its own): every socket of its process tree listens on loopback, from the GCS to
    the model actor; the token it needs is made, readable by its owner only, and never printed."""
    save_photos(tmp_path / "in", count=2)
    out = {"uri": str(tmp_path / "out"), "report": False}
    resources = {"cpus_per_actor": 1, "batch_size": 2}
    spec = write_spec(
        tmp_path / "spec.yaml", tiny_weights, input_uri=str(tmp_path / "in"), output=out, resources=resources
    )
    home = tmp_path / "home"
    home.mkdir()
    cmd = [sys.executable, "jobs/restore_bucket.py", "--spec", str(spec), "--run-id", "local"]
    cmd += [] if auth else ["--local-ray-no-auth"]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=_without_ray_settings(HOME=str(home)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with watching(proc.pid) as listeners:
        stdout, stderr = proc.communicate(timeout=420)
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert "ok 2   failed 0" in stdout
    assert not _unlisted(listeners), sorted(map(str, listeners))
    kinds = {x.process for x in listeners}
    assert set(SERVERS) <= kinds, kinds
    assert any(k.startswith("ray::") and k not in SERVERS for k in kinds), kinds  # a worker: the model actor's
    assert any(k.endswith("restore_bucket.py") for k in kinds), kinds  # the driver's own gRPC server
    token = home / ".ray" / "auth_token"
    if auth:
        assert stat.S_IMODE(token.stat().st_mode) == 0o600 and stat.S_IMODE(token.parent.stat().st_mode) == 0o700
        assert token.read_text().strip() not in stdout + stderr
        assert "WARNING" not in stdout
    else:
        assert not token.exists()
        assert "WARNING: the local Ray runs without token auth" in stdout


def test_the_tests_own_ray_listens_on_loopback_only(ray_local, s3_endpoint):
    """The session's Ray and S3 server (and whatever else this test process started: Ray heads) listen on
    loopback only, the GCS and the S3 endpoint among them."""
    address = ray_local.get_runtime_context().gcs_address
    assert address.startswith("127.0.0.1:"), address

    @ray_local.remote(num_cpus=0)
    class Echo:
        def ping(self) -> int:
            return 1

    echo = Echo.remote()
    assert ray_local.get(echo.ping.remote()) == 1
    listeners = listening_sockets(os.getpid())
    ray_local.kill(echo)
    assert not _unlisted(listeners), sorted(map(str, listeners))
    assert set(SERVERS) <= {x.process for x in listeners}
    ports = {x.port for x in listeners}
    assert int(address.rsplit(":", 1)[1]) in ports and int(s3_endpoint.rsplit(":", 1)[1]) in ports
    assert s3_endpoint.startswith("http://127.0.0.1:")


def test_ray_train_listens_on_loopback_but_for_torchs_tcpstore(ray_local, tmp_path):
    """Ray Train on the tests' Ray, two workers meeting over gloo as a data-parallel training does: every
    socket, gloo's included, is on loopback but one, torch's TCPStore on the first worker (the process
    group's rendezvous), which torch binds to every interface whatever is set (docs/security.md says so)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    def loop(config):
        import os
        import time

        import ray.train
        import torch
        import torch.distributed as dist

        dist.all_reduce(torch.ones(1))  # gloo's connections are up
        if ray.train.get_context().get_world_rank() == 0:
            with open(config["port_file"], "w") as f:
                f.write(os.environ["MASTER_PORT"])  # the TCPStore's
        deadline = time.monotonic() + 300  # until the test has seen the listeners (the bound catches a hang)
        while not os.path.exists(config["seen_file"]) and time.monotonic() < deadline:
            time.sleep(0.1)

    port_file, seen_file = tmp_path / "master_port", tmp_path / "seen"
    trainer = TorchTrainer(
        loop,
        train_loop_config={"port_file": str(port_file), "seen_file": str(seen_file)},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(storage_path=str(tmp_path)),
    )
    with watching(os.getpid()) as listeners:
        seen = threading.Thread(target=_release_when_seen, args=(listeners, port_file, seen_file), daemon=True)
        seen.start()
        result = trainer.fit()
    assert result.error is None
    assert len({x.pid for x in listeners if x.process.startswith("ray::RayTrainWorker")}) == 2, listeners
    beyond = {x for x in listeners if not x.loopback}
    assert {x.port for x in beyond} == {int(port_file.read_text())}, sorted(map(str, listeners))
    assert {x.host for x in beyond} <= {"::", "0.0.0.0"}


def _release_when_seen(listeners: set, port_file: Path, seen_file: Path, timeout: float = 300.0) -> None:
    """Touch ``seen_file`` once the sampler has seen both training workers and the TCPStore's port, so that
    the workers keep their sockets open until then, however slowly the machine samples."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            now = list(listeners)  # the sampler's thread adds to the set while this copies it
        except RuntimeError:
            continue
        workers = {x.pid for x in now if x.process.startswith("ray::RayTrainWorker")}
        if port_file.exists() and port_file.read_text() and len(workers) == 2:
            if int(port_file.read_text()) in {x.port for x in now}:
                break
        time.sleep(0.1)
    seen_file.touch()


_GCS_CALL = """
import sys
from ray._raylet import GcsClient
from ray.exceptions import AuthenticationError
try:
    GcsClient(address=sys.argv[1]).internal_kv_get(b"head_node_id", namespace=b"job", timeout=10)
    print("ANSWERED")
except AuthenticationError as exc:
    print("REFUSED", exc)
"""


def _get(url: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


def test_a_client_without_the_token_is_refused_by_the_gcs_and_the_job_api(ray_head):
    token = Path(os.environ[TOKEN_PATH_ENV]).read_text().strip()
    wrong = "0" * len(token)
    clients = {
        "no token": {AUTH_MODE: "disabled"},  # a client that sends none
        "wrong token": {AUTH_MODE: "token", TOKEN_ENV: wrong},
        "the token": {AUTH_MODE: "token", TOKEN_ENV: token},
    }
    answers = {}
    for who, env in clients.items():
        run = subprocess.run(
            [sys.executable, "-c", _GCS_CALL, ray_head.address],
            env=_without_ray_settings(**env),
            capture_output=True,
            text=True,
            timeout=120,
        )
        answers[who] = run.stdout.split(" ", 1)[0].strip()
    assert answers == {"no token": "REFUSED", "wrong token": "REFUSED", "the token": "ANSWERED"}

    # The job API (what `ray job submit` calls) on the dashboard, and the job agent behind it.
    jobs = f"{ray_head.dashboard}/api/jobs/"
    assert (_get(jobs, None), _get(jobs, wrong), _get(jobs, token)) == (401, 403, 200)
    from ray._raylet import GcsClient

    agent = RayHead._agent_url(GcsClient(address=ray_head.address))
    assert agent and agent.startswith("http://127.0.0.1:")
    logs = f"{agent}/api/job_agent/jobs/none/logs"
    assert (_get(logs, None), _get(logs, wrong)) == (401, 403)


@pytest.mark.parametrize(
    "setting, says",
    [
        ({TOKEN_ENV: "0" * 64}, "refused the token from RAY_AUTH_TOKEN"),
        ({}, "needs its token, but this process has none"),
        ({TOKEN_PATH_ENV: "/nonexistent/auth_token"}, "RAY_AUTH_TOKEN_PATH: expected a file holding a Ray token"),
    ],
    ids=["wrong", "missing", "missing-file"],
)
def test_a_wrong_or_missing_token_gives_one_line_with_the_fix(ray_head, tmp_path, tiny_weights, setting, says):
    spec = _empty_input_spec(tmp_path, tiny_weights)
    run = subprocess.run(
        [sys.executable, "jobs/restore_bucket.py", "--spec", str(spec), "--address", ray_head.address],
        cwd=REPO,
        env=_without_ray_settings(HOME=str(tmp_path), **setting),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    assert "Traceback" not in run.stderr and not run.stdout
    # One line of ours (Ray's own log lines start with a timestamp in brackets), with the fix.
    ours = [line for line in run.stderr.splitlines() if line and not line.startswith("[")]
    assert len(ours) == 1 and says in ours[0] and "docs/security.md" in ours[0], run.stderr
    assert not list((tmp_path / "out").rglob("*"))  # nothing written (storage was only checked)


def _empty_input_spec(tmp_path, tiny_weights):
    """A spec of the tiny weights over an empty input folder, writing under ``tmp_path / "out"``."""
    (tmp_path / "in").mkdir()
    return write_spec(
        tmp_path / "spec.yaml",
        tiny_weights,
        input_uri=str(tmp_path / "in"),
        output={"uri": str(tmp_path / "out")},
        resources={},
    )


@pytest.mark.parametrize(
    "address, env, auth, key",
    [
        ("127.0.0.1:6379", {}, False, "--local-ray-no-auth"),
        ("127.0.0.1:6379", {AUTH_MODE: "disabled"}, True, AUTH_MODE),
        (None, {"RAY_ADDRESS": "127.0.0.1:6379", AUTH_MODE: "disabled"}, True, AUTH_MODE),  # a submitted job's
        (None, {AUTH_MODE: "disabled"}, True, AUTH_MODE),  # a local Ray: only by the flag
    ],
    ids=["flag-with-address", "env-with-address", "env-in-a-submitted-job", "env-for-a-local-ray"],
)
def test_turning_auth_off_is_refused_with_its_key_named(
    monkeypatch, capsys, tmp_path, tiny_weights, address, env, auth, key
):
    """A decision, not an accident: auth goes off only for a local Ray, by --local-ray-no-auth. Refused
    before Ray is touched, by the job as a whole (exit 2, one line) as by the function."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(RayAccessError, match=f"^{key}: expected"):
        check_auth_settings(address or os.environ.get("RAY_ADDRESS"), auth=auth)

    spec = _empty_input_spec(tmp_path, tiny_weights)
    argv = [
        "--spec",
        str(spec),
        *(["--address", address] if address else []),
        *([] if auth else ["--local-ray-no-auth"]),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{key}: expected") and "\n" not in err
    assert not list((tmp_path / "out").rglob("*"))  # nothing written (storage was only checked)


def _processes_with(*entries: str) -> set[int]:
    """Pids of this user's processes with any of ``entries`` (``NAME=value``) in their environment."""
    wanted = [e.encode() + b"\0" for e in entries]
    pids = set()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            held = environ.read_bytes() + b"\0"
        except OSError:  # gone, or not ours
            continue
        if any(e in held for e in wanted):
            pids.add(int(environ.parent.name))
    return pids


def test_a_local_run_stopped_by_a_signal_stops_the_ray_it_started(tmp_path, tiny_weights):
    """SIGTERM to a run that started its own Ray (the demo's way) mid-run: it exits 143, and no process of
    the Ray it started outlives it (a run that joined a cluster skips Ray's shutdown at exit to end within
    its grace period; one that started its Ray still stops it)."""
    save_photos(tmp_path / "in", count=12, size=(96, 128))
    out = {"uri": str(tmp_path / "out"), "report": False}
    spec_path = write_spec(
        tmp_path / "spec.yaml",
        tiny_weights,
        input_uri=str(tmp_path / "in"),
        output=out,
        resources={"cpus_per_actor": 1, "batch_size": 1},
        inference={"tile": 64, "overlap": 16, "max_pixels": 4096, "ensemble": True},  # about 6 s an image
    )
    home, marker = tmp_path / "home", f"DGUNET_TEST_RUN={tmp_path.name}"
    tree = (marker,)
    home.mkdir()
    env = _without_ray_settings(HOME=str(home), DGUNET_TEST_RUN=tmp_path.name)
    cmd = [sys.executable, "jobs/restore_bucket.py", "--spec", str(spec_path), "--run-id", "local"]
    log = tmp_path / "run.log"
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        images = tmp_path / "out" / "images"
        deadline = time.monotonic() + 300
        while not (images.is_dir() and any(images.iterdir())):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        # The Ray it started: what inherits the run's environment (GCS, raylet, workers), and the raylet's
        # agents, which get an environment of their own naming their raylet.
        argv0 = {p: Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[0] for p in _processes_with(marker)}
        raylets = [p for p, name in argv0.items() if name.endswith(b"/raylet")]
        assert len(raylets) == 1, log.read_text()[-3000:]
        tree = (marker, f"RAY_RAYLET_PID={raylets[0]}")
        assert len(_processes_with(*tree)) >= 5  # GCS, raylet, two agents, the model actor, ...
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143, log.read_text()[-3000:]
        deadline = time.monotonic() + 60  # processes take a moment to exit; the bound only catches those that stay
        while (left := _processes_with(*tree)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, [Path(f"/proc/{p}/cmdline").read_bytes()[:100] for p in left if Path(f"/proc/{p}").exists()]
    finally:
        proc.kill()
        for pid in _processes_with(*tree):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("via", ["default", TOKEN_PATH_ENV])
def test_a_token_file_others_may_read_is_refused_with_the_chmod_to_run(tmp_path, tiny_weights, via):
    """Before a local Ray starts: whoever may read the token may run code as its owner."""
    token = tmp_path / ".ray" / "auth_token"
    token.parent.mkdir()
    token.write_text("a" * 64)
    token.chmod(0o640)
    spec = _empty_input_spec(tmp_path, tiny_weights)
    setting = {TOKEN_PATH_ENV: str(token)} if via == TOKEN_PATH_ENV else {}
    run = subprocess.run(
        [sys.executable, "jobs/restore_bucket.py", "--spec", str(spec)],
        cwd=REPO,
        env=_without_ray_settings(HOME=str(tmp_path), **setting),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    assert run.stderr.strip().splitlines() == [
        f"{'the Ray token' if via == 'default' else TOKEN_PATH_ENV}: expected a token file readable by its owner only, "
        f"but got {token} with mode 640 instead; run: chmod 600 {token}"
    ]
    assert stat.S_IMODE(token.stat().st_mode) == 0o640  # refused, not changed behind the owner's back


def test_the_local_rays_session_is_readable_by_its_owner_only(ray_local):
    session = Path(ray_local._private.worker._global_node.get_session_dir_path())
    assert session.parent == Path(private_temp_dir())
    assert session.parent.stat().st_uid == os.getuid() and stat.S_IMODE(session.parent.stat().st_mode) == 0o700
