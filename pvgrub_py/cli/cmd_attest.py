"""``pvgrubctl attest verify``: judge a TPM 2.0 quote against a boot's reference values.

The library does the work (`pvgrub_py.attest`); this module reads the files,
runs the checks and turns the verdict into a line and an exit status.
"""

from __future__ import annotations

import argparse
import json
import sys

from pvgrub_py.attest.reference import load_reference
from pvgrub_py.cli.cmd_attest_key import read_nonce
from pvgrub_py.cli.cmd_attest_key import register as register_key
from pvgrub_py.errors import UsageError
from pvgrub_py.eventlog.codec import MAX_LOG_BYTES, parse
from pvgrub_py.eventlog.replay import replay

# The attestation modules (and `cryptography`) are imported by run_verify, so
# that every other pvgrubctl verb does not pay for them at start-up.

DESCRIPTION = """\
Remote attestation of a measured boot with the files stock tpm2-tools write:
"challenge" (verifier) and "activate" (guest) bind an AK to the vTPM's EK,
"quote" quotes the guest's PCRs with it, "verify" judges the quote.
See "pvgrubctl attest ACTION --help"."""

VERIFY_DESCRIPTION = """\
Verify a TPM 2.0 quote of a guest's vTPM against the PCR values its boot
should produce, as tpm2_checkquote does and then some.  The options are
tpm2_checkquote's: the AK public key (-u), the quote message (-m) and
signature (-s) that "tpm2_quote -m MSG -s SIG" wrote, the nonce the verifier
chose (-q).  The reference values come from "pvgrubctl predict --json", a
Keylime tpm_policy or a systemd-pcrlock .pcrlock file (told apart by shape).

Checks, in order: magic (TPM_GENERATED_VALUE), type (a quote), nonce
(extraData equals -q), signature (RSASSA, RSAPSS or ECDSA with sha1, sha256,
sha384 or sha512, verified with the AK), ak (a TPM2B_PUBLIC AK must be a
fixedTPM restricted signing key; a PEM key is not checked), selection (the
quote selects PCR 4 and 5 in a bank the reference has), pcr-digest (the
quote's pcrDigest is the hash of the reference values of the selected PCRs,
in selection order; a selected PCR the reference does not name is taken from
the event log's replay, else at its reset value), and with --eventlog,
eventlog (the log replays to the reference values).

The AK is taken as given: that it lives in the guest's vTPM is for the
caller to establish first, with "pvgrubctl attest challenge" against the
vTPM's EK (and its certificate) and "attest activate" on the guest (or
tpm2_makecredential and tpm2_activatecredential).

On acceptance one line "OK: ..." and exit status 0; on rejection one line
"REJECT: CHECK: why" on stdout and exit status 1.  A file that cannot be read
or parsed is one line on stderr naming the file and the field, exit 1."""

VERIFY_EPILOG = """\
examples:
  # on the verifier: a reference and a fresh nonce
  pvgrubctl predict guest.img --json > guest.ref.json
  NONCE=$(openssl rand -hex 20)
  # on the host: a quote of the guest's vTPM with tpm2-tools
  tpm2_createek -c ek.ctx -G rsa -u ek.pub
  tpm2_createak -C ek.ctx -c ak.ctx -G rsa -g sha256 -s rsassa -u ak.pub
  tpm2_quote -c ak.ctx -l sha256:4,5 -q $NONCE -m quote.msg -s quote.sig
  # back on the verifier
  pvgrubctl attest verify -u ak.pub -m quote.msg -s quote.sig -q $NONCE \\
      --reference guest.ref.json --eventlog guest.eventlog
  pvgrubctl attest verify -u ak.pem -m quote.msg -s quote.sig -q $NONCE \\
      --reference guest.keylime.json --json | jq .verdict

exit status: 0 the quote is accepted, 1 rejected (or an unreadable or
malformed file), 2 usage error."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "attest",
        help="verify TPM quotes against a boot's reference values",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="attest_action", metavar="ACTION", required=True)
    v = actions.add_parser(
        "verify",
        help="check a tpm2_quote quote: signature, nonce and PCR 4/5 against a reference",
        description=VERIFY_DESCRIPTION,
        epilog=VERIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    v.add_argument("-u", "--public", metavar="AK", required=True,
                   help="the AK public key: TPM2B_PUBLIC (tpm2_createak -u), PEM "
                   "(tpm2_createak -f pem) or DER")  # fmt: skip
    v.add_argument(
        "-m",
        "--message",
        metavar="MSG",
        required=True,
        help="the quote message, the TPMS_ATTEST that tpm2_quote -m wrote",
    )
    v.add_argument(
        "-s",
        "--signature",
        metavar="SIG",
        required=True,
        help="the signature, the TPMT_SIGNATURE that tpm2_quote -s wrote",
    )
    v.add_argument(
        "-q",
        "--qualification",
        metavar="NONCE",
        required=True,
        help="the nonce the quote must carry: hex, or a file holding its bytes",
    )
    v.add_argument("-g", "--hash-algorithm", metavar="ALG",
                   help="insist the quote was signed with this hash (sha1, sha256, sha384, "
                   "sha512); default: the signature's own")  # fmt: skip
    v.add_argument("--reference", metavar="REF", required=True,
                   help="the expected PCR values: predict --json output, a Keylime "
                   "tpm_policy or a systemd-pcrlock .pcrlock file")  # fmt: skip
    v.add_argument("--eventlog", metavar="LOG",
                   help="a TCG event log of the boot, which must replay to the reference "
                   "(and supplies selected PCRs the reference does not name)")  # fmt: skip
    v.add_argument(
        "--json",
        action="store_true",
        help="print the verdict, every check and the quote's fields as a JSON document",
    )
    v.set_defaults(func=run_verify)
    register_key(actions)


def run_verify(args: argparse.Namespace) -> int:
    from pvgrub_py.attest.quote import parse_attest, parse_public, parse_signature, read_bounded
    from pvgrub_py.attest.verify import verify_quote

    hash_name = None
    if args.hash_algorithm is not None:
        hash_name = args.hash_algorithm.lower()
        if hash_name not in ("sha1", "sha256", "sha384", "sha512"):
            raise UsageError(
                f"--hash-algorithm {args.hash_algorithm!r}: sha1, sha256, sha384 or sha512"
            )
    nonce = read_nonce(args.qualification)
    ak = parse_public(read_bounded(args.public, "public key"), args.public)
    quote = parse_attest(read_bounded(args.message, "quote message"), args.message)
    sig = parse_signature(read_bounded(args.signature, "signature"), args.signature)
    reference = load_reference(args.reference)
    log_values = None
    if args.eventlog is not None:
        data = read_bounded(args.eventlog, "event log", MAX_LOG_BYTES)
        log_values = replay(parse(data, args.eventlog))
    verdict = verify_quote(
        ak, quote.signed, quote, sig, nonce, reference.values, log_values, hash_name
    )
    if args.json:
        doc = verdict.as_json()
        doc["reference_format"] = reference.format
        doc["quote"] = {
            "clock": quote.clock,
            "reset_count": quote.reset_count,
            "restart_count": quote.restart_count,
            "safe": quote.safe,
            "firmware_version": f"0x{quote.firmware_version:016x}",
            "qualified_signer": quote.qualified_signer.hex(),
            "pcr_select": {
                (s.bank.name if s.bank else f"0x{s.alg_id:04x}"): list(s.pcrs)
                for s in quote.selections
            },
            "pcr_digest": quote.pcr_digest.hex(),
        }
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        failed = verdict.failed
        if failed is not None:
            print(f"REJECT: {failed.name}: {failed.detail}")
        else:
            passed = [c.name for c in verdict.checks if c.ok]
            print(f"OK: quote accepted ({', '.join(passed)}; {reference.format} reference)")
    return 0 if verdict.accepted else 1
