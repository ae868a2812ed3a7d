"""Real PostgreSQL and Redis servers for tests: a fresh PostgreSQL database per test (created and
dropped here), and a private `redis-server` on a unix socket (tests run in a network namespace where
the machine's TCP ports are out of reach). Each skips with its reason when the server is absent."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest

# Tried in order (PARLEY_TEST_POSTGRES first when set). Inside scripts/loopback-only's network
# namespace the TCP port of the machine's server is out of reach, its unix socket is not.
POSTGRES_CANDIDATES = [u for u in (os.environ.get("PARLEY_TEST_POSTGRES"),
                                   "postgresql://postgres@127.0.0.1:5432/test",
                                   "postgresql://postgres@/test?host=/var/run/postgresql") if u]


def with_database(url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=name).render_as_string(hide_password=False)


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped afterwards; skips when none is reachable."""
    asyncpg = pytest.importorskip("asyncpg", reason="asyncpg is not installed")
    admin, tried, url = None, [], ""
    for url in POSTGRES_CANDIDATES:
        try:
            admin = await asyncpg.connect(url, timeout=3)
            break
        except (OSError, asyncpg.PostgresError) as exc:
            tried.append(f"{url}: {type(exc).__name__}: {exc}")
    if admin is None:
        pytest.skip("no PostgreSQL server reachable (" + "; ".join(tried) + ")")
    name = f"parley_test_{secrets.token_hex(4)}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(url, name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@contextmanager
def redis_server() -> Iterator[str]:
    """A private redis-server on a unix socket, no persistence; yields its unix:// URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    # A short path: unix socket paths are limited to ~100 bytes.
    folder = Path(tempfile.mkdtemp(prefix="parley-redis-"))
    sock = folder / "redis.sock"
    proc = subprocess.Popen([binary, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
                             "--save", "", "--appendonly", "no", "--dir", str(folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        asyncio.run(_wait_redis(f"unix://{sock}", proc))
        yield f"unix://{sock}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


async def _wait_redis(url: str, proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        client = aioredis.Redis.from_url(url)
        try:
            if await client.ping():
                return
        except (RedisError, OSError):
            if asyncio.get_running_loop().time() > deadline:
                raise
        finally:
            await client.aclose()
        await asyncio.sleep(0.05)
