"""Parley: real-time voice agents on the OpenAI Realtime protocol."""

__version__ = "0.1.0"
