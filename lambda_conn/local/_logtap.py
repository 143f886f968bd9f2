"""Read the function's output on its way to where the soak sends it, counting events.

The runtime writes lambda_conn's JSON log lines to its stdout, as in Lambda. The soak
counts some of them (``rds_proxy_pinning``, ``rds_connect_retry``) for its summary: the
runtime's stdout and stderr go into a pipe, and one thread forwards every byte to the
caller's ``output`` (a file, a descriptor, ours when None, nowhere for DEVNULL) and counts
lines per event. A fleet's environments share one pipe: a line written at once, up to
PIPE_BUF (4 KB), never interleaves with another's.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections import Counter
from typing import IO, Any

#: The events counted, and the field that breaks each down: RDS Proxy pinning by
#: statement class, RDSConnector's retries (one line per failed attempt it retries) by
#: the error's code (1040, 53300, 2003...).
COUNTED = {"rds_proxy_pinning": "statement_class", "rds_connect_retry": "code"}


class LogTap:
    """``with LogTap(output) as tap:`` pass ``tap.fd`` as the runtime's output."""

    def __init__(self, output: IO[bytes] | IO[str] | int | None) -> None:
        self._output = output
        self.counts: Counter[str] = Counter()
        self.classes: dict[str, Counter[str]] = {event: Counter() for event in COUNTED}
        self._read, self.fd = os.pipe()
        self._thread = threading.Thread(target=self._pump, name="lambda_conn-log-tap", daemon=True)
        self._thread.start()

    def _forward(self) -> Any:
        out = self._output
        if out == subprocess.DEVNULL:
            return None
        if out is None:  # what the runtime would have inherited (stdout and stderr alike)
            return lambda data: os.write(1, data)
        if isinstance(out, int):
            return lambda data: os.write(out, data)
        if hasattr(out, "buffer"):  # a text file: write its bytes underneath
            return lambda data: out.buffer.write(data)
        return lambda data: out.write(data)

    def _pump(self) -> None:
        forward = self._forward()
        with os.fdopen(self._read, "rb", buffering=0) as pipe:
            pending = b""
            while True:
                chunk = pipe.read(65536)
                if not chunk:
                    break
                if forward is not None:
                    forward(chunk)
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self._count(line)
            self._count(pending)

    def _count(self, line: bytes) -> None:
        for event, field in COUNTED.items():
            marker = f'"event": "{event}"'.encode()
            if marker not in line:
                continue
            self.counts[event] += 1
            start = line.find(b"{")
            try:
                record = json.loads(line[start:]) if start >= 0 else {}
            except ValueError:
                record = {}
            self.classes[event][str(record.get(field, "?"))] += 1

    def close(self) -> None:
        """Stop writing; wait until every runtime that inherited the pipe has exited."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self._thread.join(10.0)

    def __enter__(self) -> LogTap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
