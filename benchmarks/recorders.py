"""How many sideband recorders one `parley serve` process holds: event-to-commit latency by load.

    scripts/loopback-only .venv/bin/python benchmarks/recorders.py [--database sqlite|postgresql]
        [--levels 100,250,500,1000,1500] [--window 30] [--rate 40]

Three processes: the replaying upstream (benchmarks/replayer.py: recorded sideband streams of real
calls, benchmarks/data/calls, at real-time pace), ONE `parley serve` pointed at it
(PARLEY_UPSTREAM_URL; its limits raised for the benchmark user), and this driver. For each level
the driver adds server-held calls (POST /api/calls with a recorded aiortc offer, `--rate` a second)
until that many are live, waits `--settle` s, then measures for `--window` s:

* event-to-commit: the replayer stamps the send time (unix clock, same machine) of each event that
  completes an item (the item's words go on record); this driver polls the database every
  `--poll` s for transcript rows no longer pending and takes the poll's start as the commit seen.
  So the figure is an upper bound: it includes up to one poll interval (and the poll query's time);
  `w.p95`: p95 of the row's own completed_at (the server's clock as it wrote the row, before the
  commit) minus the send time: the part of the latency spent before the write;
* the server process's CPU (utime + stime from /proc, % of one core), how long its threads were
  runnable but waiting for a core (`wait %`, /proc/PID/task/*/schedstat: the machine is shared), RSS;
* the store's group commit: writes per transaction (`w/tx`) and a transaction's mean time (`tx ms`);
* errors: calls refused, sidebands the server dropped, items sent and never committed (within 10 s),
  `parley_recorder_errors_total`, and how late the replayer itself sent (its own lag, p99).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

import httpx

from machine import describe, percentile
from parley.util.serving import free_port

DATA = Path(__file__).parent / "data"
TICKS = os.sysconf("SC_CLK_TCK")
# the store's group commit: writes, transactions, seconds committing
COMMIT_METRICS = ("parley_db_writes_total", "parley_db_commit_seconds_count", "parley_db_commit_seconds_sum")
QUERY = ("select c.upstream_call_id, t.item_id, t.completed_at from transcript_items t join calls c on c.id = t.call_id "
         "where t.status <> 'pending' and t.completed_at >= {since}")


def _raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _waited_seconds(pid: int) -> float:
    """Time the process's threads spent runnable but waiting for a core (the machine is shared)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return total / 1e9


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class Poller:
    """Rows whose words are on record, first seen when."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.seen: dict[tuple[str, str], float] = {}
        self.stamped: dict[tuple[str, str], float] = {}  # the row's completed_at: the server's clock at the write
        self.polls = 0
        self.query_ms: list[float] = []

    async def run(self, interval: float) -> None:
        if self.database.startswith("sqlite"):
            path = self.database.split(":///", 1)[1]
            conn = sqlite3.connect(path, check_same_thread=False)

            def poll() -> list[tuple[str, str, Any]]:
                since = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=15)).strftime("%Y-%m-%d %H:%M:%S.%f")
                return conn.execute(QUERY.format(since="?"), (since,)).fetchall()

            async def rows() -> list[tuple[str, str, Any]]:
                return await asyncio.to_thread(poll)
        else:
            import asyncpg

            pg = await asyncpg.connect(self.database.replace("postgresql+asyncpg://", "postgresql://"))

            async def rows() -> list[tuple[str, str, Any]]:
                since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=15)
                return [(r[0], r[1], r[2]) for r in await pg.fetch(QUERY.format(since="$1"), since)]
        while True:
            began = time.time()
            t = time.perf_counter()
            try:
                found = await rows()
            except Exception as exc:  # (the schema not there yet)
                print(f"  poll failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                found = []
            self.query_ms.append((time.perf_counter() - t) * 1000)
            self.polls += 1
            for call, item, stamp in found:
                if (call, item) not in self.seen:
                    self.seen[(call, item)] = began
                    if isinstance(stamp, str):  # SQLite: naive UTC text
                        stamp = dt.datetime.fromisoformat(stamp).replace(tzinfo=dt.UTC)
                    self.stamped[(call, item)] = stamp.timestamp()
            await asyncio.sleep(max(0.0, interval - (time.time() - began)))


class Marks:
    """What the replayer sent (items completed), fetched from it."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.sent: dict[tuple[str, str], float] = {}
        self.next = 0
        self.counts: dict[str, int] = {}
        self.lag_p99 = 0.0

    async def fetch(self) -> None:
        body = (await self.client.get(f"/marks?since={self.next}")).json()
        for call, item, at in body["marks"]:
            self.sent[(call, item)] = at
        self.next, self.counts, self.lag_p99 = body["next"], body["counts"], body["lag_p99"]

    async def run(self) -> None:
        while True:
            await self.fetch()
            await asyncio.sleep(0.5)


def server_env(data_dir: Path, database: str, upstream: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PARLEY_"))}
    env.update({
        "PARLEY_DATA_DIR": str(data_dir), "PARLEY_DATABASE_URL": database, "PARLEY_UPSTREAM": "url",
        "PARLEY_UPSTREAM_URL": upstream, "PARLEY_LOG_LEVEL": "warning", "HF_HUB_OFFLINE": "1",
        # the benchmark user's limits out of the way
        "PARLEY_RATE_LIMIT_PER_MINUTE": "1000000", "PARLEY_RATE_LIMIT_BURST": "100000",
        "PARLEY_MAX_CONCURRENT_CALLS": "100000", "PARLEY_MAX_CALL_SECONDS": "86400",
        "PARLEY_MAX_CALL_COST_USD": "1000000", "PARLEY_DAILY_COST_CAP_USD": "1000000000",
    })
    return env


def spawn(data_dir: Path, database: str, rport: int, sport: int) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """The replayer and the server, each with as many open files as the machine allows."""
    # Their logs to files: a pipe nobody reads fills up and stops the process at its next log line.
    replayer = subprocess.Popen([sys.executable, str(Path(__file__).parent / "replayer.py"), "--port", str(rport)],
                                stderr=(data_dir / "replayer.log").open("wb"), preexec_fn=_raise_nofile)
    cli = Path(sys.executable).parent / "parley"
    server = subprocess.Popen([str(cli), "serve", "--host", "127.0.0.1", "--port", str(sport)],
                              env=server_env(data_dir, database, f"http://127.0.0.1:{rport}/v1"), cwd=data_dir,
                              stdout=subprocess.DEVNULL, stderr=(data_dir / "server.log").open("wb"),
                              preexec_fn=_raise_nofile)
    return replayer, server


def log_summary(path: Path) -> str:
    """The log's warnings and errors, counted by message (call ids taken out), and its last lines."""
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    counts: dict[str, int] = {}
    for line in lines:
        if " WARNING " in line or " ERROR " in line:
            key = re.sub(r"\b(call|rtc|item|resp)_[A-Za-z0-9]+", r"\1_*", line.split(" ", 2)[-1])[:160]
            counts[key] = counts.get(key, 0) + 1
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:8]
    return "\n".join([f"{path.name}: {len(lines)} lines", *(f"  {n:>6} x {k}" for k, v in top for n in [v]),
                      *(["  last lines:", *("    " + x[:300] for x in lines[-15:])] if lines else [])])


async def wait_ok(client: httpx.AsyncClient, url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"{url}: the process exited (status {proc.returncode}); see its log")
        try:
            if (await client.get(url, timeout=2)).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit(f"{url} did not start")


async def metric(client: httpx.AsyncClient, name: str) -> float:
    text = (await client.get("/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def run(database: str, levels: list[int], window: float, settle: float, rate: float, poll: float) -> None:
    offer = (DATA / "offer.sdp").read_text()
    rport, sport = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        if database == "sqlite":
            database = f"sqlite+aiosqlite:///{data_dir / 'parley.db'}"
        replayer, server = spawn(data_dir, database, rport, sport)
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with AsyncExitStack() as stack:
            api = await stack.enter_async_context(httpx.AsyncClient(base_url=f"http://127.0.0.1:{sport}", timeout=120,
                                                                    limits=limits))
            rep = await stack.enter_async_context(httpx.AsyncClient(base_url=f"http://127.0.0.1:{rport}", timeout=30))
            tasks: list[asyncio.Task[Any]] = []
            try:
                await wait_ok(rep, f"http://127.0.0.1:{rport}/marks?since=0", replayer)
                await wait_ok(api, f"http://127.0.0.1:{sport}/healthz", server)
                await api.get("/api/me")  # the benchmark user's cookie
                poller, marks = Poller(database), Marks(rep)
                tasks = [asyncio.create_task(poller.run(poll)), asyncio.create_task(marks.run())]
                print(f"machine: {describe()}")
                print(f"database: {database.split('://')[0]}; one `parley serve` process (pid {server.pid}); "
                      f"poll every {poll * 1000:.0f} ms; window {window:g} s after {settle:g} s settling")
                print(f"{'calls':>6} {'refused':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'w.p95':>6} {'items':>6} "
                      f"{'missing':>7} {'CPU %':>6} {'wait %':>6} {'RSS MB':>7} {'ev/s':>6} {'dropped':>7} {'rec.err':>7} "
                      f"{'lag99':>6} {'w/tx':>5} {'tx ms':>5} {'load':>14}")
                live, refused = 0, 0
                sem = asyncio.Semaphore(32)

                async def start_call() -> bool:
                    async with sem:
                        try:
                            r = await api.post("/api/calls", json={"sdp": offer, "persona": "negotiator/sarah"})
                        except httpx.HTTPError as exc:
                            print(f"  POST /api/calls: {type(exc).__name__}", file=sys.stderr)
                            return False
                        if r.status_code != 201:
                            print(f"  POST /api/calls: {r.status_code} {r.text[:200]}", file=sys.stderr)
                        return r.status_code == 201

                for level in levels:
                    starting = []
                    for _ in range(level - live):
                        starting.append(asyncio.create_task(start_call()))
                        await asyncio.sleep(1 / rate)
                    results = await asyncio.gather(*starting)
                    live += sum(results)
                    refused += len(results) - sum(results)
                    await asyncio.sleep(settle)
                    await marks.fetch()
                    events0, dropped0 = marks.counts["events"], marks.counts["dropped_by_server"]
                    errors0 = await metric(api, "parley_recorder_errors_total")
                    commits0 = [await metric(api, m) for m in COMMIT_METRICS]
                    cpu0, t0, wall0 = _cpu_seconds(server.pid), time.time(), time.monotonic()
                    waited0 = _waited_seconds(server.pid)
                    await asyncio.sleep(window)
                    cpu = (_cpu_seconds(server.pid) - cpu0) / (time.monotonic() - wall0) * 100
                    waited = (_waited_seconds(server.pid) - waited0) / (time.monotonic() - wall0) * 100
                    t1 = time.time()
                    await asyncio.sleep(min(10.0, window))  # for late commits
                    await marks.fetch()
                    rate_ev = (marks.counts["events"] - events0) / (time.monotonic() - wall0)
                    sent = {k: v for k, v in marks.sent.items() if t0 <= v < t1}
                    latencies = [(poller.seen[k] - v) * 1000 for k, v in sent.items() if k in poller.seen]
                    missing = len(sent) - len(latencies)
                    # the part before the write (in the server: its loop, the call's earlier events)
                    before = [(poller.stamped[k] - v) * 1000 for k, v in sent.items() if k in poller.stamped]
                    errors = await metric(api, "parley_recorder_errors_total") - errors0
                    writes, batches, commit_s = [await metric(api, m) - v0 for m, v0 in zip(COMMIT_METRICS, commits0,
                                                                                             strict=True)]
                    print(f"{live:>6} {refused:>7} {percentile(latencies, 50):>8.0f} {percentile(latencies, 95):>8.0f} "
                          f"{percentile(latencies, 99):>8.0f} {percentile(before, 95):>6.0f} {len(latencies):>6} {missing:>7} {cpu:>6.0f} {waited:>6.0f} "
                          f"{_rss_mb(server.pid):>7.0f} {rate_ev:>6.0f} "
                          f"{marks.counts['dropped_by_server'] - dropped0:>7} {errors:>7.0f} "
                          f"{marks.lag_p99 * 1000:>6.0f} {writes / max(batches, 1):>5.1f} "
                          f"{commit_s / max(batches, 1) * 1000:>5.1f} {_loadavg():>14}", flush=True)
                    if latencies and percentile(latencies, 95) > 10_000:
                        print("  (p95 over 10 s: stopping the ramp)")
                        break
                print(f"poll query: p50 {percentile(poller.query_ms, 50):.1f} ms, p95 {percentile(poller.query_ms, 95):.1f} ms "
                      f"over {poller.polls} polls; replayer: {json.dumps(marks.counts)}")
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                for proc in (server, replayer):  # the server first: it hangs its calls up at the replayer
                    proc.terminate()
                    try:
                        proc.wait(120)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                print(log_summary(data_dir / "server.log"))
                kept = Path(tempfile.gettempdir()) / "parley-recorders-server.log"
                shutil.copyfile(data_dir / "server.log", kept)
                print(f"(the server's log: {kept})")
                print(log_summary(data_dir / "replayer.log"))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--levels", default="100,250,500,1000,1500")
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=40.0, help="new calls a second while ramping")
    parser.add_argument("--poll", type=float, default=0.025)
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    if args.database == "sqlite":
        await run("sqlite", levels, args.window, args.settle, args.rate, args.poll)
        return
    from support.services import postgres_database

    try:
        async with postgres_database() as url:
            await run(url, levels, args.window, args.settle, args.rate, args.poll)
    except BaseException as exc:
        if type(exc).__name__ == "Skipped":
            raise SystemExit(f"PostgreSQL: {exc}") from None
        raise


if __name__ == "__main__":
    asyncio.run(main())
