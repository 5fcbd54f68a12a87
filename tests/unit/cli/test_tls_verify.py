"""``--no-tls-verify`` and a profile's ``verify_tls: false`` against a real HTTPS server on loopback
whose certificate no one signed."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from qbox.cli.environment import Environment
from qbox.cli.exit_codes import ExitCode
from qbox.cli.main import main


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class SystemHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = json.dumps({"version": "9.9.9", "apiVersion": "v1"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def https_url(tmp_path: Path) -> Iterator[str]:
    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SystemHandler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def qbox(tmp_path: Path, *args: str, **environ: str) -> Result:
    env = Environment(environ={"XDG_CONFIG_HOME": str(tmp_path / "config"), "QBOX_MAX_RETRIES": "0", **environ},
                      stdout_isatty=True, stdin_isatty=False)  # the real network, no injected transport
    return CliRunner().invoke(main, list(args), obj=env, catch_exceptions=False)


def test_no_tls_verify_reaches_a_server_with_an_unsigned_certificate(https_url: str, tmp_path: Path) -> None:
    refused = qbox(tmp_path, "--base-url", https_url, "system")
    assert refused.exit_code == ExitCode.TRANSIENT and "certificate" in refused.stderr.lower()
    accepted = qbox(tmp_path, "--base-url", https_url, "--no-tls-verify", "system")
    assert (accepted.exit_code, accepted.stdout) == (0, "9.9.9\n")


def test_a_profiles_verify_tls_false_does_the_same(https_url: str, tmp_path: Path) -> None:
    path = tmp_path / "config" / "qbox" / "config.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump({"active_profile": "lab", "profiles": {"lab": {"base_url": https_url,
                                                                                   "verify_tls": False}}}))
    path.chmod(0o600)
    assert qbox(tmp_path, "system").stdout == "9.9.9\n"
    path.write_text(yaml.safe_dump({"active_profile": "lab", "profiles": {"lab": {"base_url": https_url}}}))
    assert qbox(tmp_path, "system").exit_code == ExitCode.TRANSIENT
