"""``qbox ca show``: the cluster CA's certificate and fingerprint (admins: ``hosts:read``).

Hosts joining over https pin the fingerprint (``qbox agent --ca-hash``); clients of an
``QBOX_TLS=auto`` control plane trust the certificate (``--cacert``, ``SSL_CERT_FILE``).
"""

from __future__ import annotations

import click

from qbox.cli.context import CliState, json_option, pass_state
from qbox.sdk import System


@click.group("ca")
def ca() -> None:
    """The cluster CA that control planes and hosts check each other's TLS with."""


@ca.command("show")
@json_option
@pass_state
def show(state: CliState) -> None:
    """Print the CA certificate (PEM) and its sha256 fingerprint (on stderr; --json: both)."""
    info = System.cluster_ca(config=state.config())
    if state.json:
        state.emit_json({"certificatePem": info.certificate_pem, "fingerprint": info.fingerprint})
        return
    state.env.out(info.certificate_pem.rstrip("\n"))
    state.env.err(f"fingerprint: {info.fingerprint}")
