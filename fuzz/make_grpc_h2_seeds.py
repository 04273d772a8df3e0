#!/usr/bin/env python3
"""Writes grpc_h2_fuzz's seeds (HTTP/2 frames after the client preface, which
the harness sends itself; 0xFF 0xFE cuts the input into reads). Headers are
HPACK literals without indexing, so the seeds need no encoder state."""
import os
import struct

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "grpc_h2_fuzz")
PATH = b"/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
CUT = b"\xff\xfe"


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(name, value):
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def headers(stream, path=PATH, method=b"POST", ctype=b"application/grpc", end_stream=False):
    block = (literal(b":method", method) + literal(b":scheme", b"http") + literal(b":path", path) +
             literal(b":authority", b"tally") + literal(b"content-type", ctype) + literal(b"te", b"trailers"))
    return frame(1, 0x4 | (0x1 if end_stream else 0), stream, block)


def grpc(message, compressed=0, length=None):
    return bytes([compressed]) + struct.pack(">I", len(message) if length is None else length) + message


def data(stream, payload, end_stream=True):
    return frame(0, 0x1 if end_stream else 0, stream, payload)


settings = frame(4, 0, 0)
request = b"\x0a\x03env\x12\x0a\x0a\x08\x0a\x03key\x12\x01v"  # domain + one descriptor
seeds = {
    "call": settings + headers(1) + data(1, grpc(request)),
    "call_in_reads": settings + CUT + headers(1) + CUT + data(1, grpc(request)[:3], False) + CUT + data(1, grpc(request)[3:]),
    "two_calls": settings + headers(1) + headers(3) + data(1, grpc(request)) + data(3, grpc(b"")),
    "unknown_path": settings + headers(1, path=b"/x.Y/Z") + data(1, grpc(request)),
    "compressed": settings + headers(1) + data(1, grpc(request, compressed=1)),
    "too_large": settings + headers(1) + data(1, grpc(b"a" * 600)),
    "wrong_length": settings + headers(1) + data(1, grpc(request, length=100)),
    "no_body": settings + headers(1, end_stream=True),
    "get": settings + headers(1, method=b"GET", end_stream=True),
    "text": settings + headers(1, ctype=b"text/plain") + data(1, b"hello"),
    "reset": settings + headers(1) + frame(3, 0, 1, struct.pack(">I", 8)) + data(1, grpc(request)),
    "ping_window_goaway": settings + frame(6, 0, 0, b"12345678") + frame(8, 0, 0, struct.pack(">I", 1000)) +
                          headers(1) + data(1, grpc(request)) + frame(7, 0, 0, struct.pack(">II", 1, 0)),
    "settings_ack": settings + frame(4, 1, 0) + headers(1) + data(1, grpc(request)),
}
for name, payload in seeds.items():
    with open(os.path.join(here, name), "wb") as f:
        f.write(payload)
