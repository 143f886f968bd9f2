"""Numbers that make the local runtime behave like one Lambda execution environment.

They live in one place so a test can point at the limit it checks and so the next
engineer can compare them with the Lambda documentation line by line.
"""

from __future__ import annotations

RUNTIME_API_VERSION = "2018-06-01"
EXTENSIONS_API_VERSION = "2020-01-01"

# Limits of one execution environment.
FD_LIMIT = 1024
MIN_MEMORY_MB = 128
MAX_MEMORY_MB = 10_240
MAX_TIMEOUT_S = 900.0
INIT_TIMEOUT_S = 10.0
MAX_EXTENSIONS = 10

# Shutdown: the runtime gets SIGTERM only when an extension is registered, then
# SIGKILL after this grace period (500 ms when only internal extensions exist).
INTERNAL_EXTENSION_GRACE_S = 0.5

# How often the supervisor samples RSS (and descriptors) while the runtime runs: the
# only periodic wake-up. Requests (response posted, /next called), the runtime's exit
# (its pidfd) and the deadline (the poll's timeout) wake it at once.
POLL_INTERVAL_S = 0.005

# How long a soak's supervisor polls without sleeping before it blocks for the runtime's
# next request. A sleeping thread's wake-up costs more than the runtime's whole turn
# between two requests on a VM (a soak of a trivial handler ran at 80% of the raw loop
# blocking, 114-123% spinning up to 0.1-1 ms), and a busy supervisor keeps the kernel from
# putting the runtime on its core. Only where this process may use two cores or more.
SPIN_S = 0.0002

# Lambda's synchronous response limit; larger responses are refused with 413.
MAX_RESPONSE_BYTES = 6_291_556

DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT = "000000000000"
DEFAULT_VERSION = "$LATEST"
