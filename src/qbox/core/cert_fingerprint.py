"""A certificate's fingerprint as ``sha256:<64 hex>``: how an operator names the cluster CA
(``qbox ca show``, the join command's ``--ca-hash``).

It is the SHA-256 of the certificate's DER bytes, the same as
``openssl x509 -noout -fingerprint -sha256`` prints (there: upper case, colon-separated;
both spellings are read). Standard library only: the SDK and CLI use it without the
``server`` extra.
"""

from __future__ import annotations

import hashlib
import re
import ssl

PREFIX = "sha256:"
_HEX = re.compile(r"[0-9a-f]{64}")


def fingerprint(cert_pem: str) -> str:
    """``sha256:<hex>`` of the first certificate in ``cert_pem``."""
    return PREFIX + hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert_pem)).hexdigest()


def parse_fingerprint(text: str) -> str:
    """``sha256:HEX``, ``HEX`` or OpenSSL's ``AB:CD:…`` → the canonical ``sha256:hex``.
    ValueError for anything else (a hash of another length or algorithm)."""
    raw = text.strip().lower()
    raw = raw.removeprefix(PREFIX).replace(":", "")
    if not _HEX.fullmatch(raw):
        raise ValueError(f"not a sha256 fingerprint: {text!r} (expected sha256:<64 hex digits>)")
    return PREFIX + raw
