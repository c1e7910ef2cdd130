"""auditstream: stream StrongDM audit data into a SIEM without gaps."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("auditstream")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+local"
