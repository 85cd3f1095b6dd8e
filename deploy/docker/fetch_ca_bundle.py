"""Fetch a CA bundle while the image is built, and keep it only if it holds CA certificates.

    python3 fetch_ca_bundle.py URL DEST

URL is AWS's trust store over https (verified with the base image's CA certificates) or,
for an offline build, a local file served over http on the builder's loopback. What comes
back is checked before it is written: an error page or an empty answer fails the build
instead of a DocumentDB connection in a running task. The SHA-256 and the number of CA
certificates go to the build log, to compare with a bundle fetched by hand.
"""

from __future__ import annotations

import hashlib
import ssl
import sys
import urllib.request
from pathlib import Path

MAX_BYTES = 4 * 1024 * 1024  # the RDS global bundle is about 160 KiB


def fetch(url: str) -> bytes:
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"{url!r} is not an http(s) URL")
    with urllib.request.urlopen(url, timeout=60) as answer:
        data: bytes = answer.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ValueError(f"{url} is larger than {MAX_BYTES} bytes: not a CA bundle")
    return data


def ca_certificates(data: bytes) -> int:
    """How many CA certificates the PEM text holds; ValueError if none."""
    try:
        context = ssl.create_default_context(cadata=data.decode("ascii"))
    except (UnicodeDecodeError, ssl.SSLError) as exc:
        raise ValueError(f"not PEM certificates: {exc}") from None
    count = int(context.cert_store_stats()["x509_ca"])
    if count == 0:
        raise ValueError("no CA certificate in it")
    return count


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: fetch_ca_bundle.py URL DEST", file=sys.stderr)
        return 64
    url, dest = argv
    try:
        data = fetch(url)
        count = ca_certificates(data)
    except (OSError, ValueError) as exc:
        print(f"fetch_ca_bundle: {url}: {exc}", file=sys.stderr)
        return 1
    Path(dest).write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    print(f"fetch_ca_bundle: {dest}: {count} CA certificates, sha256 {digest}, from {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
