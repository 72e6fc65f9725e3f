"""The worker processes of ``paycore serve --workers N``, seen from ``/proc`` (Linux):
which processes they are, and which of them holds the server end of a TCP connection, so
that a run can wait for every worker and a test can tell which one answered."""

from __future__ import annotations

import contextlib
import http.client
import os
import time
from pathlib import Path

__all__ = ["connection_owner", "wait_workers", "worker_pids"]


def worker_pids(parent: int) -> list[int]:
    """The worker processes uvicorn's supervisor ``parent`` spawned (a multiprocessing
    resource tracker, if any, left out), in pid order."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def _server_inode(server_port: int, client_port: int) -> int | None:
    """The inode of the server's end of the IPv4 connection from ``client_port``."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1].split(":")[1], fields[2].split(":")[1]
        if int(local, 16) == server_port and int(remote, 16) == client_port:
            return int(fields[9])
    return None


def connection_owner(workers: list[int], conn: http.client.HTTPConnection) -> int | None:
    """Which of ``workers`` holds the server end of ``conn`` (connected, to 127.0.0.1)."""
    if conn.sock is None:
        return None
    inode = _server_inode(conn.sock.getpeername()[1], conn.sock.getsockname()[1])
    owners = [pid for pid in workers if inode is not None and inode in _socket_inodes(pid)]
    return owners[0] if len(owners) == 1 else None


def wait_workers(parent: int, n: int, port: int, within: float = 60.0) -> list[int]:
    """The ``n`` workers of ``parent`` once each has answered ``GET /healthz`` on
    ``port``; RuntimeError when they do not within ``within`` seconds."""
    deadline = time.monotonic() + within
    answered: set[int] = set()
    workers: list[int] = []
    while time.monotonic() < deadline:
        workers = worker_pids(parent)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/healthz")
            if conn.getresponse().read() is not None:
                owner = connection_owner(workers, conn)
                if owner is not None:
                    answered.add(owner)
        except OSError:
            time.sleep(0.1)
        finally:
            conn.close()
        if len(workers) == n and answered >= set(workers):
            return workers
        time.sleep(0.02)
    raise RuntimeError(f"{len(answered)} of {n} paycore serve workers answered in {within:g}s")
