"""Start a program fully detached from its caller: `python -m llm_release.stack.detach LOG -- ARGV...`.

Prints the started program's pid. The program runs in a new session whose parent is init, not
the caller: Envoy stops itself when the process that started it exits, and the stack has to
outlive the `llm-release stack up` command that started it.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m llm_release.stack.detach LOG -- PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    log, program = argv[0], argv[2:]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: new session, then exec the program with output to the log
        os.close(read_end)
        os.setsid()
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.write(write_end, str(os.getpid()).encode())
        os.close(write_end)
        try:
            os.execvp(program[0], program)
        except OSError as exc:
            os.write(2, f"cannot start {program[0]}: {exc}\n".encode())
            os._exit(127)
    os.close(write_end)
    child = os.read(read_end, 32).decode()
    print(child)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
