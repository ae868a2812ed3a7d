"""The engine's emulation of OpenAI's SIP side: a SIP user agent server on UDP (aiosipua), RTP
G.711 media, the signed `realtime.call.incoming` webhook and the calls it accepts.

Rules are sans-I/O (`media`: RTP in and out, `signalling`: SDP, INVITE headers, the webhook
body); `listener` and `call` only move datagrams and HTTP requests.
"""
