"""``qbox ca show`` against the real control plane: the CA certificate the database holds, its
fingerprint, as text and JSON; members hold no ``hosts:read`` and are refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from qbox.cli.exit_codes import ExitCode
from qbox.core.cert_fingerprint import fingerprint
from tests.unit.cli.test_hosts import qbox
from tests.unit.server.conftest import Harness, make_harness
from tests.unit.server.helpers import add_user_with_key


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    yield from make_harness(tmp_path, database=None)


def test_show_prints_the_cluster_ca_and_its_fingerprint(harness: Harness) -> None:
    served = harness.client.get("/v1/agent/ca").json()

    # On a terminal, or piped with -o table (qbox -o table ca show > ca.crt): the PEM alone.
    for shown in (qbox(harness, "ca", "show", tty=True), qbox(harness, "-o", "table", "ca", "show")):
        assert shown.exit_code == 0, shown.output
        assert shown.stdout.strip() == served["certificatePem"].strip()
        assert shown.stderr.strip() == f"fingerprint: {fingerprint(shown.stdout)}"

    for args in (("--json",), ()):  # not a terminal: JSON unless asked otherwise
        as_json = json.loads(qbox(harness, "ca", "show", *args).stdout)
        assert as_json == served and as_json["fingerprint"] == fingerprint(as_json["certificatePem"])


def test_members_may_not_read_it(harness: Harness) -> None:
    _, key = add_user_with_key(harness.settings.data_dir)
    refused = qbox(harness, "ca", "show", key=key, tty=True)
    assert refused.exit_code == ExitCode.AUTH and "forbidden" in refused.stderr
    assert "-----BEGIN" not in refused.stdout
