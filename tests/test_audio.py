"""Audio utilities: PCM conversion, G.711, resampling, session formats, WAV io, levels."""

from __future__ import annotations

import io
import struct
import sys
import warnings
import wave

import numpy as np
import pytest

from parley.audio import g711
from parley.audio.formats import InputDecoder, OutputEncoder, bytes_per_ms, normalize_format
from parley.audio.levels import DBFS_FLOOR, dbfs, is_silent, loud_until, rms
from parley.audio.pcm import SAMPLE_RATE, duration_ms, float_to_pcm16, pcm16_to_float
from parley.audio.resample import StreamResampler, resample
from parley.audio.wav import read_wav, wav_bytes, write_wav

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)


def tone(freq: float, rate: int, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_freq(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[np.argmax(spec)])


def snr_db(ref: np.ndarray, test: np.ndarray) -> float:
    noise = test.astype(np.float64) - ref
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum(noise**2)))


# ------------------------------------------------------------------ pcm


def test_pcm16_round_trip_is_lossless_for_every_value() -> None:
    raw = ALL_INT16.astype("<i2").tobytes()
    f = pcm16_to_float(raw)
    assert f.dtype == np.float32
    assert f.min() == -1.0 and f.max() < 1.0
    assert float_to_pcm16(f) == raw


def test_float_to_pcm16_clips_instead_of_wrapping() -> None:
    out = np.frombuffer(float_to_pcm16(np.array([1.5, -1.5, 1.0, -1.0, 0.0], dtype=np.float32)), "<i2")
    assert out.tolist() == [32767, -32768, 32767, -32768, 0]


def test_pcm16_odd_length_rejected() -> None:
    with pytest.raises(ValueError):
        pcm16_to_float(b"\x00\x01\x02")


def test_duration_ms() -> None:
    assert duration_ms(48000) == 1000.0
    assert duration_ms(960) == 20.0
    assert duration_ms(16000, rate=8000) == 1000.0


# ------------------------------------------------------------------ g711


def test_g711_known_values() -> None:
    pcm = np.array([0, -1, 32767, -32768], dtype=np.int16)
    assert g711.ulaw_encode(pcm) == bytes([0xFF, 0x7E, 0x80, 0x00])
    assert g711.alaw_encode(pcm) == bytes([0xD5, 0x55, 0xAA, 0x2A])
    assert g711.ulaw_decode(bytes([0xFF, 0x7F, 0x00, 0x80])).tolist() == [0, 0, -32124, 32124]
    assert g711.alaw_decode(bytes([0xD5, 0x55, 0xAA, 0x2A])).tolist() == [8, -8, 32256, -32256]


def test_g711_decode_encode_round_trip_of_every_code() -> None:
    codes = bytes(range(256))
    # A-law has no duplicate values: every code survives.
    assert g711.alaw_encode(g711.alaw_decode(codes)) == codes
    # mu-law has +0 (0xFF) and -0 (0x7F); -0 comes back as +0, everything else survives.
    expected = bytes(0xFF if c == 0x7F else c for c in codes)
    assert g711.ulaw_encode(g711.ulaw_decode(codes)) == expected


def test_g711_quantization_error_is_bounded() -> None:
    for enc, dec in ((g711.ulaw_encode, g711.ulaw_decode), (g711.alaw_encode, g711.alaw_decode)):
        back = dec(enc(ALL_INT16)).astype(np.int32)
        err = np.abs(back - ALL_INT16.astype(np.int32))
        # log companding: error within half a step, which is at most 1/16 of the magnitude
        # (plus the clip region above the top code's value).
        assert np.all(err <= np.maximum(np.abs(ALL_INT16.astype(np.int32)) // 16, 16) + 650)
        # and a speech-level sine keeps G.711's ~38 dB SNR
        x = (tone(440, 8000) * 0.3 * 32767).astype(np.int16)
        assert snr_db(x.astype(np.float64), dec(enc(x)).astype(np.float64)) > 33


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="audioop was removed in Python 3.13")
def test_g711_is_bit_exact_with_audioop() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop

    raw = ALL_INT16.astype("<i2").tobytes()
    codes = bytes(range(256))
    assert g711.ulaw_encode(ALL_INT16) == audioop.lin2ulaw(raw, 2)
    assert g711.alaw_encode(ALL_INT16) == audioop.lin2alaw(raw, 2)
    assert g711.ulaw_decode(codes).astype("<i2").tobytes() == audioop.ulaw2lin(codes, 2)
    assert g711.alaw_decode(codes).astype("<i2").tobytes() == audioop.alaw2lin(codes, 2)


def test_g711_rejects_non_int16() -> None:
    with pytest.raises(TypeError):
        g711.ulaw_encode(np.zeros(4, dtype=np.float32))


# ------------------------------------------------------------------ resample


@pytest.mark.parametrize(
    ("in_rate", "out_rate"), [(24000, 16000), (8000, 24000), (22050, 24000), (24000, 8000)]
)
def test_streaming_in_odd_chunks_equals_one_shot(in_rate: int, out_rate: int) -> None:
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(in_rate) * 0.2).astype(np.float32)
    one_shot = resample(x, in_rate, out_rate)
    r = StreamResampler(in_rate, out_rate)
    sizes = [1, 7, 333, 479, 2, 1024, 13, 960]
    parts, i, k = [], 0, 0
    while i < x.size:
        n = sizes[k % len(sizes)]
        parts.append(r.process(x[i : i + n]))
        i, k = i + n, k + 1
    parts.append(r.flush())
    streamed = np.concatenate(parts)
    assert streamed.size == one_shot.size == out_rate
    np.testing.assert_allclose(streamed, one_shot, atol=1e-5)


@pytest.mark.parametrize(("in_rate", "out_rate"), [(24000, 16000), (8000, 24000), (22050, 24000)])
def test_resampling_preserves_a_sines_frequency(in_rate: int, out_rate: int) -> None:
    y = resample(tone(1000, in_rate), in_rate, out_rate)
    assert abs(peak_freq(y, out_rate) - 1000) < 2
    # level preserved (passband is flat)
    assert abs(dbfs(y[500:-500]) - dbfs(tone(1000, in_rate))) < 0.1


def test_downsampling_removes_content_above_the_new_nyquist() -> None:
    y = resample(tone(10000, 24000), 24000, 16000)  # 10 kHz cannot exist at 16 kHz
    # (skip the clip's edges: the tone starting and stopping abruptly is broadband)
    assert dbfs(y[1000:-1000]) < dbfs(tone(10000, 24000)) - 100


def test_stream_resampler_flush_resets_and_passthrough() -> None:
    r = StreamResampler(24000, 16000)
    x = tone(440, 24000, 0.1)
    first = np.concatenate([r.process(x), r.flush()])
    second = np.concatenate([r.process(x), r.flush()])  # reusable after flush
    np.testing.assert_array_equal(first, second)
    same = StreamResampler(24000, 24000)
    assert same.passthrough
    np.testing.assert_array_equal(same.process(x), x)
    assert same.flush().size == 0


def test_resampler_rejects_multichannel() -> None:
    with pytest.raises(ValueError):
        StreamResampler(24000, 16000).process(np.zeros((10, 2), dtype=np.float32))


# ------------------------------------------------------------------ formats


def test_format_names_and_rates() -> None:
    assert normalize_format("pcm16") == "audio/pcm"
    assert normalize_format("g711_ulaw") == "audio/pcmu"
    assert normalize_format("audio/pcma") == "audio/pcma"
    with pytest.raises(ValueError):
        normalize_format("audio/opus")
    assert bytes_per_ms("audio/pcm") == 48.0
    assert bytes_per_ms("audio/pcmu") == bytes_per_ms("audio/pcma") == 8.0


def test_pcm_input_decoder_rejects_odd_payload() -> None:
    dec = InputDecoder("audio/pcm")
    assert dec.decode(b"\x00\x00\xff\x7f").tolist() == [0.0, 32767 / 32768]
    with pytest.raises(ValueError):
        dec.decode(b"\x00\x00\x00")


@pytest.mark.parametrize("fmt", ["audio/pcm", "audio/pcmu", "audio/pcma"])
def test_output_then_input_round_trip(fmt: str) -> None:
    x = tone(440, SAMPLE_RATE, 1.0, amp=0.3)
    enc, dec = OutputEncoder(fmt), InputDecoder(fmt)
    wire = b"".join(enc.encode(x[i : i + 480]) for i in range(0, x.size, 480)) + enc.flush()
    assert len(wire) == round(1000 * bytes_per_ms(fmt))
    y = np.concatenate([dec.decode(wire[i : i + 160]) for i in range(0, len(wire), 160)] + [dec.flush()])
    assert y.size == x.size
    assert abs(peak_freq(y, SAMPLE_RATE) - 440) < 2
    # G.711 adds ~38 dB SNR quantization; the 8 kHz resampling round trip is near-transparent at 440 Hz
    assert snr_db(x[2000:-2000], y[2000:-2000]) > (60 if fmt == "audio/pcm" else 30)


def test_g711_decoder_output_is_24k() -> None:
    codes = g711.ulaw_encode((tone(1000, 8000) * 16000).astype(np.int16))
    dec = InputDecoder("g711_ulaw")
    y = np.concatenate([dec.decode(codes), dec.flush()])
    assert y.size == 24000
    assert abs(peak_freq(y, 24000) - 1000) < 2


# ------------------------------------------------------------------ wav


def test_wav_round_trip_16bit(tmp_path: object) -> None:
    from pathlib import Path

    x = tone(300, 24000, 0.5)
    p = write_wav(Path(str(tmp_path)) / "a.wav", x, 24000)
    y, rate = read_wav(p)
    assert rate == 24000
    np.testing.assert_allclose(y, x, atol=1 / 32768)
    # stdlib wave reads what we write (Chromium and ffmpeg are no stricter)
    with wave.open(str(p)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 24000, x.size)
    y2, _ = read_wav(p.read_bytes())
    np.testing.assert_array_equal(y, y2)


def test_wav_int16_written_as_is_and_stereo_downmixed() -> None:
    ints = np.array([0, 1000, -1000, 32767], dtype=np.int16)
    y, _ = read_wav(wav_bytes(ints, 8000))
    np.testing.assert_array_equal(np.round(y * 32768).astype(np.int16), ints)
    left = tone(200, 16000, 0.1)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    y, rate = read_wav(wav_bytes(stereo, 16000))
    assert rate == 16000
    np.testing.assert_allclose(y, left / 2, atol=2 / 32768)


def _wav_with_fmt(
    tag: int, bits: int, payload: bytes, rate: int = 16000, channels: int = 1, extensible: bool = False
) -> bytes:
    block = channels * bits // 8
    if extensible:
        fmt = struct.pack("<HHIIHH", 0xFFFE, channels, rate, rate * block, block, bits)
        fmt += (
            struct.pack("<HHI", 22, bits, 0)
            + struct.pack("<H", tag)
            + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        )
    else:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"LIST" + struct.pack("<I", 3) + b"abc\x00"  # odd-sized chunk with pad byte before data
    body += b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_read_float_24bit_and_extensible_wavs() -> None:
    x = np.array([0.0, 0.5, -0.5, 0.25], dtype=np.float32)
    y, _ = read_wav(_wav_with_fmt(3, 32, x.astype("<f4").tobytes()))
    np.testing.assert_array_equal(y, x)
    y, _ = read_wav(_wav_with_fmt(3, 32, x.astype("<f4").tobytes(), extensible=True))
    np.testing.assert_array_equal(y, x)
    ints = (x * 8388608).astype(np.int32).clip(-8388608, 8388607)
    raw24 = b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints)
    y, _ = read_wav(_wav_with_fmt(1, 24, raw24))
    np.testing.assert_allclose(y, x, atol=1e-6)


def test_read_wav_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        read_wav(b"not a wav file at all")
    buf = io.BytesIO()
    buf.write(b"RIFF\x04\x00\x00\x00WAVE")
    with pytest.raises(ValueError):
        read_wav(buf.getvalue())


# ------------------------------------------------------------------ levels


def test_levels() -> None:
    square = np.where(tone(100, 24000) >= 0, 1.0, -1.0).astype(np.float32)
    assert rms(square) == pytest.approx(1.0)
    assert dbfs(square) == pytest.approx(0.0, abs=1e-6)
    assert dbfs(tone(1000, 24000, amp=1.0)) == pytest.approx(-3.01, abs=0.01)
    assert dbfs(np.zeros(100, dtype=np.float32)) == DBFS_FLOOR
    assert rms(np.zeros(0, dtype=np.float32)) == 0.0
    assert is_silent(np.zeros(480, dtype=np.float32))
    assert is_silent(tone(1000, 24000, amp=0.001))  # -63 dBFS
    assert not is_silent(tone(1000, 24000, amp=0.01))  # -43 dBFS
    assert is_silent(tone(1000, 24000, amp=0.01), threshold_dbfs=-40.0)


def test_loud_until_finds_where_the_sound_fell_below_the_threshold() -> None:
    x = np.concatenate([np.full(1000, 0.1, np.float32), np.full(500, 0.001, np.float32)])
    assert loud_until(x, 100) == 1000  # -60 dBFS is quiet at the default -50
    assert loud_until(x, 100, threshold_dbfs=-70) == 1500
    assert loud_until(x[1000:], 100) == 0
    assert loud_until(x[:50], 100) == 0  # shorter than a block
    assert loud_until(x[:1030], 100) == 1030  # blocks are counted from the end
