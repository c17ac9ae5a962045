"""Child processes of the local stack: start detached, find again by marker, stop for good.

Each component runs in its own session (process group) so that `down` can signal the whole
group, including grandchildren such as Triton's Python-backend stubs, even after the group
leader has crashed. Every process also carries the stack's marker in its environment, so a
final sweep of /proc finds anything that escaped its group.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from llm_release.errors import StackError

MARKER_VAR = "LLM_RELEASE_STACK_ID"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Spawned:
    name: str
    pid: int
    log: Path


def spawn(name: str, argv: list[str], *, log: Path, env: dict[str, str], cwd: Path | None = None) -> Spawned:
    """Start `argv` (an argument list, never a shell string) detached, output to `log`.

    Goes through llm_release.stack.detach so the program's parent is init, not us: the stack
    must outlive the command that started it (and Envoy exits when its parent does).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    launcher = [sys.executable, "-m", "llm_release.stack.detach", str(log), "--", *argv]
    out = subprocess.run(launcher, env=env, cwd=cwd, capture_output=True, text=True, check=False)  # noqa: S603
    if out.returncode != 0 or not out.stdout.strip().isdigit():
        raise StackError(f"could not start {name}: {out.stderr.strip() or out.stdout.strip()}")
    return Spawned(name=name, pid=int(out.stdout.strip()), log=log)


def pid_alive(pid: int) -> bool:
    """True when `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def processes_with_marker(stack_id: str, var: str = MARKER_VAR) -> list[int]:
    """Every live process whose environment carries this marker (`var`=`stack_id`)."""
    needle = f"{var}={stack_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
        except OSError:
            continue
        if needle in env and pid_alive(int(entry)):
            found.append(int(entry))
    return found


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


def stop_group(pgid: int, *, grace_s: float = 10.0) -> None:
    """SIGTERM the group, wait up to `grace_s`, then SIGKILL whatever is left."""
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _group_members(pgid):
            return
        _reap_children()
        time.sleep(0.1)
    _signal_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _group_members(pgid) and time.monotonic() < deadline:
        _reap_children()
        time.sleep(0.05)


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _reap_children()


def _reap_children() -> None:
    """Collect exited children of this process so they do not linger as zombies."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def log_tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
