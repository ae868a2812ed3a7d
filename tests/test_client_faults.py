"""The client against a network that fails: drops, refused reconnects, expired keys, renewals.

Between the client and the real engine sits `parley.client.relay.FaultRelay`, a WebSocket relay
on loopback that can cut every connection (the client sees an abnormal closure, code 1006),
refuse upgrades, or cut when it sees a given server event.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.server import serve

from parley.apps.local import local_engine
from parley.client import (
    AudioPlayer,
    ConnectError,
    Key,
    RealtimeClient,
    ReconnectPolicy,
    mint_client_secret,
)
from parley.client.relay import FaultRelay
from parley.client.webrtc import WebRTCTransport
from parley.engine.app import EngineSettings, create_app
from parley.engine.speech.wer import wer
from parley.util.serving import serve_app
from support.chat_server import ChatServerURL, run_chat_server
from support.speech import speech_pcm24k

TEXT_SESSION: dict[str, Any] = {"output_modalities": ["text"], "audio": {"input": {"turn_detection": None}}}


@pytest.fixture(scope="module")
def engine() -> Iterator[tuple[str, ChatServerURL]]:
    """The engine answering through the stand-in LLM, which writes a word every 0.1 s (so a
    response is still being written when the relay cuts)."""
    with run_chat_server() as chat_url:
        settings = EngineSettings(responder="chat", chat_url=str(chat_url), chat_model="drip-0.1", warm_up=False,
                                  ice_hosts=["127.0.0.1"])
        with serve_app(create_app(local_engine(settings))) as url:
            yield url, chat_url


@pytest.fixture
async def relay(engine: tuple[str, ChatServerURL]) -> AsyncIterator[FaultRelay]:
    async with FaultRelay(engine[0]) as r:
        yield r


def fast_policy(**overrides: Any) -> ReconnectPolicy:
    return ReconnectPolicy(**{"initial_delay": 0.05, "jitter": 0.1, "max_attempts": 6, **overrides})


async def turn(client: RealtimeClient, text: str) -> dict[str, Any]:
    await client.send_text(text)
    done = await client.wait_for("response.done", lambda e: e.status == "completed", timeout=30)
    return dict(done.response)


def seen_by_llm(chat_url: ChatServerURL) -> list[str]:
    """The user and assistant words the stand-in LLM was given in its latest request."""
    return [str(m.get("content")) for m in chat_url.requests[-1]["messages"] if m.get("role") in ("user", "assistant")]


async def test_drop_mid_response_resumes_with_every_completed_item(engine: tuple[str, ChatServerURL],
                                                                   relay: FaultRelay) -> None:
    _, chat_url = engine
    client = RealtimeClient(base_url=relay.url, api_key="sk-test", session=TEXT_SESSION, reconnect=fast_policy())
    events: list[Any] = []
    client.on("*", lambda e: events.append(e) if e.type in ("disconnected", "reconnecting", "reconnected") else None)
    async with client:
        await turn(client, "My name is Ada.")
        await turn(client, "I live in Paris.")
        before = {i.id: (i.role, i.text) for i in client.conversation}
        first_session = client.session_id
        assert len(before) == 4

        # the third answer is being written when the connection goes
        relay.cut_when(lambda e: e.get("type") == "response.output_text.delta")
        reconnected = asyncio.ensure_future(client.wait_for("reconnected", timeout=20))
        await client.send_text("I like green tea.")
        back = await reconnected
        assert back.reason == "drop" and back.session_id != first_session
        assert relay.cuts
        kinds = [e.type for e in events]
        assert kinds[0] == "disconnected" and events[0].will_reconnect and events[0].code == 1006
        assert kinds[-1] == "reconnected" and back.downtime_s < 2
        assert back.replayed >= 5  # 4 earlier items, the third question (and the words already written)
        assert back.resumed_response  # the cut-off answer is asked for again

        # the new answer comes, in the new session
        done = await client.wait_for("response.done", lambda e: e.status == "completed", timeout=30)
        assert done.response_id not in [i.response_id for i in client.conversation if i.id in before]
        # every item completed before the drop is intact here, in its order, and in the new session
        ids = client.conversation.ids
        assert [i for i in ids if i in before] == list(before)
        for item_id, (role, text) in before.items():
            assert client.conversation[item_id].text == text
            server = await client.retrieve_item(item_id)
            assert server["role"] == role
            part = server["content"][0]
            assert (part.get("text") or part.get("transcript")) == text
        third = client.conversation.last("user")
        assert third is not None and third.text == "I like green tea."
        assert client.conversation.last("assistant").text == "You said: I like green tea."  # type: ignore[union-attr]
        # the model was given the whole conversation again
        words = seen_by_llm(chat_url)
        assert words[:4] == ["My name is Ada.", "You said: My name is Ada.", "I live in Paris.",
                             "You said: I live in Paris."]
        assert words[-1] == "I like green tea."
        assert client.reconnects == 1


async def test_webrtc_call_lost_resumes_in_a_new_call(engine: tuple[str, ChatServerURL]) -> None:
    """Over WebRTC the call can end under the client (here the engine hangs it up): the client
    makes a new call and carries the conversation over."""
    url, chat_url = engine
    client = RealtimeClient(base_url=url, api_key="sk-test", transport="webrtc", session=TEXT_SESSION,
                            ice_hosts=["127.0.0.1"], reconnect=fast_policy())
    async with client:
        await turn(client, "My name is Ada.")
        before = client.conversation.ids
        transport = client.transport
        assert isinstance(transport, WebRTCTransport) and transport.call_id
        first_call = transport.call_id
        reconnected = asyncio.ensure_future(client.wait_for("reconnected", timeout=30))
        async with httpx.AsyncClient() as http:
            r = await http.post(f"{url}/v1/realtime/calls/{first_call}/hangup",
                                headers={"Authorization": "Bearer sk-test"})
            assert r.status_code == 200
        back = await reconnected
        assert back.replayed == 2
        now = client.transport
        assert isinstance(now, WebRTCTransport) and now.call_id not in (None, first_call)
        for item_id in before:
            assert (await client.retrieve_item(item_id))["id"] == item_id
        await turn(client, "Who am I?")
        assert seen_by_llm(chat_url)[:3] == ["My name is Ada.", "You said: My name is Ada.", "Who am I?"]


async def test_refused_reconnects_follow_the_backoff_schedule(relay: FaultRelay) -> None:
    policy = ReconnectPolicy(initial_delay=0.2, factor=2.0, jitter=0.1, max_delay=5.0, max_attempts=8)
    client = RealtimeClient(base_url=relay.url, api_key="sk-test", session=TEXT_SESSION, reconnect=policy)
    announced: list[Any] = []
    client.on("reconnecting", announced.append)
    async with client:
        await turn(client, "Hello.")
        relay.refuse(3)
        reconnected = asyncio.ensure_future(client.wait_for("reconnected", timeout=20))
        relay.cut()
        cut_at = relay.cuts[-1]
        back = await reconnected
        assert back.attempts == 4
        attempts = [a for a in relay.attempts if a.at > cut_at]
        assert [a.status for a in attempts] == [503, 503, 503, 101]
        times = [cut_at] + [a.at for a in attempts]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        for gap, base in zip(gaps, policy.schedule(4), strict=True):  # 0.2, 0.4, 0.8, 1.6 s
            assert base * (1 - policy.jitter) - 0.01 <= gap <= base * (1 + policy.jitter) + 0.15, (gaps, base)
        assert [round(a.delay / b, 2) for a, b in zip(announced, policy.schedule(4), strict=True)] == \
            [pytest.approx(1, abs=policy.jitter + 0.01)] * 4
        await turn(client, "Still there?")
        assert client.conversation.messages()[0] == ("user", "Hello.")


async def test_gives_up_after_max_attempts(relay: FaultRelay) -> None:
    client = RealtimeClient(base_url=relay.url, api_key="sk-test", session=TEXT_SESSION,
                            reconnect=fast_policy(max_attempts=3))
    async with client:
        errors: list[Any] = []
        client.on("error", errors.append)
        final = asyncio.ensure_future(client.wait_for("disconnected", lambda e: not e.will_reconnect, timeout=10))
        relay.refuse(10)
        relay.cut()
        gone = await final
        assert "gave up" in gone.reason
        assert client.state == "closed"
        assert errors and errors[-1].code == "reconnect_failed"
        assert len([a for a in relay.attempts if a.status == 503]) == 3


async def test_expired_ephemeral_key_is_refreshed_through_the_callback(engine: tuple[str, ChatServerURL],
                                                                       relay: FaultRelay) -> None:
    url, _ = engine
    first = await mint_client_secret(url, "sk-test", session=TEXT_SESSION, expires_after=10)
    minted: list[dict[str, Any]] = []

    async def fresh_key() -> dict[str, Any]:
        secret = await mint_client_secret(url, "sk-test", session=TEXT_SESSION, expires_after=600)
        minted.append(secret)
        return secret

    client = RealtimeClient(base_url=relay.url, api_key=first["value"], key_provider=fresh_key,
                            reconnect=fast_policy())
    refreshed: list[Any] = []
    client.on("key_refreshed", refreshed.append)
    async with client:
        assert "model=" not in client.websocket_url(client._key)  # the model comes with the key
        await turn(client, "Remember the number seven.")
        assert not minted
        await asyncio.sleep(max(0.0, first["expires_at"] - time.time()) + 0.6)
        reconnected = asyncio.ensure_future(client.wait_for("reconnected", timeout=20))
        relay.cut()
        await reconnected
        # the old key was refused once; the callback minted a new one, which opened the session
        after_cut = [a.status for a in relay.attempts if a.at > relay.cuts[-1]]
        assert after_cut == [401, 101]
        assert len(minted) == 1 and refreshed and refreshed[0].reason == "refused"
        assert client._key is not None and client._key.value == minted[0]["value"]
        await turn(client, "What number?")
        assert [r for r, _ in client.conversation.messages()] == ["user", "assistant", "user", "assistant"]


async def test_key_refused_without_a_provider_fails_connect(engine: tuple[str, ChatServerURL]) -> None:
    url, _ = engine
    with pytest.raises(ConnectError) as refused:
        await RealtimeClient(base_url=url, api_key="ek_unknown").connect()
    assert refused.value.status == 401


async def test_proactive_renewal_keeps_the_conversation_across_sessions(engine: tuple[str, ChatServerURL],
                                                                        relay: FaultRelay) -> None:
    _, chat_url = engine
    client = RealtimeClient(base_url=relay.url, api_key="sk-test", session=TEXT_SESSION,
                            max_session_duration=3.0, renew_margin=1.5)
    renewals: list[Any] = []
    drops: list[Any] = []
    client.on("reconnected", renewals.append)
    client.on("disconnected", drops.append)
    async with client:
        sessions = [client.session_id]
        await turn(client, "First session here.")
        await client.wait_for("reconnected", timeout=10)
        sessions.append(client.session_id)
        await turn(client, "Second session here.")
        await client.wait_for("reconnected", timeout=10)
        sessions.append(client.session_id)
        await turn(client, "Third session here.")
        assert len(set(sessions)) == 3
        assert [r.reason for r in renewals] == ["renewal", "renewal"]
        assert not drops  # made before broken: never disconnected
        assert client.renewals == 2 and client.reconnects == 0
        words = seen_by_llm(chat_url)
        assert words == ["First session here.", "You said: First session here.", "Second session here.",
                         "You said: Second session here.", "Third session here."]
        assert relay.live == 1  # the old sessions were closed


async def test_hostile_server_events_never_crash_the_client() -> None:
    """A peer that sends garbage: the client reports it and goes on."""

    async def handler(ws: Any) -> None:
        await ws.send(json.dumps({"type": "session.created", "session": {"id": "sess_x", "model": "gpt-realtime"}}))
        update = json.loads(await ws.recv())
        assert update["type"] == "session.update" and update["session"]["type"] == "realtime"
        await ws.send(json.dumps({"type": "session.updated", "session": {"id": "sess_x", **update["session"]}}))
        for junk in ["not json", "[1, 2]", "null", '{"type": 5}', '{"no": "type"}',
                     json.dumps({"type": "response.done"}),
                     json.dumps({"type": "response.done", "response": {"id": 5, "usage": "lots"}}),
                     json.dumps({"type": "conversation.item.added", "item": "x"}),
                     json.dumps({"type": "conversation.item.added", "item": {"id": None}}),
                     json.dumps({"type": "response.output_audio.delta", "delta": "***", "item_id": "i"}),
                     json.dumps({"type": "response.output_audio.delta", "delta": 7}),
                     json.dumps({"type": "conversation.item.input_audio_transcription.completed", "item_id": 3}),
                     json.dumps({"type": "response.created", "response": {"id": "r1", "metadata": "x"}}),
                     json.dumps({"type": "response.output_text.delta", "response_id": "r1", "item_id": "a",
                                 "delta": "Hi"}),
                     json.dumps({"type": "error", "error": "bad"}),
                     json.dumps({"type": "input_audio_buffer.speech_started", "audio_start_ms": "soon"}),
                     b"\xff\xfe binary"]:
            await ws.send(junk)
        await ws.send(json.dumps({"type": "response.done", "response": {"id": "r1", "status": "completed",
                                                                         "output": [], "usage": None}}))
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        client = RealtimeClient(url=f"ws://127.0.0.1:{port}/v1/realtime", api_key="sk-test",
                                session={"instructions": "x"}, reconnect=ReconnectPolicy.disabled(),
                                player=AudioPlayer("clock"))
        errors: list[Any] = []
        client.on("error", errors.append)
        await client.connect()
        done = await client.wait_for("response.done", lambda e: e.response_id == "r1", timeout=10)
        assert done.status == "completed"
        assert client.connected
        assert client.conversation.get("a") is not None and client.conversation["a"].text == "Hi"
        assert sum(e.code == "invalid_server_event" for e in errors) >= 4  # the non-objects, reported
        await client.close()


async def test_connect_errors_are_clear() -> None:
    with pytest.raises(ConnectError) as refused:
        await RealtimeClient(base_url="http://127.0.0.1:9", api_key="sk-test").connect()
    assert refused.value.status is None and refused.value.retryable
    with pytest.raises(ValueError):
        RealtimeClient(base_url="http://127.0.0.1:9", api_key="sk", transport="carrier-pigeon")._connection._new_transport(  # type: ignore[arg-type]
            Key("sk"))


@pytest.mark.slow
async def test_drop_while_the_user_speaks_resends_the_unfinished_utterance(engine: tuple[str, ChatServerURL],
                                                                          relay: FaultRelay) -> None:
    """The connection goes just as the server hears speech begin (the client never even learns
    it did): the audio after the last commit is sent again, so the whole utterance is heard."""
    sentence = "Our next meeting is on Thursday."
    # the outage lasts 0.6 s: at twice real time, more than a second of speech goes out meanwhile
    client = RealtimeClient(base_url=relay.url, api_key="sk-test", reconnect=fast_policy(initial_delay=0.6, jitter=0),
                            session={
        "output_modalities": ["text"],
        "audio": {"input": {"transcription": {"model": "whisper-1", "language": "en"},
                            "turn_detection": {"type": "server_vad", "silence_duration_ms": 400}}}})
    async with client:
        relay.cut_when(lambda e: e.get("type") == "input_audio_buffer.speech_started")
        heard = asyncio.ensure_future(client.wait_for(
            "conversation.item.input_audio_transcription.completed", timeout=30))
        pcm = speech_pcm24k(sentence, lead_silence_ms=600, tail_silence_ms=1200)
        step = 480
        for offset in range(0, pcm.size, step):  # a microphone at twice real time, going on regardless
            await client.send_audio(pcm[offset:offset + step])
            await asyncio.sleep(0.01)
        transcript = (await heard).transcript
        assert relay.cuts and client.reconnects == 1
        assert wer(sentence, transcript) <= 0.3, transcript
        assert transcript.lower().startswith("our next"), transcript
        users = [i for i in client.conversation if i.role == "user"]
        assert len(users) == 1 and users[0].text == transcript
        await client.wait_for("response.done", timeout=30)


async def test_switching_turn_detection_type_survives_a_reconnect(relay: FaultRelay) -> None:
    """The client keeps its session with the protocol's merge: a new turn detection type replaces
    the old object, so no `silence_duration_ms` is left to make the engine refuse the replay."""
    session = {"audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 400}}}}
    client = RealtimeClient(base_url=relay.url, api_key="sk-test", session=session, reconnect=fast_policy())
    async with client:
        updated = await client.update_session({"audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}})
        assert updated["audio"]["input"]["turn_detection"]["type"] == "semantic_vad"
        reconnected = asyncio.ensure_future(client.wait_for("reconnected", timeout=20))
        failed = asyncio.ensure_future(client.wait_for("disconnected", lambda e: not e.will_reconnect, timeout=20))
        await asyncio.sleep(0)
        relay.cut()
        done, _ = await asyncio.wait({reconnected, failed}, return_when=asyncio.FIRST_COMPLETED)
        failed.cancel()
        assert reconnected in done, failed.result()
        assert client.session["audio"]["input"]["turn_detection"] == {
            **client.session["audio"]["input"]["turn_detection"], "type": "semantic_vad"}
        assert "silence_duration_ms" not in client.session["audio"]["input"]["turn_detection"]
