"""ICE for every aiortc peer we make (engine, client, tests, benchmarks): the one place that
builds an `RTCPeerConnection`, and the one pin of the host addresses aioice offers.

aiortc given no configuration (or `iceServers=None`) queries Google's public STUN server on every
call; `peer_connection()` always passes the servers explicitly, and the default is none: on
loopback and LANs host candidates are all a call needs. aiortc is imported only when a peer is
made, so importing this costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection


@dataclass(frozen=True)
class IceServer:
    """A STUN or TURN server, as in the browser's `RTCIceServer` (`stun:host:port`, `turn:...`)."""

    urls: str | list[str]
    username: str | None = None
    credential: str | None = None


def peer_connection(ice_servers: Sequence[IceServer | str] = ()) -> RTCPeerConnection:
    """A new `aiortc.RTCPeerConnection` using exactly these ICE servers (a string is a URL)."""
    from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

    servers = [RTCIceServer(urls=s) if isinstance(s, str) else RTCIceServer(s.urls, s.username, s.credential)
               for s in ice_servers]
    return RTCPeerConnection(RTCConfiguration(iceServers=servers))


def pin_host_addresses(hosts: Sequence[str]) -> None:
    """Offer only these host addresses as ICE candidates (e.g. 127.0.0.1, which aiortc never
    offers by itself). Process-wide: aioice has no per-connection setting, and looks the
    function up at gathering time, so this works whenever it is called."""
    import aioice.ice

    pinned = list(hosts)
    if getattr(aioice.ice.get_host_addresses, "_parley_hosts", None) == pinned:
        return

    def get_host_addresses(use_ipv4: bool = True, use_ipv6: bool = False) -> list[str]:
        return list(pinned)

    get_host_addresses._parley_hosts = pinned  # type: ignore[attr-defined]
    aioice.ice.get_host_addresses = get_host_addresses
