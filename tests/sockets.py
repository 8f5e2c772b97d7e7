"""The TCP sockets a process tree listens on, read from ``/proc`` (Linux): which address, port and process.

``/proc/net/tcp`` and ``/proc/net/tcp6`` list every socket of the network namespace with its inode;
``/proc/<pid>/fd`` links each of a process's sockets to its inode. Joining the two over a process and all
its descendants gives what that tree listens on, whoever else runs on the machine.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

_LISTEN = "0A"  # TCP_LISTEN in the kernel's state numbering


@dataclass(frozen=True)
class Listener:
    """One listening socket: ``host`` as the kernel reports it (``0.0.0.0`` or ``::`` for every address)."""

    host: str
    port: int
    pid: int
    process: str

    @property
    def loopback(self) -> bool:
        ip = ipaddress.ip_address(self.host)
        mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1, a dual-stack socket's IPv4 address
        return ip.is_loopback or (mapped is not None and mapped.is_loopback)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port} ({self.process}, pid {self.pid})"


def descendants(root: int) -> set[int]:
    """``root`` and every living process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:  # it ended while we looked
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name in parentheses may hold spaces
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree.add(pid)
            todo.extend(children.get(pid, ()))
    return tree


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _process_name(pid: int) -> str:
    """The command line, shortened to what tells Ray's processes apart (``gcs_server``, ``raylet``,
    ``.../dashboard/agent.py``, ``ray::IDLE``, ...)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return "?"
    if not argv:
        return "?"
    if os.path.basename(argv[0]).startswith("python") and len(argv) > 1:
        script = next((a for a in argv[1:] if not a.startswith("-")), argv[1])
        return "/".join(script.split("/")[-3:])
    return os.path.basename(argv[0]) if "/" in argv[0] else argv[0]


def _decode(hex_addr: str, family: int) -> str:
    raw = bytes.fromhex(hex_addr)
    # The kernel prints the address as 32-bit words in host order (little-endian here).
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(family, words)


def _table(path: str, family: int) -> dict[int, tuple[str, int]]:
    """Inode -> (host, port) of the listening sockets of one ``/proc/net`` table."""
    found = {}
    try:
        with open(path) as f:
            lines = f.read().splitlines()[1:]
    except FileNotFoundError:  # no IPv6 in this kernel
        return found
    for line in lines:
        fields = line.split()
        if fields[3] != _LISTEN:
            continue
        hex_host, hex_port = fields[1].split(":")
        found[int(fields[9])] = (_decode(hex_host, family), int(hex_port, 16))
    return found


def listening_sockets(root: int) -> list[Listener]:
    """Every TCP socket (IPv4 and IPv6) that ``root`` or a process below it listens on."""
    by_inode = {**_table("/proc/net/tcp", socket.AF_INET), **_table("/proc/net/tcp6", socket.AF_INET6)}
    listeners = []
    for pid in descendants(root):
        for inode in _socket_inodes(pid) & by_inode.keys():
            host, port = by_inode[inode]
            listeners.append(Listener(host, port, pid, _process_name(pid)))
    return sorted(listeners, key=lambda x: (x.port, x.host, x.pid))


@contextmanager
def watching(*roots: int, every: float = 0.25) -> Iterator[set[Listener]]:
    """The listeners of the process trees under ``roots`` seen while the block runs, sampled every ``every``
    seconds by a thread (and once more at the end): servers that come and go with a run are caught too."""
    seen: set[Listener] = set()
    done = threading.Event()

    def sample() -> None:
        while True:
            for root in roots:
                seen.update(listening_sockets(root))
            if done.wait(every):
                return

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join()
        for root in roots:
            seen.update(listening_sockets(root))
