"""``pvgrubctl eventlog``: show a TCG event log, verify it against PCR values.

The library does the work (`pvgrub_py.eventlog`); this module reads files,
picks the output form and turns the result into an exit status.
"""

from __future__ import annotations

import argparse
import json
import sys

from pvgrub_py.cli.common import check_output, read_input
from pvgrub_py.cli.connect import open_transport
from pvgrub_py.errors import InputError
from pvgrub_py.eventlog.codec import MAX_LOG_BYTES, parse
from pvgrub_py.eventlog.records import EventLog
from pvgrub_py.eventlog.render import format_text, json_document
from pvgrub_py.eventlog.replay import PcrValues, compare, replay
from pvgrub_py.inputs import describe_open_error
from pvgrub_py.measure.predict import pcrs_from_json
from pvgrub_py.tpm.client import TpmClient
from pvgrub_py.tpm.uri import parse_vtpm_uri

#: An expected-PCR document is a few KiB; refuse to slurp anything huge.
MAX_PCRS_JSON_BYTES = 1 << 20

DESCRIPTION = """\
Read TCG event logs: the record firmware, boot loaders and pvgrub-py keep of
every measurement extended into a TPM.  Both formats are read: the TCG 1.2
SHA-1 log (TCG_PCR_EVENT records) and the TPM 2.0 crypto-agile log (a SpecID
event, then TCG_PCR_EVENT2 records with one digest per PCR bank).  LOG may
be "-" to read standard input.  nv-read fetches the log a boot handed its
guest in a TPM 2.0 vTPM's NV memory.  See "pvgrubctl eventlog ACTION --help"."""

EPILOG = """\
examples:
  pvgrubctl eventlog show /var/lib/pvgrub/guest1.eventlog
  pvgrubctl eventlog show --json /sys/kernel/security/tpm0/binary_bios_measurements
  pvgrubctl predict --kernel vmlinuz --cmdline "root=/dev/xvda1" --json > expected.json
  pvgrubctl eventlog verify guest1.eventlog --pcrs expected.json

exit status: 0 success (verify: every expected PCR matches), 1 a mismatch,
or a file that cannot be read or is malformed, 2 usage error."""

SHOW_DESCRIPTION = """\
List every event of LOG, one per line: its number (the EventNum tpm2_eventlog
prints; the SpecID header of a crypto-agile log is event 0), PCR, type, the
digest in every bank and the event data as a short escaped string.  Then the
PCR values the log replays to, per bank.  Replay extends the recorded digests
in order, skips EV_NO_ACTION events and honours a StartupLocality event
(PCR 0 then starts at 00..03 or 00..04)."""

SHOW_EPILOG = """\
The --json document is a stable interface:
  {"format": "sha1" | "crypto-agile", "spec_id": {...} | null, "quirks": [...],
   "events": [{"index": N, "pcr": N, "type": N, "type_name": "EV_IPL",
               "digests": {"sha256": HEX}, "data_hex": HEX,
               "data_text": STR | null}],
   "pcrs": {"sha256": {"4": HEX, "5": HEX}}}

example:
  pvgrubctl eventlog show --json guest1.eventlog | jq '.pcrs.sha256'"""

VERIFY_DESCRIPTION = """\
Replay LOG in every bank and compare the result with the expected PCR values.
Every PCR that differs is printed on one line ("sha256 PCR 5: log replays to
X, expected Y") and the exit status is 1; when all match, one line
"OK: N PCRs in M banks match" and exit status 0.

The expected values come from a JSON document (--pcrs) or from a live TPM
(--vtpm), which is asked for every PCR the log extends in every bank that both
the log and the TPM have.

Only the PCRs the expected document names are judged, so it may list a few
(PCR 4 and 5 of a pv-grub boot) of the PCRs the log extends.  A named PCR the
log never extends is judged at its reset value: zero, or all ones for
PCRs 17-22."""

VERIFY_EPILOG = """\
The --pcrs document maps bank to PCR number to hex value:
  {"sha1": {"4": HEX, "5": HEX}, "sha256": {"4": HEX, "5": HEX}}
The output of "pvgrubctl predict --json", which holds that object under the
key "pcrs", and of "pvgrubctl eventlog show --json" are accepted as they are.

examples:
  pvgrubctl eventlog verify guest1.eventlog --pcrs expected.json
  pvgrubctl eventlog verify guest1.eventlog --vtpm swtpm:unix:/run/vtpm/guest1.sock"""


NV_READ_DESCRIPTION = """\
Read the crypto-agile event log a measured boot left in a TPM 2.0 vTPM's NV
memory for its guest (pvgrub-py and pvgrubctl boot do, unless
--no-event-log-nv): the header index 0x0140F000 and the data indices after
it, defined by the platform.  Every index's attributes and size, the header
and the log's SHA-256 are checked: the NV contents are not trusted.  The log
is written as it was stored, byte for byte, what pvgrub-py's --event-log
file of the same boot holds."""

NV_READ_EPILOG = """\
examples:
  pvgrubctl eventlog nv-read --tpm swtpm:unix:/run/vtpm/guest1.sock -o guest1.eventlog
  pvgrubctl eventlog nv-read --tpm xen:1 | pvgrubctl eventlog show -

exit status: 0 the log was read, 1 no log was delivered, or the indices do not
hold a well-formed one, or the TPM cannot be read, 2 usage error."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "eventlog",
        help="show or verify a TCG event log, or read one from a vTPM's NV",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="eventlog_action", metavar="ACTION", required=True)

    show = actions.add_parser(
        "show",
        help="list the events and the replayed PCRs",
        description=SHOW_DESCRIPTION,
        epilog=SHOW_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument("log", metavar="LOG", help='the event log file, or "-" for stdin')
    show.add_argument(
        "--json", action="store_true", help="print the stable JSON document below instead of text"
    )
    show.set_defaults(func=run_show)

    verify = actions.add_parser(
        "verify",
        help="replay the log and compare with expected PCRs",
        description=VERIFY_DESCRIPTION,
        epilog=VERIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument("log", metavar="LOG", help='the event log file, or "-" for stdin')
    source = verify.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--pcrs",
        metavar="JSON",
        help='expected PCR values: {"BANK": {"N": "HEX"}}, or predict --json output',
    )
    source.add_argument(
        "--vtpm",
        "--tpm",
        dest="tpm",
        metavar="URI",
        help="read the expected values from a live (v)TPM: swtpm:tcp:HOST:PORT, "
        "swtpm:unix:PATH or xen:BACKEND[/DEVID] (the vTPM address pvgrub-py --vtpm "
        "takes); every PCR the log extends, in every bank both the log and the TPM "
        "have; --tpm is the same",
    )
    verify.set_defaults(func=run_verify)

    nv_read = actions.add_parser(
        "nv-read",
        help="read the event log a boot handed the guest in its vTPM's NV",
        description=NV_READ_DESCRIPTION,
        epilog=NV_READ_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    nv_read.add_argument(
        "--tpm",
        "--vtpm",
        dest="tpm",
        metavar="URI",
        required=True,
        help="the (v)TPM 2.0: swtpm:tcp:HOST:PORT, swtpm:unix:PATH or xen:BACKEND[/DEVID] "
        "(the vTPM address pvgrub-py --vtpm takes); --vtpm is the same",
    )
    nv_read.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write the log to FILE (atomically) instead of standard output",
    )
    nv_read.set_defaults(func=run_nv_read)


def read_log(path: str) -> EventLog:
    """Read and parse the log at ``path`` ("-": stdin), at most MAX_LOG_BYTES.

    A FIFO or a device is refused before it is read (it could block or never
    end); an empty file is refused too: it holds no event, and is far more
    often a log that was never written than a boot that measured nothing."""
    source = "stdin" if path == "-" else path
    if path == "-":
        try:
            data = sys.stdin.buffer.read(MAX_LOG_BYTES + 1)
        except OSError as e:
            raise InputError(source, f"cannot read: {describe_open_error(e)}") from None
    else:
        data = read_input(path, max_size=MAX_LOG_BYTES)
    if not data:
        raise InputError(source, "is empty: not an event log (it records no event)")
    return parse(data, source)


def _warn_quirks(log: EventLog, path: str) -> None:
    for quirk in log.quirks:
        print(f"pvgrubctl: warning: {path}: {quirk}", file=sys.stderr)


def run_show(args: argparse.Namespace) -> int:
    log = read_log(args.log)
    pcrs = replay(log)
    if args.json:
        json.dump(json_document(log, pcrs), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _warn_quirks(log, args.log)
        print(format_text(log, pcrs))
    return 0


def expected_pcrs(args: argparse.Namespace, log: EventLog) -> PcrValues:
    """The PCR values ``verify`` compares against, from whichever source was given."""
    if args.pcrs is not None:
        return load_pcrs_json(args.pcrs)
    return read_tpm_pcrs(args.tpm, log)


def read_tpm_pcrs(uri: str, log: EventLog) -> PcrValues:
    """The live values of every PCR ``log`` extends, in the banks both share."""
    pcrs = log.extended_pcrs
    if not pcrs:
        raise InputError(uri, "the log extends no PCR; there is nothing to read")
    with TpmClient(open_transport(parse_vtpm_uri(uri))) as client:
        banks = [b for b in client.active_banks() if b.name in log.banks]
        if not banks:
            raise InputError(uri, f"the TPM has none of the log's banks ({', '.join(log.banks)})")
        return client.read_pcrs(pcrs, banks)


def load_pcrs_json(path: str) -> PcrValues:
    """Read an expected-PCR document (see VERIFY_EPILOG) and check every value."""
    raw = read_input(path, max_size=MAX_PCRS_JSON_BYTES)
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise InputError(path, f"not JSON: {e}") from e
    values = pcrs_from_json(doc, path)
    if not any(values.values()):
        raise InputError(path, "names no PCR values; there is nothing to verify against")
    return values


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def run_verify(args: argparse.Namespace) -> int:
    log = read_log(args.log)
    expected = expected_pcrs(args, log)
    _warn_quirks(log, args.log)
    mismatches = compare(replay(log), expected)
    for m in mismatches:
        print(m.describe())
    if mismatches:
        return 1
    count = sum(len(pcrs) for pcrs in expected.values())
    banks = sum(1 for pcrs in expected.values() if pcrs)
    print(f"OK: {_plural(count, 'PCR')} in {_plural(banks, 'bank')} match")
    return 0


def run_nv_read(args: argparse.Namespace) -> int:
    from pvgrub_py.eventlog.builder import write_atomic
    from pvgrub_py.eventlog.nv_channel import NV_LOG_HEADER, NvEventLogError, load_event_log

    if args.output is not None:
        check_output(args.output)
    with TpmClient(open_transport(parse_vtpm_uri(args.tpm))) as client:
        if client.version != "2.0":
            raise InputError(args.tpm, f"is a TPM {client.version}: event logs are handed "
                             "over in a TPM 2.0 only")  # fmt: skip
        try:
            log = load_event_log(client)
        except NvEventLogError as e:
            raise InputError(args.tpm, str(e)) from None
    if log is None:
        raise InputError(args.tpm, f"holds no event log (no NV index 0x{NV_LOG_HEADER:08x}): "
                         "none was delivered")  # fmt: skip
    if args.output is None:
        sys.stdout.buffer.write(log)
        sys.stdout.buffer.flush()
    else:
        write_atomic(args.output, log)
    return 0
