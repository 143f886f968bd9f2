"""The descriptor audit finds what tracking cannot: any descriptor left open."""

from __future__ import annotations

import json
import logging
import socket
import time
from typing import Any

import pymysql
import pytest

import lambda_conn
from lambda_conn import ConfigurationError, managed_connection


def audit_events(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    events = [json.loads(r.getMessage()) for r in caplog.records if r.name == "lambda_conn"]
    return [e for e in events if e["event"] == "descriptors_left_open"]


def test_untracked_socket_and_file_are_reported_with_their_remote(
    http_server: Any, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    kept: list[Any] = []
    accepted_before = http_server.accepted

    @managed_connection(audit_descriptors=True)
    def handler(event: object, context: object) -> str:
        sock = socket.create_connection(("127.0.0.1", http_server.port))  # no client we track
        kept.append(sock)
        # The server's accept runs on its own thread: wait for it, or its end of the
        # connection may open only after the audit has looked.
        deadline = time.monotonic() + 5.0
        while http_server.accepted == accepted_before and time.monotonic() < deadline:
            time.sleep(0.002)
        kept.append(open(tmp_path / "cache.bin", "wb"))  # noqa: SIM115 - the leak under test
        return "ok"

    before = lambda_conn.stats()["leaked_descriptors"]
    try:
        with caplog.at_level(logging.WARNING, logger="lambda_conn"):
            assert handler({}, None) == "ok"
        (event,) = audit_events(caplog)
        # Three: our socket, our file, and the test server's end of the connection, since
        # that server runs in this process too.
        assert event["count"] == 3
        remotes = [d["remote"] for d in event["descriptors"] if d["kind"] == "socket"]
        assert f"127.0.0.1:{http_server.port}" in remotes
        files = [d["path"] for d in event["descriptors"] if d["kind"] == "file"]
        assert len(files) == 1 and files[0].endswith("cache.bin")
        assert lambda_conn.stats()["leaked_descriptors"] == before + 3
    finally:
        for obj in kept:
            obj.close()


def test_what_the_scope_closed_is_not_reported(
    mariadb: Any, caplog: pytest.LogCaptureFixture
) -> None:
    @managed_connection(audit_descriptors=True)
    def handler(event: object, context: object) -> None:
        pymysql.connect(**mariadb.connect_kwargs()).query("SELECT 1")

    with caplog.at_level(logging.WARNING, logger="lambda_conn"):
        handler({}, None)
    assert audit_events(caplog) == []


def test_audit_is_off_by_default_and_on_from_the_environment(
    http_server: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    kept: list[socket.socket] = []

    def handler(event: object, context: object) -> None:
        kept.append(socket.create_connection(("127.0.0.1", http_server.port)))

    try:
        with caplog.at_level(logging.WARNING, logger="lambda_conn"):
            managed_connection(handler)({}, None)
            assert audit_events(caplog) == []
            monkeypatch.setenv("LAMBDA_CONN_AUDIT_DESCRIPTORS", "1")
            managed_connection(handler)({}, None)
            assert len(audit_events(caplog)) == 1
    finally:
        for sock in kept:
            sock.close()


def test_bad_audit_settings_name_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDA_CONN_AUDIT_DESCRIPTORS", "sometimes")
    with pytest.raises(ConfigurationError, match="LAMBDA_CONN_AUDIT_DESCRIPTORS='sometimes'"):
        managed_connection(lambda event, context: None)
    monkeypatch.delenv("LAMBDA_CONN_AUDIT_DESCRIPTORS")
    with pytest.raises(ConfigurationError, match="audit_descriptors"):
        managed_connection(audit_descriptors="yes")  # type: ignore[call-overload]


def test_audit_that_cannot_list_descriptors_never_fails_the_request(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import os

    @managed_connection(audit_descriptors=True)
    def handler(event: object, context: object) -> str:
        return "answered"

    real_listdir = os.listdir

    def emfile(path: Any) -> Any:
        if str(path) == "/proc/self/fd":
            raise OSError(24, "Too many open files")
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", emfile)
    with caplog.at_level(logging.WARNING, logger="lambda_conn"):
        assert handler({}, None) == "answered"
    assert any("descriptor_audit_failed" in r.getMessage() for r in caplog.records)
