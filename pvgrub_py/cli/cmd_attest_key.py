"""``pvgrubctl attest challenge|activate|quote``: the AK bound to the vTPM's EK, and quotes.

The verifier's ``challenge`` is TPM2_MakeCredential in software (no TPM);
the guest's ``activate`` and ``quote`` run on its vTPM through tpm2-pytss
(`pvgrub_py.attest.guest`).  Every file is in tpm2-tools' format, so each
side interoperates with stock ``tpm2_makecredential``,
``tpm2_activatecredential``, ``tpm2_quote`` and ``tpm2_checkquote``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from pvgrub_py.errors import UsageError

if TYPE_CHECKING:
    from pvgrub_py.attest.guest import KeyRef
    from pvgrub_py.tpm.transport import TpmTransport

# The attestation modules (tpm2-pytss, cryptography) are imported by the run_*
# functions, so that other verbs do not pay for them at start-up.

CHALLENGE_DESCRIPTION = """\
The verifier's half of binding an AK to a vTPM: TPM2_MakeCredential, done in
software (TPM 2.0 Part 1 section 24; tpm2-pytss's make_credential).  A fresh
random secret is encrypted so that only the TPM holding the EK can release
it, and only to the AK of the given Name (its public area: fixedTPM,
restricted, signing).  Send CRED to the guest ("pvgrubctl attest activate"
or "tpm2_activatecredential -i CRED"); an answer equal to SECRET proves the
AK lives in the TPM of that EK.  SECRET is written 0600: keep it.

With --ek-certificate, the EK certificate (PEM or DER, e.g. "tpm2_nvread
0x01c00002") must chain to the CA in --ca (the vtpm instance's
ca-chain.pem: issuer and root) with valid signatures and dates, and certify
this very EK public key; otherwise nothing is written and one line says why.

Inputs are tpm2-tools': the EK public key as "tpm2_createek -u" writes it
(TPM2B_PUBLIC) or PEM ("-f pem": RSA 2048 or P-256, taken with the EK
template's SHA-256 and AES-128-CFB); the AK's Name as "tpm2_createak -n"
writes it (raw, or hex) or its TPM2B_PUBLIC ("tpm2_createak -u").  CRED is
what "tpm2_makecredential -o" writes."""

CHALLENGE_EPILOG = """\
examples:
  # the guest's EK and AK, e.g. with tpm2-tools on its vTPM
  tpm2_createek -c ek.ctx -G rsa -u ek.pub
  tpm2_createak -C ek.ctx -c ak.ctx -u ak.pub -n ak.name
  # on the verifier
  pvgrubctl attest challenge --ek-public ek.pub --ak-public ak.pub \\
      --ek-certificate ek.der --ca ca-chain.pem --secret-out secret --credential-out cred
  # on the guest
  pvgrubctl attest activate --tpm swtpm:tcp:127.0.0.1:2321 --credential cred \\
      --ak-context ak.ctx --secret-out answer
  # back on the verifier: cmp secret answer

exit status: 0 written, 1 refused (a certificate, a key or a file), 2 usage error."""

ACTIVATE_DESCRIPTION = """\
The guest's half: TPM2_ActivateCredential on its vTPM, as
"tpm2_activatecredential -c AK -C EK -i CRED -o SECRET" does, through
tpm2-pytss over pvgrub-py's own transport (any vTPM address).  The EK is
re-created from its template (--ek-alg, like "tpm2_createek -G"; the TPM
derives the same key) or taken at --ek-handle, and authorised with the EK
policy (PolicySecret on the endorsement hierarchy, empty password).  The AK
is a "tpm2_createak -c" context file (valid until the TPM resets) or a
persistent handle, with an empty password.  The recovered secret is written
0600 to --secret-out.  A credential for another EK or another AK is refused by
the TPM (TPM_RC_INTEGRITY or a decryption failure): exit 1, nothing written."""

CREATE_AK_DESCRIPTION = """\
Make the guest's EK and an AK on its vTPM, as "tpm2_createek -G EK_ALG -u
EK_PUB" and "tpm2_createak -C EK -G AK_ALG -g sha256 -u AK_PUB -n AK_NAME -c
AK_CTX" do, in their formats, for a vTPM tpm2-tools cannot reach (a guest
on the simulator, --sim DIR --domid N).  The EK is re-created from its
template, the AK (RSA 2048 RSASSA or P-256 ECDSA, SHA-256; fixedTPM,
fixedParent, restricted, sign; empty password) is created and loaded under it
with the EK policy and saved as a context: usable by "attest activate" and
"attest quote" until the vTPM resets."""

ACTIVATE_EPILOG = """\
examples:
  # the AK made with tpm2_createak -c ak.ctx, or by "attest create-ak"
  pvgrubctl attest activate --tpm swtpm:unix:/run/vtpm/guest1.sock -i cred \\
      --ak-context ak.ctx --secret-out answer
  # a guest of the simulated host, through its own vTPM frontend
  pvgrubctl attest activate --tpm xen:0 --sim /tmp/host --domid 3 -i cred \\
      --ak-context ak.ctx --secret-out answer

exit status: 0 released, 1 refused by the TPM (or a file), 2 usage error."""

CREATE_AK_EPILOG = """\
examples:
  pvgrubctl attest create-ak --tpm xen:0 --sim /tmp/host --domid 3 --ek-public ek.pub \\
      --ak-public ak.pub --ak-name ak.name --ak-context ak.ctx
  pvgrubctl attest create-ak --tpm swtpm:tcp:127.0.0.1:2321 --ak-alg ecc \\
      --ek-public ek.pub --ak-public ak.pub --ak-context ak.ctx

exit status: 0 made, 1 the TPM or a file failed, 2 usage error."""

QUOTE_DESCRIPTION = """\
TPM2_Quote of the guest's PCRs with its AK and the verifier's nonce, as
"tpm2_quote -c AK -l PCRS -q NONCE -m MSG -s SIG -o PCR_OUT" does: MSG is the
TPMS_ATTEST, SIG the TPMT_SIGNATURE, PCR_OUT the PCR values (tpm2_quote's
"serialized" layout by default, or "values"), all three as tpm2_quote writes
them, so "pvgrubctl attest verify" and "tpm2_checkquote" take them as they
are.  The values are read before the quote and checked against its pcrDigest
(a PCR extended in between: read and quote again, at most three times)."""

QUOTE_EPILOG = """\
examples:
  pvgrubctl attest quote --tpm swtpm:tcp:127.0.0.1:2321 --ak-context ak.ctx \\
      --nonce $NONCE --pcrs sha256:4,5 --message q.msg --signature q.sig --pcr-out q.pcrs
  pvgrubctl attest verify -u ak.pub -m q.msg -s q.sig -q $NONCE --reference guest.ref.json
  tpm2_checkquote -u ak.pub -m q.msg -s q.sig -q $NONCE -f q.pcrs -g sha256

exit status: 0 quoted, 1 the TPM or a file failed, 2 usage error."""

#: TPM2B_DATA holds at most a digest's worth (64 bytes) on real TPMs.
MAX_NONCE_BYTES = 64

TPM_HELP = ("the guest's vTPM: swtpm:tcp:HOST:PORT, swtpm:unix:PATH or "
            "xen:BACKEND[/DEVID] (as pvgrub-py --vtpm)")  # fmt: skip


def read_nonce(text: str, option: str = "--qualification") -> bytes:
    """-q as tpm2-tools reads it: a hex string, else a file of raw bytes."""
    from pvgrub_py.attest.quote import read_bounded

    digits = text[2:] if text[:2].lower() == "0x" else text
    try:
        nonce = bytes.fromhex(digits)
    except ValueError:
        if not os.path.isfile(text):
            raise UsageError(f"{option} {text[:40]!r}: neither hex nor a file") from None
        nonce = read_bounded(text, "nonce", MAX_NONCE_BYTES)
    if not nonce:
        raise UsageError(f"{option}: an empty nonce proves no freshness; give a fresh one")
    if len(nonce) > MAX_NONCE_BYTES:
        raise UsageError(f"{option}: {len(nonce)} bytes (a TPM takes at most {MAX_NONCE_BYTES})")
    return nonce


def _tpm_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tpm", "--vtpm", dest="tpm", metavar="URI", required=True, help=TPM_HELP)
    p.add_argument("--vtpm-uuid", metavar="UUID",
                   help="for xen: addresses, the vTPM instance's uuid")  # fmt: skip
    p.add_argument("--sim", metavar="DIR",
                   help="the simulated host (default $PVGRUB_SIM) for xen: addresses")  # fmt: skip
    p.add_argument("--domid", metavar="N", type=_domid,
                   help="act as guest N of the simulated host: its own tpmif frontend to "
                   "its running vTPM (default: a dom0 attach, which power-cycles it)")  # fmt: skip


def _domid(text: str) -> int:
    if not (text.isascii() and text.isdigit() and 0 < int(text) < 0x7FF0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a guest domid (1-32751)")
    return int(text)


def _ak_options(p: argparse.ArgumentParser) -> None:
    ak = p.add_mutually_exclusive_group(required=True)
    ak.add_argument("--ak-context", "-c", metavar="FILE",
                    help="the AK as a tpm2-tools context file (tpm2_createak -c)")  # fmt: skip
    ak.add_argument("--ak-handle", metavar="HANDLE",
                    help="the AK at a persistent handle (0x81000000-0x81ffffff)")  # fmt: skip


def register(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    c = actions.add_parser(
        "challenge",
        help="make a credential only the vTPM with this EK and AK can activate (MakeCredential)",
        description=CHALLENGE_DESCRIPTION, epilog=CHALLENGE_EPILOG, formatter_class=raw,
    )  # fmt: skip
    c.add_argument("--ek-public", "-u", metavar="EK", required=True,
                   help="the EK public key: TPM2B_PUBLIC (tpm2_createek -u) or PEM")  # fmt: skip
    c.add_argument("--ek-certificate", metavar="CERT",
                   help="the EK certificate (PEM or DER), checked against --ca")  # fmt: skip
    c.add_argument(
        "--ca",
        metavar="CA_CERT",
        help="the vTPM CA's certificates, PEM (an instance's ca-chain.pem)",
    )
    name = c.add_mutually_exclusive_group(required=True)
    name.add_argument(
        "--ak-name",
        "-n",
        metavar="NAME",
        help="the AK's Name: a file (tpm2_createak -n, raw or hex) or hex",
    )
    name.add_argument(
        "--ak-public",
        metavar="AK",
        help="the AK's TPM2B_PUBLIC (tpm2_createak -u), its Name computed",
    )
    c.add_argument("--secret-out", metavar="S", required=True,
                   help="where the random secret goes (0600): the answer to expect")  # fmt: skip
    c.add_argument("--credential-out", "-o", metavar="CRED", required=True,
                   help="the credential blob for tpm2_activatecredential -i")  # fmt: skip
    c.set_defaults(func=run_challenge)

    a = actions.add_parser("activate", help="release a challenge's secret on the guest's vTPM "
                           "(ActivateCredential)", description=ACTIVATE_DESCRIPTION,
                           epilog=ACTIVATE_EPILOG, formatter_class=raw)  # fmt: skip
    _tpm_options(a)
    _ak_options(a)
    a.add_argument(
        "--credential",
        "-i",
        metavar="CRED",
        required=True,
        help="the credential blob (attest challenge; tpm2_makecredential -o)",
    )
    ek = a.add_mutually_exclusive_group()
    ek.add_argument("--ek-alg", "-G", choices=("rsa", "ecc"), default="rsa",
                    help="re-create the EK from this template (default rsa, RSA 2048)")  # fmt: skip
    ek.add_argument("--ek-handle", metavar="HANDLE", help="the EK at a persistent handle")
    a.add_argument("--secret-out", "-o", metavar="S", required=True,
                   help="where the released secret goes (0600)")  # fmt: skip
    a.set_defaults(func=run_activate)

    k = actions.add_parser("create-ak", help="make the vTPM's EK and an AK under it "
                           "(tpm2_createek and tpm2_createak)", description=CREATE_AK_DESCRIPTION,
                           epilog=CREATE_AK_EPILOG, formatter_class=raw)  # fmt: skip
    _tpm_options(k)
    k.add_argument("--ek-alg", "-G", choices=("rsa", "ecc"), default="rsa",
                   help="the EK template (default rsa, RSA 2048)")  # fmt: skip
    k.add_argument(
        "--ak-alg",
        choices=("rsa", "ecc"),
        default="rsa",
        help="the AK: rsa (RSA 2048, RSASSA) or ecc (P-256, ECDSA), SHA-256",
    )
    k.add_argument("--ek-public", metavar="EK_PUB", required=True,
                   help="the EK's TPM2B_PUBLIC out (tpm2_createek -u)")  # fmt: skip
    k.add_argument("--ak-public", metavar="AK_PUB", required=True,
                   help="the AK's TPM2B_PUBLIC out (tpm2_createak -u)")  # fmt: skip
    k.add_argument("--ak-context", metavar="AK_CTX", required=True,
                   help="the AK's context file out (tpm2_createak -c)")  # fmt: skip
    k.add_argument("--ak-name", metavar="AK_NAME", help="the AK's Name out (tpm2_createak -n)")
    k.set_defaults(func=run_create_ak)

    q = actions.add_parser("quote", help="quote the guest's PCRs with its AK "
                           "(files as tpm2_quote writes them)", description=QUOTE_DESCRIPTION,
                           epilog=QUOTE_EPILOG, formatter_class=raw)  # fmt: skip
    _tpm_options(q)
    _ak_options(q)
    q.add_argument("--nonce", "-q", metavar="HEX", required=True,
                   help="the verifier's nonce: hex, or a file of its bytes")  # fmt: skip
    q.add_argument("--pcrs", "-l", metavar="SEL", default="sha256:4,5",
                   help="the PCR selection, tpm2-tools style (default sha256:4,5)")  # fmt: skip
    q.add_argument("--message", "-m", metavar="MSG", required=True, help="the TPMS_ATTEST out")
    q.add_argument("--signature", "-s", metavar="SIG", required=True,
                   help="the TPMT_SIGNATURE out")  # fmt: skip
    q.add_argument("--pcr-out", "-o", metavar="P", help="the PCR values out")
    q.add_argument("--pcrs-format", "-F", choices=("serialized", "values"), default="serialized",
                   help="PCR file layout, as tpm2_quote -F (default serialized)")  # fmt: skip
    q.set_defaults(func=run_quote)


def run_challenge(args: argparse.Namespace) -> int:
    from pvgrub_py.attest.credential import (
        ak_name_from_public,
        fresh_secret,
        load_ek_public,
        make_challenge,
        read_ak_name,
    )
    from pvgrub_py.attest.ekcert import verify_ek_certificate
    from pvgrub_py.attest.outputs import Output, write_outputs
    from pvgrub_py.attest.quote import read_bounded

    if (args.ek_certificate is None) != (args.ca is None):
        raise UsageError("--ek-certificate and --ca go together: a certificate is checked "
                         "against a CA")  # fmt: skip
    ek = load_ek_public(read_bounded(args.ek_public, "EK public key"), args.ek_public)
    if args.ek_certificate is not None:
        verify_ek_certificate(
            read_bounded(args.ek_certificate, "EK certificate"), args.ek_certificate,
            read_bounded(args.ca, "CA certificates"), args.ca, ek.key, args.ek_public,
        )  # fmt: skip
    if args.ak_public is not None:
        name = ak_name_from_public(read_bounded(args.ak_public, "AK public key"), args.ak_public)
    else:
        name = read_ak_name(args.ak_name, read_bounded)
    secret = fresh_secret(ek)
    blob = make_challenge(ek, name, secret)
    write_outputs([Output(args.secret_out, secret, secret=True),
                   Output(args.credential_out, blob)])  # fmt: skip
    checked = " (EK certificate verified)" if args.ek_certificate else ""
    print(f"challenge: {args.credential_out} for AK {name.hex()}{checked}; "
          f"the answer must equal {args.secret_out}")  # fmt: skip
    return 0


def _ak_ref(args: argparse.Namespace) -> KeyRef:
    from pvgrub_py.attest.guest import KeyRef, parse_handle, read_context
    from pvgrub_py.attest.quote import read_bounded

    if args.ak_handle is not None:
        return KeyRef(handle=parse_handle(args.ak_handle, "--ak-handle"), source=args.ak_handle)
    return read_context(args.ak_context, read_bounded)


def _open(args: argparse.Namespace) -> TpmTransport:
    from pvgrub_py.cli.connect import open_guest_transport, open_transport
    from pvgrub_py.tpm.uri import parse_vtpm_uri

    address = parse_vtpm_uri(args.tpm)
    if args.domid is not None:
        return open_guest_transport(address, args.domid, args.sim)
    return open_transport(address, uuid=args.vtpm_uuid, sim_dir=args.sim)


def run_activate(args: argparse.Namespace) -> int:
    from pvgrub_py.attest.credential import parse_credential_blob
    from pvgrub_py.attest.guest import KeyRef, activate, parse_handle
    from pvgrub_py.attest.outputs import Output, write_outputs
    from pvgrub_py.attest.quote import read_bounded
    from pvgrub_py.tpm.pytss_tcti import import_pytss

    import_pytss()  # a missing tpm2-pytss is said before anything else
    blob = parse_credential_blob(read_bounded(args.credential, "credential blob"), args.credential)
    ak = _ak_ref(args)
    ek: KeyRef | str = args.ek_alg
    if args.ek_handle is not None:
        ek = KeyRef(handle=parse_handle(args.ek_handle, "--ek-handle"), source=args.ek_handle)
    transport = _open(args)
    try:
        secret = activate(transport, ak, ek, blob)
    finally:
        transport.close()
    write_outputs([Output(args.secret_out, secret, secret=True)])
    print(f"activate: the TPM released the credential's secret into {args.secret_out}")
    return 0


def run_create_ak(args: argparse.Namespace) -> int:
    from pvgrub_py.attest.guest import create_ak
    from pvgrub_py.attest.outputs import Output, write_outputs
    from pvgrub_py.tpm.pytss_tcti import import_pytss

    import_pytss()
    transport = _open(args)
    try:
        made = create_ak(transport, args.ek_alg, args.ak_alg)
    finally:
        transport.close()
    outputs = [Output(args.ek_public, made.ek_public), Output(args.ak_public, made.ak_public),
               Output(args.ak_context, made.ak_context)]  # fmt: skip
    if args.ak_name is not None:
        outputs.append(Output(args.ak_name, made.ak_name))
    write_outputs(outputs)
    print(f"create-ak: AK {made.ak_name.hex()} in {args.ak_context}")
    return 0


def run_quote(args: argparse.Namespace) -> int:
    from pvgrub_py.attest.guest import PcrSelection, quote
    from pvgrub_py.attest.outputs import Output, write_outputs
    from pvgrub_py.attest.pcrfile import parse_selection, serialized_file, values_file
    from pvgrub_py.tpm.pytss_tcti import import_pytss

    import_pytss()
    selection = PcrSelection(parse_selection(args.pcrs))
    nonce = read_nonce(args.nonce, "--nonce")
    ak = _ak_ref(args)
    transport = _open(args)
    try:
        result = quote(transport, ak, nonce, selection)
    finally:
        transport.close()
    outputs = [Output(args.message, result.message), Output(args.signature, result.signature)]
    if args.pcr_out is not None:
        if args.pcrs_format == "values":
            data = values_file(result.pcr_reads)
        else:
            data = serialized_file(selection.banks, result.pcr_reads)
        outputs.append(Output(args.pcr_out, data))
    write_outputs(outputs)
    print(
        f"quote: {args.pcrs} quoted with nonce {nonce.hex()} into {args.message}, "
        f"{args.signature}" + (f", {args.pcr_out}" if args.pcr_out else ""),
        file=sys.stdout,
    )
    return 0
