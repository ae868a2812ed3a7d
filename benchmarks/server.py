"""The Parley server's own latency and /api/session throughput.

    .venv/bin/python benchmarks/server.py [--requests 300] [--calls 40] [--seconds 5] [--concurrency 32]

Runs `parley serve` (the in-process engine as upstream, a SQLite file in a temporary directory) and
`parley engine` alone, each in its own process, and drives them from this one:

* added latency: every API response carries `Server-Timing: upstream;dur=..., app;dur=...`, the
  server's own time with the time spent waiting for the upstream taken out; p50/p95 of `app` for
  `POST /api/session` and `POST /api/calls` (an aiortc offer; the call is hung up right after);
* the same seen from outside: the client's round trip through the server next to the same request
  made to the engine alone (client_secrets, calls). For /api/calls the server also opens the
  call's sideband WebSocket before it answers, which the engine alone does not do;
* throughput: `POST /api/session` from `--concurrency` clients (each its own user) for `--seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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


def _start(kind: str, port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PARLEY_"))}
    env.update({
        "PARLEY_DATA_DIR": str(data_dir), "PARLEY_UPSTREAM": "local", "PARLEY_LOG_LEVEL": "warning",
        "PARLEY_ENGINE_ICE_HOSTS": json.dumps(["127.0.0.1"]),
        "PARLEY_RATE_LIMIT_PER_MINUTE": "10000000", "PARLEY_RATE_LIMIT_BURST": "1000000",
        "PARLEY_MAX_CONCURRENT_CALLS": "1000000",
    })
    cli = Path(sys.executable).parent / "parley"
    command = [str(cli)] if cli.exists() else [sys.executable, "-c", "from parley.cli import app; app()"]
    args = ["serve"] if kind == "server" else ["engine", "--log-level", "warning"]
    return subprocess.Popen([*command, *args, "--host", "127.0.0.1", "--port", str(port)], env=env,
                            cwd=data_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url} exited")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not start")


def _timing(response: httpx.Response) -> tuple[float, float]:
    """(app ms, upstream ms) from Server-Timing."""
    parts = dict(p.strip().split(";dur=") for p in response.headers["server-timing"].split(","))
    return float(parts["app"]), float(parts["upstream"])


def _row(name: str, values: list[float]) -> str:
    return f"  {name:<44} p50 {percentile(values, 50):8.2f} ms   p95 {percentile(values, 95):8.2f} ms   (n={len(values)})"


async def session_latency(server: str, engine: str, n: int) -> None:
    app_ms: list[float] = []
    through: list[float] = []
    alone: list[float] = []
    from parley.apps.scenarios import get_persona
    from parley.server.personas import persona_session
    from parley.server.settings import ServerSettings

    session = persona_session(get_persona("negotiator/sarah"), ServerSettings(_env_file=None, upstream="local"))  # type: ignore[call-arg]
    async with httpx.AsyncClient(base_url=server) as c, httpx.AsyncClient(base_url=engine) as e:
        await c.get("/api/me")
        for i in range(n + 20):
            t = time.perf_counter()
            r = await c.post("/api/session", json={"persona": "negotiator/sarah"})
            total = (time.perf_counter() - t) * 1000
            r.raise_for_status()
            t = time.perf_counter()
            d = await e.post("/v1/realtime/client_secrets", headers={"authorization": "Bearer sk-bench"},
                             json={"session": session, "expires_after": {"anchor": "created_at", "seconds": 60}})
            direct = (time.perf_counter() - t) * 1000
            d.raise_for_status()
            if i >= 20:  # warm-up excluded
                app_ms.append(_timing(r)[0])
                through.append(total)
                alone.append(direct)
            await c.post(f"/api/calls/{r.json()['call_id']}/hangup")
    print("POST /api/session")
    print(_row("server's own time (Server-Timing app)", app_ms))
    print(_row("round trip through the server", through))
    print(_row("round trip to the engine alone (client_secrets)", alone))
    print(f"  difference of the medians: {percentile(through, 50) - percentile(alone, 50):.2f} ms")


async def calls_latency(server: str, engine: str, n: int) -> None:
    from aiortc import RTCPeerConnection

    from parley.apps.scenarios import get_persona
    from parley.ice import peer_connection
    from parley.server.personas import persona_session
    from parley.server.settings import ServerSettings

    session = persona_session(get_persona("negotiator/sarah"), ServerSettings(_env_file=None, upstream="local"))  # type: ignore[call-arg]
    app_ms: list[float] = []
    up_ms: list[float] = []
    through: list[float] = []
    alone: list[float] = []

    async def offer() -> tuple[RTCPeerConnection, str]:
        pc = peer_connection()
        pc.addTransceiver("audio", direction="sendrecv")
        pc.createDataChannel("oai-events")
        await pc.setLocalDescription(await pc.createOffer())
        return pc, pc.localDescription.sdp

    async with httpx.AsyncClient(base_url=server, timeout=30) as c, \
            httpx.AsyncClient(base_url=engine, timeout=30) as e:
        await c.get("/api/me")
        for i in range(n + 3):
            pc, sdp = await offer()
            t = time.perf_counter()
            r = await c.post("/api/calls", json={"sdp": sdp, "persona": "negotiator/sarah"})
            total = (time.perf_counter() - t) * 1000
            r.raise_for_status()
            await c.post(f"/api/calls/{r.json()['call_id']}/hangup")
            await pc.close()
            pc, sdp = await offer()
            t = time.perf_counter()
            d = await e.post("/v1/realtime/calls", headers={"authorization": "Bearer sk-bench"},
                             files={"sdp": (None, sdp, "application/sdp"),
                                    "session": (None, json.dumps(session), "application/json")})
            direct = (time.perf_counter() - t) * 1000
            d.raise_for_status()
            await e.post(f"{d.headers['location']}/hangup", headers={"authorization": "Bearer sk-bench"})
            await pc.close()
            if i >= 3:
                app, up = _timing(r)
                app_ms.append(app)
                up_ms.append(up)
                through.append(total)
                alone.append(direct)
    print("POST /api/calls (aiortc offer; server: create upstream + open the sideband + store the call)")
    print(_row("server's own time (Server-Timing app)", app_ms))
    print(_row("upstream time inside it (calls + sideband)", up_ms))
    print(_row("round trip through the server", through))
    print(_row("round trip to the engine alone (calls)", alone))


async def _raw_client(port: int, stop: float, counts: dict[int, int]) -> None:
    """A minimal HTTP/1.1 keep-alive client (httpx would cost more CPU than the server under test)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def exchange(request: bytes) -> tuple[int, bytes]:
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length:"))
        await reader.readexactly(length)
        return int(lines[0].split()[1]), head

    _status, head = await exchange(b"GET /api/me HTTP/1.1\r\nHost: bench\r\n\r\n")  # its own cookie: its own user
    cookie = next(line.split(b":", 1)[1].split(b";")[0].strip() for line in head.split(b"\r\n")
                  if line.lower().startswith(b"set-cookie:"))
    body = b'{"persona":"negotiator/sarah"}'
    request = (b"POST /api/session HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nCookie: " + cookie
               + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    try:
        while time.monotonic() < stop:
            status, _ = await exchange(request)
            counts[status] = counts.get(status, 0) + 1
    finally:
        writer.close()


async def session_throughput(port: int, seconds: float, concurrency: int) -> None:
    counts: dict[int, int] = {}
    start = time.monotonic()
    await asyncio.gather(*(_raw_client(port, start + seconds, counts) for _ in range(concurrency)))
    elapsed = time.monotonic() - start
    ok = counts.get(200, 0)
    print(f"POST /api/session throughput, {concurrency} keep-alive clients for {seconds:g} s: "
          f"{ok / elapsed:.0f} requests/s ({ok} ok, other statuses: {dict((k, v) for k, v in counts.items() if k != 200)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    print(f"machine: {describe()}")
    with tempfile.TemporaryDirectory() as tmp:
        sp, ep = free_port(), free_port()
        server, engine = f"http://127.0.0.1:{sp}", f"http://127.0.0.1:{ep}"
        procs = [_start("server", sp, Path(tmp)), _start("engine", ep, Path(tmp))]
        try:
            _wait(f"{server}/healthz", procs[0])
            _wait(f"{engine}/v1/realtime/healthz", procs[1])
            print("server: `parley serve` (in-process engine, SQLite), one process; client: this process\n")
            asyncio.run(session_latency(server, engine, args.requests))
            asyncio.run(calls_latency(server, engine, args.calls))
            asyncio.run(session_throughput(sp, args.seconds, args.concurrency))
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()


if __name__ == "__main__":
    main()
