"""Fixed, obviously fake credentials for ``auditstream demo`` and tests.

The secret decodes to readable ASCII so nobody mistakes it for a leaked real key.
"""

from __future__ import annotations

import base64

DEMO_ACCESS_KEY = "auth-demo0emulator0key"
DEMO_SECRET_KEY = base64.b64encode(b"auditstream-demo-secret-not-a-real-strongdm-key").decode()


def make_demo_credentials() -> tuple[str, str]:
    """``(access_key, secret_key)`` that the emulator accepts by default."""
    return DEMO_ACCESS_KEY, DEMO_SECRET_KEY
