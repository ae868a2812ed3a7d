"""Every WebRTC peer in our code sets its ICE servers explicitly, so the tests reach nothing outside
loopback even without `scripts/loopback-only`: aiortc given no configuration asks Google's public
STUN server on every call. In Python, peers are built by `parley.ice.peer_connection` alone; in
the browser, each page's `new RTCPeerConnection` names its `iceServers`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from parley.client.webrtc import WebRTCTransport
from parley.engine.app import Engine, create_app
from parley.util.serving import serve_app
from support.rtc import RtcPeer
from support.server import make_engine

ROOT = Path(__file__).resolve().parents[1]
BUILDER = ROOT / "src" / "parley" / "ice.py"


def test_only_parley_ice_builds_an_rtc_peer_connection() -> None:
    built = [f"{path.relative_to(ROOT)}:{n}"
             for folder in ("src", "tests", "benchmarks") for path in sorted((ROOT / folder).rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if re.search(r"RTCPeerConnection\s*\(", line) and path != BUILDER]
    assert built == []
    assert "RTCConfiguration(iceServers=" in BUILDER.read_text()


def test_every_browser_peer_connection_names_its_ice_servers() -> None:
    pages = [*(ROOT / "src" / "parley" / "web").rglob("*.js"), *(ROOT / "src" / "parley" / "web").rglob("*.html"),
             *(ROOT / "tests" / "browser").rglob("*.html")]
    made = [(path.name, m.group(1)) for path in pages
            for m in re.finditer(r"new\s+RTCPeerConnection\s*\(([^)]*)\)", path.read_text())]
    assert made and all("iceServers" in config for _name, config in made), made


def ice_connections(pc: Any) -> list[Any]:
    """The aioice connections of an aiortc peer (media and data channel transports)."""
    transports = [t.sender.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    return [dtls.transport.iceGatherer._connection for dtls in transports]


@pytest.fixture(scope="module")
def engine_url() -> Iterator[tuple[str, Engine]]:
    engine = make_engine()
    with serve_app(create_app(engine)) as url:
        yield url, engine


async def test_no_peer_of_a_call_asks_a_stun_or_turn_server(engine_url: tuple[str, Engine]) -> None:
    url, engine = engine_url
    client = WebRTCTransport(f"{url}/v1/realtime/calls", ice_hosts=["127.0.0.1"])
    peer = RtcPeer()
    await client.open("sk-test")
    try:
        peer_offer = await peer.offer()
        calls = list(engine.calls.values())
        connections = [*ice_connections(client._pc), *ice_connections(peer.pc),
                       *(c for call in calls for c in ice_connections(call.pc))]
        assert calls and len(connections) >= 3
        assert [(c.stun_server, c.turn_server) for c in connections] == [(None, None)] * len(connections)
        assert "typ srflx" not in peer_offer and "typ relay" not in peer_offer
    finally:
        await client.close()
        await peer.close()


async def test_the_engines_ice_servers_are_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from parley.engine.settings import EngineSettings
    from parley.ice import IceServer, peer_connection

    monkeypatch.setenv("PARLEY_ENGINE_ICE_SERVERS", '[{"urls": "stun:stun.example.org:3478"}]')
    servers = EngineSettings(_env_file=None).ice_servers  # type: ignore[call-arg]
    assert servers == [IceServer(urls="stun:stun.example.org:3478")]
    pc = peer_connection(servers)
    try:
        pc.createDataChannel("x")  # its transports exist now; nothing is gathered until an offer
        assert [c.stun_server for c in ice_connections(pc)] == [("stun.example.org", 3478)]
    finally:
        await pc.close()
