"""Peak resident memory of a process tree, by role (driver, model actors, other Ray workers, Ray daemons).

Polls ``/proc`` (Linux) every ``interval`` seconds; for each role it keeps the highest RSS any one
process of that role had at a poll. Ray workers are told apart by their process titles (``ray::...``).
"""

from __future__ import annotations

import os
import threading


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _read(f"/proc/{entry}/stat")
            if stat:
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                tree.setdefault(ppid, []).append(int(entry))
    return tree


def _rss_mb(pid: int) -> float:
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def role(pid: int, root: int) -> str:
    if pid == root:
        return "driver"
    cmd = _read(f"/proc/{pid}/cmdline").replace("\0", " ")
    if cmd.startswith("ray::"):
        if "RestoreModel" in cmd:
            return "model actor"
        return "other Ray worker (read, decode, write)"
    if "raylet" in cmd or "gcs_server" in cmd or "dashboard" in cmd or "log_monitor" in cmd or "monitor.py" in cmd:
        return "Ray daemons (each)"
    if "default_worker.py" in cmd:
        return "other Ray worker (read, decode, write)"
    return "other"


class PeakRSS(threading.Thread):
    def __init__(self, root: int, interval: float = 0.25):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peak_mb: dict[str, float] = {}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.interval):
            tree, todo = _children(), [self.root]
            while todo:
                pid = todo.pop()
                todo.extend(tree.get(pid, []))
                r = role(pid, self.root)
                self.peak_mb[r] = max(self.peak_mb.get(r, 0.0), _rss_mb(pid))

    def stop(self) -> dict[str, float]:
        self._done.set()
        self.join()
        return {k: round(v, 1) for k, v in sorted(self.peak_mb.items())}
