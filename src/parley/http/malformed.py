"""uvicorn's HTTP protocols, answering a request they cannot parse with our JSON error.

uvicorn refuses a malformed request (a header line without a colon, a bad Content-Length, ...)
itself, before any app sees it, with a plain-text 400 built in `send_400_response`; these
subclasses build the same response with the OpenAI-shaped body. Pass one as uvicorn's `http=`
(`JsonErrorsProtocol`: httptools, which uvicorn's "auto" picks too).
"""

from __future__ import annotations

import asyncio
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .errors import error_body


def _body(message: str) -> bytes:
    return json.dumps(error_body(400, message, "invalid_http_request")).encode()


class JsonErrorsH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        body = _body(msg)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body),
                      h11.EndOfMessage()):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()


class JsonErrorsHttpToolsProtocol(HttpToolsProtocol):
    def send_400_response(self, msg: str) -> None:
        body = _body(msg)
        content = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            content += [name, b": ", value, b"\r\n"]
        content += [b"content-type: application/json\r\n", b"content-length: " + str(len(body)).encode() + b"\r\n",
                    b"connection: close\r\n\r\n", body]
        self.transport.write(b"".join(content))
        self.transport.close()


# uvicorn[standard] (a dependency) brings httptools, which uvicorn's "auto" then picks.
JsonErrorsProtocol: type[asyncio.Protocol] = JsonErrorsHttpToolsProtocol
