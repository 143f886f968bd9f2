"""Real servers for the test suite (no mocks): private MariaDB, counting HTTP, silent TCP."""

from tests.servers.fds import open_fds, raise_fd_limit, socket_fds, tcp_peers
from tests.servers.http import CountingHTTPServer
from tests.servers.mariadb import (
    MISSING_MESSAGE,
    MariaDBError,
    MariaDBNotInstalled,
    MariaDBServer,
)
from tests.servers.silent import SilentTCPServer

__all__ = [
    "MISSING_MESSAGE",
    "CountingHTTPServer",
    "MariaDBError",
    "MariaDBNotInstalled",
    "MariaDBServer",
    "SilentTCPServer",
    "open_fds",
    "raise_fd_limit",
    "socket_fds",
    "tcp_peers",
]
