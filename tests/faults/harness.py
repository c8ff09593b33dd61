"""Real processes for the fault suite, and the faults done to them.

- `DevServer`: `temporal server start-dev` on a database file and a port picked at run
  time; `kill()` is SIGKILL, `start()` again reuses the same file and port.
- `WorkerProcess`: `python worker.py` as an operator runs it (configured by the
  environment), one log file per incarnation; `kill9()` and `start()` again.
- `PgProxy`: an asyncio TCP proxy in front of PostgreSQL; `outage(seconds)` cuts every
  connection and closes every new one at once for that long.
- `until(...)`: every wait polls a condition to a deadline and says what it waited for.

Every process is started in a session of its own and is killed by its pid in the test's
`finally` (`stop()`), never by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, TypeVar

from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(
    check: Callable[[], Awaitable[T | None]], *, timeout: float, what: str, interval: float = 0.2
) -> T:
    """Poll `check` until it answers something other than None/False; fail after
    `timeout` seconds naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"({path} unreadable)"
    return "\n".join(text.splitlines()[-lines:])


def _popen(cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - handed to the child process
    try:
        return subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of the test run reaches only pytest
        )
    finally:
        log.close()


def _kill(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=30)


class DevServer:
    """The Temporal dev server on `db_file`, always on the same port."""

    def __init__(self, binary: str, db_file: Path, log_dir: Path) -> None:
        self.binary = binary
        self.db_file = db_file
        self.log_path = log_dir / "temporal.log"
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "the server is already running"
        self.starts += 1
        self.proc = _popen(
            [
                self.binary, "server", "start-dev",
                "--db-filename", str(self.db_file),
                "--ip", "127.0.0.1",
                "--port", str(self.port),
                "--headless",
                "--log-level", "error",
            ],
            self.log_path,
        )  # fmt: skip

    async def ready(self, timeout: float = 60) -> Client:
        """A client once the server answers for the default namespace."""

        async def answers() -> Client | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"the dev server exited {self.proc.returncode}:\n{tail(self.log_path)}")
            try:
                client = await Client.connect(self.address, data_converter=pydantic_data_converter)
                await client.workflow_service.describe_namespace(
                    DescribeNamespaceRequest(namespace="default")
                )
                return client
            except Exception:  # not up yet: refused, or the namespace not yet loaded
                return None

        return await until(answers, timeout=timeout, what=f"the dev server on {self.address}", interval=0.3)

    def kill(self) -> None:
        """SIGKILL: no goodbye to clients, workers or its database file."""
        _kill(self.proc)

    def stop(self) -> None:
        _kill(self.proc)


class WorkerProcess:
    """`python worker.py` with DATABASE_URL / TEMPORAL_ADDRESS / TEMPORAL_TASK_QUEUE."""

    POLLING = "worker polling task queue"

    def __init__(
        self,
        log_dir: Path,
        *,
        address: str,
        task_queue: str,
        database_url: str,
        argv: tuple[str, ...] = ("worker.py",),
        name: str = "worker",
    ) -> None:
        self.log_dir = log_dir
        self.argv = argv
        self.name = name
        inherited = {
            k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_") and k != "DATABASE_URL"
        }
        self.env = {
            **inherited,
            "TEMPORAL_ADDRESS": address,
            "TEMPORAL_TASK_QUEUE": task_queue,
            "DATABASE_URL": database_url,
            "PYTHONUNBUFFERED": "1",
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = log_dir / f"{name}-0.log"
        self.starts = 0
        self.kills = 0

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "a worker is already running"
        self.starts += 1
        self.log_path = self.log_dir / f"{self.name}-{self.starts}.log"
        self.proc = _popen([sys.executable, *self.argv], self.log_path, self.env)

    async def polling(self, timeout: float = 90) -> None:
        """Until this incarnation logs that it polls its task queue."""

        async def polls() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"the worker exited {self.proc.returncode}:\n{tail(self.log_path)}")
            try:
                return self.POLLING in self.log_path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                return False

        await until(polls, timeout=timeout, what=f"worker #{self.starts} to poll ({self.log_path})")

    def kill9(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, "no worker to kill"
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.kills += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 45) -> int | None:
        """SIGTERM (in-flight activities finish), SIGKILL after `grace` seconds."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _kill(self.proc)
        return self.proc.returncode


class PgProxy:
    """127.0.0.1:<port> → PostgreSQL. During an outage every open connection is cut and
    every new one is closed as soon as it is accepted: to the worker, the database is
    gone (psycopg: 'server closed the connection unexpectedly' / 'connection reset')."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.down = False
        self.server: asyncio.Server | None = None
        self.live: set[asyncio.StreamWriter] = set()
        self.refused = 0  # connections closed during outages
        self.served = 0  # connections proxied

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self.served += 1
        self.live |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self.live.discard(w)
                w.transport.abort()

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.transport.abort()

    def cut(self) -> None:
        self.down = True
        for w in list(self.live):
            w.transport.abort()
        self.live.clear()

    def restore(self) -> None:
        self.down = False

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)
