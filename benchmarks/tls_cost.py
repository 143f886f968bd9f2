"""What a per-invocation MySQL TLS connect costs, counted in instructions (load-independent).

    python3 benchmarks/tls_cost.py                          # needs mariadbd and valgrind
    python3 benchmarks/tls_cost.py --out benchmarks/TLS_COST.md

Wall-clock ratios on a shared machine move with the load; instruction counts do not. For
each case this runs ``RDSConnector.connect().close()`` N times under
``valgrind --tool=callgrind``, collecting only inside the loop (it runs within
``functools.reduce``, the function callgrind is told to collect in: warm-up, imports and
interpreter start-up are left out), and reports instructions per connect (the client's
connecting thread: Python, PyMySQL, OpenSSL; the kernel's share excluded). The resumed
TLS 1.3 connect is split into what it is made of: the handshake (``SSL_do_handshake``),
the session copies CPython makes when a session is offered (``session=``) or read back
(``SSLSocket.session``), and everything else. The
server's CPU time per connect comes from ``/proc/<mariadbd>/stat`` over a loop run without
valgrind (clock ticks: a mean over many connects). Nothing here is asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ROOT

CASES = {
    "plain": "no TLS (reference)",
    "full13": "TLS 1.3, full handshake (resume_tls=False)",
    "resumed13": "TLS 1.3, session resumed (the default)",
    "resumed12": "TLS 1.2, session resumed (maximum_version=TLSv1_2)",
}
# Inclusive instruction counts worth naming in the resumed connect's breakdown.
PARTS = {
    "SSL_do_handshake": "TLS handshake (SSL_do_handshake: key exchange, key schedule, Finished)",
    "d2i_SSL_SESSION": "session copies by CPython (i2d/d2i: re-parses the server certificate)",
    "i2d_SSL_SESSION": None,  # folded into the line above
}


def server_info(server: Any) -> dict[str, Any]:
    """What a child process needs to connect to ``server`` (a TLS MariaDBServer)."""
    return {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "password": server.password,
        "database": server.database,
        "ca": server.tls.ca,
        "pid": server.pid,
    }


def connector(info: dict[str, Any], case: str) -> Any:
    from lambda_conn import RDSConnector

    options: dict[str, Any] = {
        "port": info["port"],
        "user": info["user"],
        "password": info["password"],
        "database": info["database"],
    }
    if case == "plain":
        return RDSConnector(info["host"], tls=False, **options)
    rds = RDSConnector(info["host"], ssl_ca=info["ca"], resume_tls=case != "full13", **options)
    if case == "resumed12":
        context = ssl.create_default_context(cafile=info["ca"])
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        rds._ssl = context  # a context of its own: the shared one stays TLS 1.3
    return rds


def loop(info_path: str, case: str, n: int) -> None:
    """The measured process: 3 warm-up connects, then ``n`` inside ``functools.reduce``."""
    import functools

    info = json.loads(Path(info_path).read_text())
    rds = connector(info, case)
    for _ in range(3):
        rds.connect().close()

    def connect(reused: int, _: int) -> int:
        conn = rds.connect()
        sock = conn._sock
        resumed = isinstance(sock, ssl.SSLSocket) and sock.session_reused
        conn.close()
        return reused + bool(resumed)

    reused = functools.reduce(connect, range(n), 0)  # callgrind collects in here only
    print(json.dumps({"reused": reused, "n": n}))


def _totals(path: Path, wanted: Any = None) -> tuple[int, dict[str, int]]:
    wanted = PARTS if wanted is None else wanted
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    total = int(re.search(r"([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", text).group(1).replace(",", ""))  # type: ignore[union-attr]
    parts: dict[str, int] = {}
    for line in text.splitlines():
        found = re.match(r"\s*([\d,]+) \([^)]*\)\s+\S*?:?(\w+) \[", line)
        if found and found.group(2) in wanted:
            parts[found.group(2)] = parts.get(found.group(2), 0) + int(
                found.group(1).replace(",", "")
            )
    return total, parts


def instructions(info_path: str, case: str, n: int, work: Path) -> dict[str, Any]:
    out = work / f"{case}.callgrind"
    proc = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--collect-atstart=no",
            "--toggle-collect=functools_reduce",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--loop",
            info_path,
            case,
            str(n),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    total, parts = _totals(out)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "per_connect": total / n,
        "parts": {k: parts.get(k, 0) / n for k in PARTS},
        "reused": result["reused"],
        "n": n,
    }


def server_cpu_ms(info: dict[str, Any], case: str, n: int) -> float:
    def ticks() -> int:
        fields = Path(f"/proc/{info['pid']}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    rds = connector(info, case)
    for _ in range(3):
        rds.connect().close()
    before = ticks()
    for _ in range(n):
        rds.connect().close()
    return (ticks() - before) / os.sysconf("SC_CLK_TCK") / n * 1000


# Inclusive counts worth naming on the server's side of a connect (OpenSSL's exports).
SERVER_PARTS = {
    "SSL_do_handshake": "TLS handshake (SSL_accept)",
    "EVP_PKEY_generate": "key exchange: the server's X25519 key pair",
    "EVP_PKEY_derive": "key exchange: the shared secret",
    "EVP_DigestSign": "CertificateVerify signature (full handshakes)",
    "d2i_SSL_SESSION": "the offered ticket's session parsed",
    "i2d_SSL_SESSION": "new tickets' sessions serialised",
}
SERVER_CASES = ("plain", "full13", "resumed13", "resumed12")


def _callgrind_server(out: Path, key: str) -> Any:
    """A private MariaDB under callgrind, collecting only in its connection threads
    (``handle_one_connection``), zeroed and dumped around each case."""
    from tests.servers.mariadb import MariaDBServer

    class Measured(MariaDBServer):
        def command(self) -> list[str]:
            return [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                "--collect-atstart=no",
                "--toggle-collect=handle_one_connection",
                *super().command(),
            ]

    # InnoDB reserves address space for its largest buffer pool, which valgrind refuses.
    return Measured(
        tls=True,
        tls_key=key,
        startup_timeout=300,
        max_connections=500,
        innodb_buffer_pool_size_max="32M",
    )


def server_instructions(server: Any, info: dict[str, Any], n: int, out: Path) -> dict[str, Any]:
    """Server instructions per connect and their parts, for each of SERVER_CASES."""
    results: dict[str, Any] = {}
    for dump, case in enumerate(SERVER_CASES, start=1):
        rds = connector(info, case)
        for _ in range(3):
            rds.connect().close()
        subprocess.run(
            ["callgrind_control", "-z", str(server.pid)], capture_output=True, check=True
        )
        for _ in range(n):
            rds.connect().close()
        time.sleep(0.5)  # the last COM_QUIT handled
        subprocess.run(
            ["callgrind_control", "-d", str(server.pid)], capture_output=True, check=True
        )
        total, parts = _totals(Path(f"{out}.{dump}"), SERVER_PARTS)
        results[case] = {
            "per_connect": total / n,
            "parts": {k: parts.get(k, 0) / n for k in SERVER_PARTS},
        }
    return results


def keys_report(args: Any) -> str:
    """Client and server instructions per connect, RSA 2048 (what RDS serves) against an
    ECDSA P-256 server certificate, both sides under callgrind."""
    sys.path.insert(0, str(ROOT))
    started = time.monotonic()
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for key in ("rsa2048", "p256"):
            server = _callgrind_server(work / f"server-{key}", key)
            try:
                assert server.tls is not None and server.pid is not None
                info = server_info(server)
                info_path = work / f"{key}.json"
                info_path.write_text(json.dumps(info))
                client = {
                    c: instructions(str(info_path), c, args.connects, work)
                    for c in ("plain", "resumed13")
                }
                rows[key] = {
                    "client": client,
                    "server": server_instructions(
                        server, info, args.connects, work / f"server-{key}"
                    ),
                }
                cert_der = len(
                    ssl.PEM_cert_to_DER_cert(Path(server.options["ssl_cert"]).read_text())
                )  # type: ignore[arg-type]
                rows[key]["cert_bytes"] = cert_der
            finally:
                server.close()
    elapsed = time.monotonic() - started
    labels = {"rsa2048": "RSA 2048 (as RDS)", "p256": "ECDSA P-256"}
    lines = [
        "## Server and client instructions per connect, by server key type",
        "",
        f"`python3 benchmarks/tls_cost.py --keys` in {elapsed:.0f} s, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {ssl.OPENSSL_VERSION}; the "
        "private MariaDB itself under callgrind (collecting in its connection threads only: "
        "greeting, TLS, authentication, the session's end), zeroed after 3 warm-up connects "
        f"and dumped after {args.connects}; the client as above. Instructions per connect:",
        "",
        "| server key (leaf certificate DER bytes) | case | server | client |",
        "| --- | --- | ---: | ---: |",
    ]
    for key, row in rows.items():
        for case in SERVER_CASES:
            client = row["client"].get(case)
            cell = f"{client['per_connect'] / 1e6:.2f} M" if client else "-"
            lines.append(
                f"| {labels[key]} ({row['cert_bytes']}) | {CASES[case]} | "
                f"{row['server'][case]['per_connect'] / 1e6:.2f} M | {cell} |"
            )
    lines += [
        "",
        "Server parts (inclusive, per connect; OpenSSL's exported functions):",
        "",
        "| server key | case | " + " | ".join(SERVER_PARTS.values()) + " |",
        "| --- | --- | " + " | ".join("---:" for _ in SERVER_PARTS) + " |",
    ]
    for key, row in rows.items():
        for case in ("full13", "resumed13", "resumed12"):
            parts = row["server"][case]["parts"]
            lines.append(
                f"| {labels[key]} | {CASES[case]} | "
                + " | ".join(f"{parts[k] / 1e6:.2f} M" for k in SERVER_PARTS)
                + " |"
            )
    lines += ["", "Client parts of the resumed TLS 1.3 connect:", ""]
    lines += [
        "| server key | " + " | ".join(v for v in PARTS.values() if v) + " |",
        "| --- | ---: | ---: |",
    ]
    for key, row in rows.items():
        parts = row["client"]["resumed13"]["parts"]
        lines.append(
            f"| {labels[key]} | {parts['SSL_do_handshake'] / 1e6:.2f} M | "
            f"{(parts['d2i_SSL_SESSION'] + parts['i2d_SSL_SESSION']) / 1e6:.2f} M |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loop", nargs=3, metavar=("INFO", "CASE", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--connects", type=int, default=40, help="connects per case under valgrind")
    parser.add_argument("--server-connects", type=int, default=300)
    parser.add_argument("--out", help="write the markdown here too")
    parser.add_argument(
        "--keys",
        action="store_true",
        help="the server under callgrind too, RSA 2048 against ECDSA P-256 certificates",
    )
    args = parser.parse_args(argv)
    if args.loop:
        loop(args.loop[0], args.loop[1], int(args.loop[2]))
        return
    if args.keys:
        markdown = keys_report(args)
        print(markdown)
        if args.out:
            Path(args.out).write_text(markdown)
        return
    for tool in ("valgrind", "callgrind_annotate"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: install valgrind")
    sys.path.insert(0, str(ROOT))
    from tests.servers.mariadb import MariaDBServer

    started = time.monotonic()
    load = os.getloadavg()
    with (
        MariaDBServer(tls=True, max_connections=500) as server,
        tempfile.TemporaryDirectory() as tmp,
    ):
        assert server.tls is not None and server.pid is not None
        version = server.query("SELECT VERSION()")[0][0]
        info = server_info(server)
        work = Path(tmp)
        info_path = work / "server.json"
        info_path.write_text(json.dumps(info))
        results = {case: instructions(str(info_path), case, args.connects, work) for case in CASES}
        for case in CASES:
            results[case]["server_ms"] = server_cpu_ms(info, case, args.server_connects)
    elapsed = time.monotonic() - started
    plain = results["plain"]["per_connect"]
    lines = [
        "## What a per-invocation MySQL connect costs, in instructions",
        "",
        f"`python3 benchmarks/tls_cost.py` in {elapsed:.0f} s, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; Python "
        f"{sys.version.split()[0]}, {ssl.OPENSSL_VERSION}; private MariaDB {version} on "
        f"loopback, RSA 2048 server certificate, verified against its CA; load average "
        f"{load[0]:.1f} at the start (instruction counts do not depend on it).",
        "",
        "Client instructions per `RDSConnector.connect()` + `close()` (callgrind, "
        f"mean of {args.connects} connects after 3 warm-ups, PyMySQL and OpenSSL "
        "included); server CPU "
        f"per connect from /proc (mean of {args.server_connects}, clock ticks, load-"
        "dependent):",
        "",
        "| case | client instructions | ratio to no TLS | resumed | server CPU |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for case, label in CASES.items():
        r = results[case]
        resumed = f"{r['reused']} of {r['n']}" if case != "plain" else "-"
        lines.append(
            f"| {label} | {r['per_connect'] / 1e6:.2f} M | {r['per_connect'] / plain:.1f}x "
            f"| {resumed} | {r['server_ms']:.2f} ms |"
        )
    r = results["resumed13"]
    handshake = r["parts"]["SSL_do_handshake"]
    copies = r["parts"]["d2i_SSL_SESSION"] + r["parts"]["i2d_SSL_SESSION"]
    rest = r["per_connect"] - plain - handshake - copies
    lines += [
        "",
        "Where the resumed TLS 1.3 connect's instructions go, beyond the plaintext connect:",
        "",
        "| part | instructions |",
        "| --- | ---: |",
        f"| {PARTS['SSL_do_handshake']} | {handshake / 1e6:.2f} M |",
        f"| {PARTS['d2i_SSL_SESSION']} | {copies / 1e6:.2f} M |",
        f"| the rest (SSL object, record layer, Python's ssl wrappers) | {rest / 1e6:.2f} M |",
        "",
    ]
    markdown = "\n".join(lines)
    print(markdown)
    if args.out:
        Path(args.out).write_text(markdown)


if __name__ == "__main__":
    main()
