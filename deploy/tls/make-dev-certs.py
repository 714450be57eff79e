#!/usr/bin/env python3
"""Make a development CA and the TLS certificates deploy/ needs: PostgreSQL, Redis, Mosquitto and a client
certificate for the vnh service.

    python3 deploy/tls/make-dev-certs.py                  # writes deploy/tls/dev/ (git-ignored)
    python3 deploy/tls/make-dev-certs.py --out DIR --san vnh.example.internal --san 10.0.0.5

Needs the `cryptography` package (a vnh dependency: `.venv/bin/python deploy/tls/make-dev-certs.py` works anywhere
vnh is installed; otherwise `pip install cryptography`).

Files (keys 0600, certificates 0644, the directory 0700):
    ca.crt, ca.key                   the development CA (devices and the vnh service trust ca.crt)
    postgres.crt, postgres.key       server certificates, each valid for its compose service name, the Kubernetes
    redis.crt, redis.key             names below, localhost, 127.0.0.1, ::1 and every --san
    mosquitto.crt, mosquitto.key
    vnh-client.crt, vnh-client.key   a client certificate (CN vnh-service) for mutual TLS, where a server asks

An existing CA in the directory is kept and reused (devices already trusting it keep working); the server and
client certificates are issued anew on every run. For development and tests only: production certificates come from
the site's PKI or cert-manager (deploy/README.md, "TLS"). Never commit the keys.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from pathlib import Path

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:  # pragma: no cover - depends on the interpreter used
    sys.exit("make-dev-certs: needs the `cryptography` package (run it with vnh's virtualenv, or pip install it)")

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

SERVERS = ("postgres", "redis", "mosquitto")
# Where the servers may be reached from: compose service names, the Kubernetes-style names a site might give them
# inside namespace `vnh`, and the loopback (health checks, tests, port-forwarding).
COMMON_NAMES = ("localhost", "127.0.0.1", "::1")


def new_key(kind: str) -> PrivateKey:
    # P-256 by default: fast and universal in TLS 1.2+; RSA 2048 for devices whose TLS stack knows nothing else
    return rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "rsa" else \
        ec.generate_private_key(ec.SECP256R1())


def write_private(path: Path, key: PrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.chmod(0o644)


def names(values: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for value in dict.fromkeys(values):  # ordered, without repeats
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(value)))
        except ValueError:
            out.append(x509.DNSName(value))
    return out


def make_ca(days: int, kind: str) -> tuple[x509.Certificate, PrivateKey]:
    key = new_key(kind)
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vnh development"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "vnh development CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue(ca: x509.Certificate, ca_key: PrivateKey, common_name: str, alt_names: list[str], *, server: bool,
          days: int, kind: str) -> tuple[x509.Certificate, PrivateKey]:
    key = new_key(kind)
    now = datetime.datetime.now(datetime.timezone.utc)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vnh development"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=kind == "rsa", key_cert_sign=False,
                                     crl_sign=False, content_commitment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names(alt_names)), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def load_ca(out: Path) -> tuple[x509.Certificate, PrivateKey] | None:
    cert_path, key_path = out / "ca.crt", out / "ca.key"
    if not (cert_path.exists() and key_path.exists()):
        return None
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        sys.exit(f"make-dev-certs: {key_path} is neither an EC nor an RSA key")
    return x509.load_pem_x509_certificate(cert_path.read_bytes()), key


def server_names(server: str, extra: list[str]) -> list[str]:
    return [server, f"{server}.vnh", f"{server}.vnh.svc", f"{server}.vnh.svc.cluster.local", *COMMON_NAMES, *extra]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "dev",
                        help="directory to write to (default: deploy/tls/dev, git-ignored)")
    parser.add_argument("--san", action="append", default=[], metavar="NAME",
                        help="another DNS name or IP address for every server certificate (repeatable)")
    parser.add_argument("--days", type=int, default=825, help="validity of the certificates (default 825)")
    parser.add_argument("--key-type", choices=("ec", "rsa"), default="ec", help="ec (P-256, default) or rsa (2048)")
    parser.add_argument("--new-ca", action="store_true", help="replace an existing CA (every device must trust anew)")
    args = parser.parse_args(argv)

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    existing = None if args.new_ca else load_ca(out)
    if existing is None:
        ca, ca_key = make_ca(args.days, args.key_type)
        write_private(out / "ca.key", ca_key)
        write_cert(out / "ca.crt", ca)
        print(f"made a new CA: {out / 'ca.crt'}")
    else:
        ca, ca_key = existing
        print(f"kept the CA in {out / 'ca.crt'}")
    for server in SERVERS:
        cert, key = issue(ca, ca_key, server, server_names(server, args.san), server=True, days=args.days,
                          kind=args.key_type)
        write_private(out / f"{server}.key", key)
        write_cert(out / f"{server}.crt", cert)
    cert, key = issue(ca, ca_key, "vnh-service", [], server=False, days=args.days, kind=args.key_type)
    write_private(out / "vnh-client.key", key)
    write_cert(out / "vnh-client.crt", cert)
    print(f"wrote {', '.join(s + '.crt/.key' for s in SERVERS)} and vnh-client.crt/.key to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
