"""An EK certificate checked against the vTPM manufacturer's CA, with `cryptography.x509`.

``pvgrubctl vtpm create`` has swtpm_localca issue each vTPM's EK certificate
(NV index 0x01c00002) from a local CA: an issuer certificate signed by a
self-signed root (``ca-chain.pem``: both).  A verifier that trusts that CA
and holds a certificate for an EK knows the EK belongs to a vTPM this host
manufactured.  The checks, each a one-line refusal naming the certificate:

* the chain: from the EK certificate up, each certificate's issuer is a
  certificate of the CA file (subject equals issuer name, and its signature
  verifies with that certificate's key), each issuer a CA (basicConstraints
  cA true), ending at a self-signed certificate of the CA file (RFC 5280
  §6.1, without policies or name constraints, which these CAs do not use);
* every certificate on the chain is within its validity period now;
* the EK certificate's public key is the EK public key the challenge is made
  for (the same RSA modulus and exponent, or the same curve point).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from pvgrub_py.attest.quote import PublicKey
from pvgrub_py.errors import InputError

#: An EK certificate's chain is two or three certificates; never walk far.
MAX_DEPTH = 8


def load_certificate(data: bytes, source: str) -> x509.Certificate:
    """One certificate, PEM or DER (``tpm2_nvread 0x01c00002`` gives DER)."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as e:
        raise InputError(source, f"not an X.509 certificate: {str(e).splitlines()[0]}") from None


def load_ca_certificates(data: bytes, source: str) -> list[x509.Certificate]:
    """The CA file: one or more PEM certificates (``ca-chain.pem``), or one DER."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError as e:
        raise InputError(source, f"not X.509 certificates: {str(e).splitlines()[0]}") from None
    if not certs:
        raise InputError(source, "holds no certificate")
    return certs


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _check_validity(cert: x509.Certificate, source: str, now: datetime.datetime) -> None:
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise InputError(source, f"certificate {_name(cert)!r} is valid from "
                         f"{cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ} to "
                         f"{cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}, not now")  # fmt: skip


def _check_is_ca(cert: x509.Certificate, source: str) -> None:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise InputError(source, f"issuer {_name(cert)!r} has no basicConstraints: "
                         "not a CA certificate") from None  # fmt: skip
    if not bc.ca:
        raise InputError(source, f"issuer {_name(cert)!r} is not a CA (basicConstraints cA false)")


def verify_chain(
    cert: x509.Certificate,
    cert_source: str,
    ca: Sequence[x509.Certificate],
    ca_source: str,
    now: datetime.datetime | None = None,
) -> list[x509.Certificate]:
    """The chain from *cert* to a self-signed certificate of *ca*, or InputError."""
    now = now or datetime.datetime.now(datetime.UTC)
    chain = [cert]
    current = cert
    _check_validity(cert, cert_source, now)
    for _ in range(MAX_DEPTH):
        issuers = [c for c in ca if c.subject == current.issuer and _issued_by(current, c)]
        if not issuers:
            what = "the EK certificate" if current is cert else f"CA certificate {_name(current)!r}"
            raise InputError(cert_source, f"{what} is not signed by a certificate of {ca_source} "
                             f"(issuer {current.issuer.rfc4514_string()!r})")  # fmt: skip
        issuer = issuers[0]
        _check_is_ca(issuer, cert_source)
        _check_validity(issuer, cert_source, now)
        chain.append(issuer)
        if issuer.subject == issuer.issuer and _issued_by(issuer, issuer):
            return chain
        current = issuer
    raise InputError(cert_source, f"no self-signed root of {ca_source} within {MAX_DEPTH} "
                     "certificates")  # fmt: skip


def same_key(a: PublicKey, b: object) -> bool:
    """The same RSA (n, e) or the same EC curve and point."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(a, rsa.RSAPublicKey) and isinstance(b, rsa.RSAPublicKey):
        return a.public_numbers() == b.public_numbers()
    if isinstance(a, ec.EllipticCurvePublicKey) and isinstance(b, ec.EllipticCurvePublicKey):
        return a.curve.name == b.curve.name and a.public_numbers() == b.public_numbers()
    return False


def verify_ek_certificate(
    cert_data: bytes,
    cert_source: str,
    ca_data: bytes,
    ca_source: str,
    ek_key: PublicKey,
    ek_source: str,
    now: datetime.datetime | None = None,
) -> x509.Certificate:
    """The EK certificate, once its chain to *ca* verifies and it certifies *ek_key*."""
    cert = load_certificate(cert_data, cert_source)
    ca = load_ca_certificates(ca_data, ca_source)
    verify_chain(cert, cert_source, ca, ca_source, now)
    try:
        cert_key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as e:
        raise InputError(cert_source, f"subject public key: {e}") from None
    if not same_key(ek_key, cert_key):
        raise InputError(cert_source, f"certifies another key than the EK public key {ek_source}")
    return cert
