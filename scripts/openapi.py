"""Write docs/openapi.json, the control plane's OpenAPI document (`make openapi`).

A unit test (tests/unit/server/test_openapi_document.py) fails when the file
and the routes drift apart; run this after adding or changing a route.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from qbox.server.app import create_app
from qbox.server.http.openapi import render
from qbox.server.settings import ServerSettings

TARGET = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"


def main() -> int:
    with tempfile.TemporaryDirectory() as data_dir:  # the app factory touches nothing; settings want one
        text = render(create_app(ServerSettings(data_dir=Path(data_dir), agent_secret="unused")))
    TARGET.write_text(text)
    print(f"wrote {TARGET} ({len(text)} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
