"""N real `parley serve` processes on loopback ports sharing one PostgreSQL and one Redis (shared
mode), each with its own data dir; and a standalone `parley engine` as their shared upstream."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from parley.util.serving import free_port

SECRET = "a-shared-test-secret-0123456789"


def command() -> list[str]:
    cli = Path(sys.executable).parent / "parley"
    return [str(cli)] if cli.exists() else [sys.executable, "-c", "from parley.cli import app; app()"]


def serve_env(data_dir: Path, database: str, redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PARLEY_"))}
    env.update({"PARLEY_DATA_DIR": str(data_dir), "PARLEY_UPSTREAM": "local", "HF_HUB_OFFLINE": "1",
                "PARLEY_ENGINE_ICE_HOSTS": json.dumps(["127.0.0.1"]), "PARLEY_ENGINE_WARM_UP": "false",
                "PARLEY_DATABASE_URL": database, "PARLEY_REDIS_URL": redis_url,
                "PARLEY_SESSION_SECRET": SECRET, "PARLEY_RECORDINGS_DIR": str(data_dir.parent / "recordings"),
                "PARLEY_LOG_LEVEL": "warning", **extra})
    return env


class Cluster:
    def __init__(self, tmp_path: Path, database: str, redis_url: str, n: int = 3, **extra: str) -> None:
        self.tmp_path, self.database, self.redis_url, self.extra = tmp_path, database, redis_url, extra
        self.procs: list[subprocess.Popen[bytes]] = []
        self.urls: list[str] = []
        self.logs: list[Path] = []  # each process's stderr (a file: a pipe nobody reads fills and blocks it)
        for _ in range(n):
            self.spawn()

    def spawn(self) -> int:
        """Start one more process (its own data dir: nothing shared through it); its index."""
        i = len(self.procs)
        data_dir = self.tmp_path / f"p{i}"
        data_dir.mkdir()
        port = free_port()
        self.urls.append(f"http://127.0.0.1:{port}")
        self.logs.append(data_dir / "stderr.log")
        with self.logs[-1].open("wb") as log:
            self.procs.append(subprocess.Popen(
                [*command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
                env=serve_env(data_dir, self.database, self.redis_url, **self.extra), cwd=data_dir,
                stdout=subprocess.DEVNULL, stderr=log))
        return i

    def tail(self, i: int) -> str:
        """The end of process i's stderr (for an assertion's message)."""
        return _tail(self.logs[i])

    def by_pid(self, pid: int) -> int:
        return next(i for i, p in enumerate(self.procs) if p.pid == pid)

    async def wait_healthy(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as c:
            for url, proc, log in zip(self.urls, self.procs, self.logs, strict=True):
                if proc.returncode is not None:
                    continue  # (one the test killed)
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError(f"parley serve exited: {_tail(log)}")
                    try:
                        if (await c.get(f"{url}/healthz")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{url} did not become healthy")
                    await asyncio.sleep(0.1)

    def stop(self) -> None:
        stop_all(self.procs)


def _tail(log: Path, size: int = 4000) -> str:
    return log.read_text(errors="replace")[-size:] if log.exists() else ""


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class EngineProcess:
    """A standalone `parley engine` on a loopback port: an upstream every server process shares
    (`extra`: more environment, e.g. PARLEY_ENGINE_REDIS_URL to join a pool)."""

    def __init__(self, data_dir: Path, **extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PARLEY_"))}
        env.update({"HF_HUB_OFFLINE": "1", "PARLEY_ENGINE_ICE_HOSTS": json.dumps(["127.0.0.1"]),
                    "PARLEY_ENGINE_WARM_UP": "false", **extra})
        if "PARLEY_ENGINE_REDIS_URL" in extra:
            env.setdefault("PARLEY_ENGINE_POOL_URL", self.url)  # where servers reach it
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = data_dir / "stderr.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([*command(), "engine", "--host", "127.0.0.1", "--port", str(self.port),
                                          "--log-level", "warning"], env=env, cwd=data_dir,
                                         stdout=subprocess.DEVNULL, stderr=log)

    async def wait_healthy(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as c:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"parley engine exited: {_tail(self.log)}")
                try:
                    if (await c.get(f"{self.url}/realtime/healthz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("parley engine did not become healthy")
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        stop_all([self.proc])
