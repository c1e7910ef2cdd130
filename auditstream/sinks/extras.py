"""Optional extras: libraries only some sinks need, imported only when such a sink is configured.

A sink type whose library is missing is refused at configuration time with one line naming
the ``pip install 'auditstream[EXTRA]'`` that brings it (exit 2), instead of an ImportError in
the middle of a delivery; ``auditstream`` itself never imports them otherwise.
"""

from __future__ import annotations

import importlib


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (it is, as a side effect, when it can)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def install_hint(extra: str) -> str:
    return f"pip install 'auditstream[{extra}]'"
