"""A warm Python for rehearsing shell scripts that start many `python3 -m dcgan ...` processes.

Each such process spends 3-5 s of a 2-core CPU importing torch (and torch._dynamo, which the first
optimizer pulls in) before it does anything; a rehearsal of scripts/gpu_check.sh starts eighteen of them.
Here one server process does those imports once, and every command of the script runs in a child forked
from it, with the caller's arguments, working folder, environment, standard streams (passed as file
descriptors), signals (forwarded) and exit status: the command's own code runs as in a fresh process.

    python3 tests/warm_python.py --serve SOCKET          # prints "ready" once the imports are done
                                                         # (run it from the checkout: it imports dcgan)
    python3 tests/warm_python.py -m dcgan ARGS...        # like `python3 -m dcgan ARGS...`
    python3 tests/warm_python.py - ARGS... <script.py    # like `python3 - ARGS...`
    (the client finds the server by $WARM_PYTHON_SOCKET; it imports nothing heavy itself)

Only for tests: a fork shares what the server imported, so an import-time fault of a fresh process is
not what this rehearses (the CLI tests start fresh `python -m dcgan` processes for that).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("warm python: the other side closed the connection")
        data += chunk
    return data


# ---- the client: one command --------------------------------------------------------------------------

def client(argv: list[str]) -> int:
    path = os.environ.get("WARM_PYTHON_SOCKET")
    if not path:
        print("warm_python: set WARM_PYTHON_SOCKET to the server's socket", file=sys.stderr)
        return 2
    request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(path)
        # a `timeout` or Ctrl-C aimed at this process reaches the command; one that comes before the
        # command's pid is known is held until then (SIGKILL cannot be caught: the server sees this
        # connection close and kills the command itself)
        target: dict = {"pid": None, "held": []}

        def forward(sig, _frame):
            if target["pid"] is None:
                target["held"].append(sig)
                return
            try:
                os.kill(target["pid"], sig)
            except ProcessLookupError:  # it has just ended: its status follows
                pass

        for sig in FORWARDED:
            signal.signal(sig, forward)
        socket.send_fds(conn, [struct.pack("!Q", len(request))], [0, 1, 2])
        conn.sendall(request)
        (target["pid"],) = struct.unpack("!q", _recv_exact(conn, 8))
        for sig in target["held"]:
            forward(sig, None)
        (status,) = struct.unpack("!i", _recv_exact(conn, 4))
    return status


# ---- the server: imports once, forks per command ------------------------------------------------------

def _child(request: dict, fds: list[int]) -> None:
    """In the forked child: become the requested process, run it, exit with its status; never returns
    into the server's loop."""
    code = 1
    try:
        code = _run(request, fds)
    finally:
        os._exit(code)


def _run(request: dict, fds: list[int]) -> int:
    import atexit
    import io
    import runpy
    import threading
    import traceback

    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    for sig in FORWARDED:
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
    argv = request["argv"]
    code = 0
    try:
        if argv[:1] == ["-m"] and len(argv) >= 2:
            sys.argv = [argv[1], *argv[2:]]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        elif argv[:1] == ["-"]:
            sys.argv = ["-", *argv[1:]]
            source = sys.stdin.read()
            exec(compile(source, "<stdin>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
        else:
            print(f"warm_python: expected -m MODULE or -, got {argv[:1]}", file=sys.stderr)
            code = 2
    except SystemExit as e:  # sys.exit(None | int | message), as the interpreter reads it
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - as the interpreter would: print it, exit 1
        traceback.print_exc()
        code = 1
    # what a fresh interpreter does at its end: wait for non-daemon threads, run the atexit handlers
    try:
        threading._shutdown()
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        code = code or 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    return code


def _wait(pid: int, conn: socket.socket) -> int:
    """The command's wait status. When the client's connection closes first (the client was killed, e.g.
    by `timeout -k`'s SIGKILL), the command is killed too, as the process the client stands for would be."""
    import select

    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        readable, _, _ = select.select([conn], [], [], 0.05)
        if readable and not conn.recv(1, socket.MSG_PEEK):  # end of file: the client is gone
            os.kill(pid, signal.SIGKILL)
            return os.waitpid(pid, 0)[1]


def serve(path: str) -> None:
    import torch  # the imports every command shares

    import dcgan.cli  # noqa: F401
    import dcgan.training.trainer  # noqa: F401

    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])  # pulls in torch._dynamo once
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen()
        print("ready", flush=True)
        while True:  # one command at a time, as the scripts run them
            conn, _ = server.accept()
            with conn:
                msg, fds, _flags, _addr = socket.recv_fds(conn, 8, 3)
                (size,) = struct.unpack("!Q", msg)
                request = json.loads(_recv_exact(conn, size))
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    conn.close()
                    server.close()
                    _child(request, fds)
                for fd in fds:
                    os.close(fd)
                try:
                    conn.sendall(struct.pack("!q", pid))
                except OSError:
                    pass
                status = _wait(pid, conn)
                code = os.waitstatus_to_exitcode(status)
                try:
                    conn.sendall(struct.pack("!i", 128 - code if code < 0 else code))  # killed by signal N: 128+N
                except OSError:
                    pass


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2])
    else:
        sys.exit(client(sys.argv[1:]))
