"""The TLS certificate of Asterisk's HTTPS server, which carries SIP over secure WebSocket (WSS) for browser phones.

Why generated here: a certificate with its private key is a secret of the instance, never committed. It is made
once per runtime folder (self-signed with openssl, for the SIP host and the loopback names) when the Asterisk
configuration is rendered -- at `ccpbx-ctl setup` and at every start, so a fresh machine or a test run gets one --
and kept afterwards (delete the two files to make a new one, e.g. after changing `sip.public_host`). A real
deployment replaces them with a certificate its users' browsers trust (same file names).
"""

from __future__ import annotations

import ipaddress
import subprocess
import tempfile
from pathlib import Path

CERT_NAME = "wss-cert.pem"
KEY_NAME = "wss-key.pem"
VALID_DAYS = 825  # the longest validity browsers accept for a TLS server certificate


def subject_alt_names(host: str) -> list[str]:
    """The names the certificate is valid for: the SIP host (an IP address or a DNS name) and the loopback."""
    names = ["DNS:localhost", "IP:127.0.0.1", "IP:::1"]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        entry = f"DNS:{host}" if host and all(c.isalnum() or c in ".-" for c in host) else ""
    else:
        entry = "" if ip.is_unspecified else f"IP:{ip}"
    if entry and entry not in names:
        names.insert(0, entry)
    return names


def ensure_certificate(folder: Path, host: str) -> tuple[Path, Path]:
    """The (certificate, key) in `folder`, generated when missing; the key is readable by its owner only."""
    cert, key = folder / CERT_NAME, folder / KEY_NAME
    if cert.is_file() and key.is_file():
        return cert, key
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    cn = host if host and host not in ("0.0.0.0", "::") else "localhost"
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        tmp_cert, tmp_key = Path(tmp) / CERT_NAME, Path(tmp) / KEY_NAME
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-sha256", "-days", str(VALID_DAYS), "-subj", f"/O=ccpbx/CN={cn}",
             "-addext", "subjectAltName=" + ",".join(subject_alt_names(host)),
             "-addext", "extendedKeyUsage=serverAuth",
             "-keyout", str(tmp_key), "-out", str(tmp_cert)],
            check=True, capture_output=True, timeout=60)
        tmp_key.chmod(0o600)
        tmp_key.replace(key)
        tmp_cert.replace(cert)
    return cert, key
