"""Audio utilities: PCM16 <-> float32, streaming resampling, G.711, session formats, WAV, levels.

Internally all audio is mono float32 in [-1, 1]; the wire rate is 24 kHz.
"""

from parley.audio.formats import InputDecoder, OutputEncoder, bytes_per_ms, normalize_format
from parley.audio.levels import dbfs, is_silent, rms
from parley.audio.pcm import SAMPLE_RATE, duration_ms, float_to_pcm16, pcm16_to_float
from parley.audio.resample import StreamResampler, resample
from parley.audio.wav import read_wav, wav_bytes, write_wav

__all__ = [
    "SAMPLE_RATE",
    "InputDecoder",
    "OutputEncoder",
    "StreamResampler",
    "bytes_per_ms",
    "dbfs",
    "duration_ms",
    "float_to_pcm16",
    "is_silent",
    "normalize_format",
    "pcm16_to_float",
    "read_wav",
    "resample",
    "rms",
    "wav_bytes",
    "write_wav",
]
