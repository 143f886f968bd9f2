"""The Runtime API's request parser: the one-pass path for CRLF heads (libcurl, urllib)
and the line-by-line path for the rest read the same requests the same way."""

from __future__ import annotations

import pytest

from lambda_conn.local._api_server import _BadRequest, _encode, _parse_by_line, parse_request
from lambda_conn.local._state import ACCEPTED, Invocation, Reply

CURL_POST = (
    b"POST /2018-06-01/runtime/invocation/51d61ce1/error HTTP/1.1\r\n"
    b"Host: 127.0.0.1:36045\r\nAccept: */*\r\ncontent-type: application/json\r\n"
    b"Lambda-Runtime-Function-Error-Type: Runtime.Custom\r\n"
    b"User-Agent: aws-lambda-python/3.11.7-4.2.2\r\ncontent-length: 2\r\n\r\n{}"
)


@pytest.mark.parametrize("parse", [parse_request, _parse_by_line])
def test_a_libcurl_request_is_read_whole(parse):
    request = parse(bytearray(CURL_POST + b"GET /next"))  # a second request begins
    assert request is not None
    assert (request.method, request.path, request.body) == (
        "POST",
        "/2018-06-01/runtime/invocation/51d61ce1/error",
        b"{}",
    )
    assert request.headers.get("lambda-runtime-function-error-type") == "Runtime.Custom"
    assert request.headers.get("lambda-extension-identifier") is None
    assert request.keep_alive and request.end == len(CURL_POST)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"GET /a?x=1 HTTP/1.1\r\n\r\n", ("GET", "/a", b"", True)),
        (b"\r\nGET /a HTTP/1.1\r\n\r\n", ("GET", "/a", b"", True)),  # leading empty line
        (b"GET /a HTTP/1.1\nHost: x\n\n", ("GET", "/a", b"", True)),  # bare LF
        (b"GET /a HTTP/1.0\r\n\r\n", ("GET", "/a", b"", False)),
        (b"GET /a HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", ("GET", "/a", b"", True)),
        (b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n", ("GET", "/a", b"", False)),
        (
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n",
            ("POST", "/a", b"abc", True),
        ),
        (b"nonsense\r\n\r\n", ("", "", b"", False)),  # answered 400, then closed
    ],
)
def test_heads_of_every_shape(raw, expected):
    request = parse_request(bytearray(raw))
    assert request is not None
    assert (request.method, request.path, request.body, request.keep_alive) == expected
    assert request.end == len(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /a HTTP/1.1\r\nHost: x\r\n",  # head not ended yet
        b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nab",  # body still arriving
        b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    ],
)
def test_an_incomplete_request_waits_for_more(raw):
    assert parse_request(bytearray(raw)) is None


@pytest.mark.parametrize(
    "raw",
    [
        b"POST /a HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        b"POST /a HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n",
    ],
)
def test_what_cannot_be_read_closes_the_connection(raw):
    with pytest.raises(_BadRequest):
        parse_request(bytearray(raw))


@pytest.mark.parametrize("keep_alive", [True, False])
def test_a_constant_reply_rendered_once_is_the_same_bytes_as_rendered_each_time(keep_alive):
    # ACCEPTED answers every posted response from its rendering kept at import; an equal
    # Reply that is another object is rendered afresh: both must be the same bytes.
    fresh = Reply(ACCEPTED.status, ACCEPTED.body, ACCEPTED.headers)
    assert fresh is not ACCEPTED
    wire = _encode(ACCEPTED, keep_alive)
    assert wire == _encode(fresh, keep_alive)
    assert wire.startswith(b"HTTP/1.1 202 Accepted\r\n") and wire.endswith(
        b'\r\n\r\n{"status": "OK"}'
    )
    assert (b"Connection: close\r\n" in wire) is not keep_alive


@pytest.mark.parametrize("keep_alive", [True, False])
def test_the_next_reply_is_the_event_with_lambdas_headers_in_order(keep_alive):
    # rendered from one string per invocation (next_head), the same bytes as the header
    # pairs rendered one by one, in Lambda's order
    inv = Invocation(
        request_id="d930ca07-564b-4f40-9d72-1107461c53d4",
        payload=b'{"bench": 1}',
        deadline_ms=1764790000123,
        trace_id="Root=1-6930a0b0-0123456789abcdef01234567;Parent=0123456789abcdef;Sampled=0",
        function_arn="arn:aws:lambda:us-east-1:000000000000:function:app",
    )
    pairs = (
        ("Content-Type", "application/json"),
        ("Lambda-Runtime-Aws-Request-Id", inv.request_id),
        ("Lambda-Runtime-Deadline-Ms", str(inv.deadline_ms)),
        ("Lambda-Runtime-Invoked-Function-Arn", inv.function_arn),
        ("Lambda-Runtime-Trace-Id", inv.trace_id),
        ("Lambda-Runtime-Client-Context", ""),
        ("Lambda-Runtime-Cognito-Identity", ""),
    )
    wire = _encode(Reply(200, inv.payload, head=inv.next_head()), keep_alive)
    assert wire == _encode(Reply(200, inv.payload, pairs), keep_alive)
    expected = b"HTTP/1.1 200 OK\r\n" + b"".join(
        f"{name}: {value}\r\n".encode() for name, value in pairs
    )
    expected += b"Content-Length: 12\r\n"
    expected += b"" if keep_alive else b"Connection: close\r\n"
    assert wire == expected + b'\r\n{"bench": 1}'
