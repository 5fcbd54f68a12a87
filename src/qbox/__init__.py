"""qbox: self-hosted sandboxes. The public SDK surface, re-exported from ``qbox.sdk``.

Importing ``qbox`` pulls in httpx and nothing of the server (no FastAPI, no SQLAlchemy).
"""

from __future__ import annotations

from qbox import sdk as _sdk
from qbox._version import __version__ as __version__
from qbox.sdk import *  # noqa: F403 - the package's public surface is exactly the SDK's

__all__ = sorted([*_sdk.__all__, "__version__"])
