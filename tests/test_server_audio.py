"""A call's recording: uploaded by the page, served to its owner only, with limits."""

from __future__ import annotations

from pathlib import Path

from support.server import http, make_settings, running_server, server_call


async def test_recording_upload_and_download(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_audio_bytes=64 * 1024)
    with running_server(settings) as url:
        async with http(url) as owner, http(url) as stranger, server_call(owner) as (_peer, call_id):
            base = f"/api/calls/{call_id}/audio"
            assert (await owner.get(base)).json()["error"]["code"] == "no_recording"
            r = await owner.post(base, content=b"x" * 1000, headers={"Content-Type": "text/plain"})
            assert r.status_code == 415
            r = await owner.post(base, content=b"", headers={"Content-Type": "audio/webm"})
            assert r.status_code == 400 and r.json()["error"]["code"] == "empty_recording"
            r = await owner.post(base, content=b"x" * (65 * 1024), headers={"Content-Type": "audio/webm"})
            assert r.status_code == 413
            audio = bytes(range(256)) * 40
            r = await owner.post(base, content=audio, headers={"Content-Type": "audio/webm;codecs=opus"})
            assert r.status_code == 200 and r.json()["bytes"] == len(audio)
            got = await owner.get(base)
            assert got.status_code == 200 and got.content == audio
            assert got.headers["content-type"] == "audio/webm"
            assert "attachment" in got.headers["content-disposition"]
            assert (await owner.get(f"/api/calls/{call_id}")).json()["has_audio"] is True
            # another visitor sees nothing
            assert (await stranger.get(base)).status_code == 404
            r = await stranger.post(base, content=audio, headers={"Content-Type": "audio/webm"})
            assert r.status_code == 404
