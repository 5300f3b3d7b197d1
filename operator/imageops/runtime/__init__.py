"""Wiring of the operator's roles (``imageops run``).

kopf imports the official ``kubernetes`` client, when installed, only to
recognise its generated models in kopf's helpers; the operator never hands it
any (``adapters.kubehttp`` talks plain JSON), and the ~800 modules cost each
agent ~20 MiB. So kopf is imported here, first, with that import refused; the
client stays importable afterwards (the login falls back to it when kopf's own
readers find no credentials).
"""

import sys

_REFUSED = "kubernetes" not in sys.modules
if _REFUSED:
    sys.modules["kubernetes"] = None  # type: ignore[assignment]  # import raises ImportError
try:
    import kopf  # noqa: F401
finally:
    if _REFUSED and sys.modules.get("kubernetes", ...) is None:
        del sys.modules["kubernetes"]
