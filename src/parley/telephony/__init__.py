"""Phone calls: the protocol rules of telephony providers, without I/O.

`twilio_stream`: Twilio Media Streams (frames in and out, mark bookkeeping, what the caller heard);
`tokens`: one-time tokens that tie a media stream to the signed webhook that started it.
The transports (the server's routes, the bridge to the upstream) live in `parley.server`.
"""
