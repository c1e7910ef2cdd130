"""auditstream: stream StrongDM audit data into a SIEM without gaps."""

import os
from importlib.metadata import PackageNotFoundError, version

# gRPC's C core logs handshake details at INFO to stderr, around our structured logs; the
# same facts reach users through our own error messages.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

try:
    __version__ = version("auditstream")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+local"
