"""`parley serve` killed with SIGKILL mid-call loses no transcript item that was already complete."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from parley.util.serving import free_port
from support.rtc import of_type
from support.server import call_json, eventually, say_text, server_call

pytestmark = pytest.mark.slow


def _serve(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PARLEY_"))}
    env.update({"PARLEY_DATA_DIR": str(data_dir), "PARLEY_UPSTREAM": "local", "HF_HUB_OFFLINE": "1",
                "PARLEY_ENGINE_ICE_HOSTS": json.dumps(["127.0.0.1"]), "PARLEY_ENGINE_WARM_UP": "false"})
    cli = Path(sys.executable).parent / "parley"
    command = [str(cli)] if cli.exists() else [sys.executable, "-c", "from parley.cli import app; app()"]
    return subprocess.Popen([*command, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env,
                            cwd=data_dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"parley serve exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError("parley serve did not become healthy")


async def test_sigkill_mid_call_keeps_every_completed_item(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _serve(tmp_path, port)
    try:
        await asyncio.to_thread(_wait_healthy, url, proc)
        async with httpx.AsyncClient(base_url=url, timeout=30) as c, server_call(c) as (peer, call_id):
            for text in ("Hi, my bill is too high.", "I have been a customer for six years.",
                         "Another company offered me fifty dollars a month."):
                await peer.wait_for(of_type("response.done"), start=say_text(peer, text), timeout=60)
            # every item the call completed, as the peer saw it on its data channel
            done = {e["item"]["id"]: e["item"] for e in peer.events if e["type"] == "conversation.item.done"}
            assert len(done) == 6
            listed = await eventually(lambda: _items(c, call_id, len(done)), timeout=10)
            say_text(peer, "What does that include?")  # the call goes on...
            await peer.wait_for(of_type("response.created"), start=len(peer.events) - 1)
            proc.send_signal(signal.SIGKILL)  # ...and the server dies mid-response
            proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)

    with sqlite3.connect(tmp_path / "parley.db") as db:
        assert db.execute("pragma integrity_check").fetchone() == ("ok",)
        status = db.execute("select status from calls where id = ?", (call_id,)).fetchone()
        stored = {item_id: (role, text) for item_id, role, text in db.execute(
            "select item_id, role, text from transcript_items where call_id = ? order by seq", (call_id,))}
        usage = db.execute("select count(*) from usage_records where call_id = ? and kind = 'response'",
                           (call_id,)).fetchone()[0]
    assert status == ("active",)  # nobody had the chance to end it
    assert set(done) <= set(stored)
    for item_id, item in done.items():
        role, text = stored[item_id]
        assert role == item["role"]
        part = item["content"][0]
        assert text == (part.get("text") or part.get("transcript"))
    assert [i["item_id"] for i in listed] == [i for i in stored if i in {x["item_id"] for x in listed}]
    assert usage >= 3

    # the next start marks the orphaned call as over, and serves it
    proc = _serve(tmp_path, port)
    try:
        await asyncio.to_thread(_wait_healthy, url, proc)
        async with httpx.AsyncClient(base_url=url, timeout=30, cookies=c.cookies) as again:
            call = await call_json(again, call_id)
        assert (call["status"], call["end_reason"]) == ("ended", "server_restart")
        assert len(call["transcript"]) >= 6
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def _items(c: httpx.AsyncClient, call_id: str, n: int) -> list[dict[str, object]] | None:
    """The stored items once all `n` are there, and the usage of the three responses."""
    call = await call_json(c, call_id)
    items: list[dict[str, object]] = call["transcript"]
    return items if len(items) >= n and len(call["responses"]) >= 3 else None
