"""Shared mode's cost: rate-limit decisions per second through Redis, and the latency it adds.

    .venv/bin/python benchmarks/shared_limits.py [--seconds 5] [--concurrency 32] [--requests 300]

Starts a private redis-server on a unix socket and uses the machine's PostgreSQL (its unix socket
/var/run/postgresql, or PARLEY_BENCH_POSTGRES), in a database of its own, dropped at the end.

* decisions/s: three processes, each `--concurrency` tasks calling `RedisLimiter.acquire` (the
  `limits` moving window: one Lua script per decision) for `--seconds`, over 100 users (some
  admitted, most refused, as in a burst);
* added latency: `POST /api/session` on one `parley serve` in three set-ups, p50/p95 of the server's
  own time (Server-Timing `app`) and of the round trip: one process (SQLite, limits in memory),
  PostgreSQL without Redis, and shared mode (PostgreSQL + Redis).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

import httpx

from machine import describe, percentile
from parley.util.serving import free_port

POSTGRES = os.environ.get("PARLEY_BENCH_POSTGRES", "postgresql://postgres@/test?host=/var/run/postgresql")


def _redis(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    sock = folder / "redis.sock"
    proc = subprocess.Popen([binary, "--port", "0", "--unixsocket", str(sock), "--save", "", "--appendonly", "no",
                             "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not sock.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("redis-server did not start")
        time.sleep(0.05)
    return proc, f"unix://{sock}"


# -- decisions per second ----------------------------------------------------------------------------


def _worker(url: str, seconds: float, concurrency: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    from parley.server.shared import RedisLimiter, SharedHub

    async def run() -> tuple[int, int]:
        hub = SharedHub(url, prefix="bench")
        await hub.start()
        limiter = RedisLimiter(hub, "calls", 20.0, 5)
        counts = [0, 0]
        stop = time.perf_counter() + seconds

        async def loop(i: int) -> None:
            n = i
            while time.perf_counter() < stop:
                wait = await limiter.acquire(f"user{n % 100}")
                counts[wait is None] += 1
                n += concurrency

        await asyncio.gather(*(loop(i) for i in range(concurrency)))
        await hub.close()
        return counts[1], counts[0]

    out.put(asyncio.run(run()))


def decisions(url: str, seconds: float, concurrency: int) -> None:
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_worker, args=(url, seconds, concurrency, out)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [out.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join()
    total = sum(a + r for a, r in results)
    print(f"rate-limit decisions through Redis, 3 processes x {concurrency} tasks, {seconds:.0f} s:")
    for i, (a, r) in enumerate(results):
        print(f"  process {i}: {(a + r) / seconds:9.0f} decisions/s ({a} admitted, {r} refused)")
    print(f"  total:     {total / seconds:9.0f} decisions/s")


# -- added latency on /api/session ------------------------------------------------------------------


def _serve(data_dir: Path, port: int, extra: dict[str, str]) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PARLEY_"))}
    env.update({"PARLEY_DATA_DIR": str(data_dir), "PARLEY_UPSTREAM": "local", "PARLEY_LOG_LEVEL": "warning",
                "PARLEY_ENGINE_ICE_HOSTS": json.dumps(["127.0.0.1"]), "PARLEY_ENGINE_WARM_UP": "false",
                "PARLEY_RATE_LIMIT_PER_MINUTE": "10000000", "PARLEY_RATE_LIMIT_BURST": "1000000",
                "PARLEY_MAX_CONCURRENT_CALLS": "1000000", **extra})
    cli = Path(sys.executable).parent / "parley"
    command = [str(cli)] if cli.exists() else [sys.executable, "-c", "from parley.cli import app; app()"]
    return subprocess.Popen([*command, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env, cwd=data_dir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _latency(url: str, n: int) -> tuple[list[float], list[float]]:
    app_ms: list[float] = []
    through: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        deadline = time.monotonic() + 120
        while True:
            try:
                if (await c.get("/healthz")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} did not start")
            await asyncio.sleep(0.2)
        await c.get("/api/me")
        for i in range(n + 20):
            t = time.perf_counter()
            r = await c.post("/api/session", json={"persona": "negotiator/sarah"})
            total = (time.perf_counter() - t) * 1000
            r.raise_for_status()
            if i >= 20:  # warm-up excluded
                parts = dict(p.strip().split(";dur=") for p in r.headers["server-timing"].split(","))
                app_ms.append(float(parts["app"]))
                through.append(total)
            await c.post(f"/api/calls/{r.json()['call_id']}/hangup")
    return app_ms, through


async def _database(admin_url: str) -> tuple[str, str]:
    import asyncpg
    from sqlalchemy.engine import make_url

    name = f"parley_bench_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return name, make_url(admin_url).set(database=name).render_as_string(hide_password=False)


async def _drop(admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


def latency(folder: Path, redis_url: str, n: int) -> None:
    name, database = asyncio.run(_database(POSTGRES))
    setups = {
        "one process (SQLite, limits in memory)": {},
        "PostgreSQL, no Redis": {"PARLEY_DATABASE_URL": database},
        "shared mode (PostgreSQL + Redis)": {"PARLEY_DATABASE_URL": database, "PARLEY_REDIS_URL": redis_url,
                                             "PARLEY_SESSION_SECRET": secrets.token_urlsafe(24),
                                             "PARLEY_RECORDINGS_DIR": str(folder / "recordings")},
    }
    medians: dict[str, float] = {}
    try:
        print(f"POST /api/session, {n} sequential requests per set-up (server's own time = Server-Timing app):")
        for i, (label, extra) in enumerate(setups.items()):
            data_dir = folder / f"s{i}"
            data_dir.mkdir()
            port = free_port()
            proc = _serve(data_dir, port, extra)
            try:
                app_ms, through = asyncio.run(_latency(f"http://127.0.0.1:{port}", n))
            finally:
                proc.terminate()
                proc.wait(20)
            medians[label] = percentile(app_ms, 50)
            print(f"  {label:<40} app p50 {percentile(app_ms, 50):7.2f} ms  p95 {percentile(app_ms, 95):7.2f} ms"
                  f"   round trip p50 {percentile(through, 50):7.2f} ms  p95 {percentile(through, 95):7.2f} ms")
    finally:
        asyncio.run(_drop(POSTGRES, name))
    first, last = medians["one process (SQLite, limits in memory)"], medians["shared mode (PostgreSQL + Redis)"]
    print(f"  added by shared mode (app p50, shared - one process): {last - first:+.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    print(describe())
    folder = Path(tempfile.mkdtemp(prefix="parley-bench-"))
    redis_proc, redis_url = _redis(folder)
    try:
        decisions(redis_url, args.seconds, args.concurrency)
        latency(folder, redis_url, args.requests)
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
