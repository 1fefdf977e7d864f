"""``pvgrubctl vtpm``: manufacture and manage the vTPM instances vtpmd serves."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap

from pvgrub_py.errors import UsageError
from pvgrub_py.vtpm import import_ledger, manufacture, migrate, suspend
from pvgrub_py.xen.interface import Hypervisor

DESCRIPTION = """\
Manage the vTPM instances that "pvgrubctl vtpmd --state-dir DIR" serves: each
lives in DIR/UUID, UUID being the one in the guest's xl "vtpm = [...]" line.

  create   manufacture an instance with stock swtpm_setup, as a TPM vendor
           would: an endorsement key (EK) with its certificate in NV
           (0x01c00002 for the RSA EK on TPM 2.0) and a platform certificate,
           both issued by a local CA (swtpm_localca) kept in --ca-dir, NV
           locked; on TPM 2.0 the sha1 and sha256 PCR banks active (pv-grub
           extends sha1 and sha256).  With --key-file the state is encrypted
           at rest by swtpm itself (AES-256-CBC).
  list     the instances in DIR.
  show     an instance's metadata; --check also loads its state in a
           throw-away swtpm.
  destroy  delete an instance (its state, EK and certificates) for good.
  export   write an instance to a file for another host, sealed with a
           migration key (AES-256-GCM): the state, PCRs included for a
           running instance, still encrypted inside with the host key.
  import   authenticate and unpack such a file into DIR/UUID (or another
           --uuid) and check that it loads.
  suspend  ask a running guest's vTPM frontend (pvgrub-guest-tpm) to let go,
           and wait until it has: the step before "xl save".
  resume   withdraw that request (no save after all).

Keys never appear on a command line: swtpm_setup and swtpm get the host key
file as an inherited file descriptor, and the migration key of export/import
is a file or fd:N.  vtpmd serves encrypted instances with the host key (its
--key-file).

Exit status: 0 on success, 1 on a failure, 2 on a usage error."""

EPILOG = """\
examples:
  (umask 077; openssl rand -hex 32 > /etc/pvgrub-py/vtpm.key)
  pvgrubctl vtpm create --state-dir /var/lib/pvgrub-py/vtpm --tpm2 \\
      --uuid 7b5b6d2e-0c5e-4c39-9a63-4f4f0e0b1c1d --key-file /etc/pvgrub-py/vtpm.key
  pvgrubctl vtpm show --state-dir /var/lib/pvgrub-py/vtpm \\
      7b5b6d2e-0c5e-4c39-9a63-4f4f0e0b1c1d --json --check
  pvgrubctl vtpm list --state-dir /var/lib/pvgrub-py/vtpm
  (umask 077; openssl rand -hex 32 > /etc/pvgrub-py/migration.key)
  pvgrubctl vtpm export --state-dir /var/lib/pvgrub-py/vtpm \\
      7b5b6d2e-0c5e-4c39-9a63-4f4f0e0b1c1d --to guest.vtpm \\
      --migration-key-file /etc/pvgrub-py/migration.key
  pvgrubctl vtpm import --state-dir /var/lib/pvgrub-py/vtpm --from guest.vtpm \\
      --migration-key-file /etc/pvgrub-py/migration.key --key-file /etc/pvgrub-py/vtpm.key
  pvgrubctl vtpm suspend guest1 && xl save -p guest1 guest1.save"""

SUSPEND = """\
Ask the vTPM frontend of the running domain DOMAIN (a name or a domid) to
let go of its connection, and wait until it has: run it before "xl save"
(or "xl migrate") of a guest whose TPM 2.0 is served by pvgrub-guest-tpm.

Why: a guest saved with that connection open cannot close it after the
restore.  The restore drops the guest kernel's event-channel bindings
(Linux xen_irq_resume, drivers/xen/events/events_base.c), and unbinding the
stale port then trips BUG_ON(irq < 0) in drivers/xen/evtchn.c
(evtchn_unbind_from_user), or, if the restored kernel reused the number,
closes one of the kernel's own channels.

How: this writes "pvgrub-suspend = 1" in the domain's device/vtpm/N
directory; the guest's daemon closes its ring within a quarter of a second
(a command in flight first completes), unbinds its port, answers
"pvgrub-suspended = 1" and stays disconnected (its /dev/tpm0 answers
TPM_RC_FAILURE meanwhile); this returns once that answer is there.  If the
save does not happen (xl save failed, or xl save -c), run "resume".  The vTPM instance keeps
running, PCRs and all, for "pvgrubctl vtpm export".  The restored domain is
a new domain without the request: the daemon reconnects to it by itself.
"resume" withdraws the request if the save does not happen.

Exit status: 0 once the frontend let go (or, for resume, the request is
gone); 1 if it did not within --timeout (the request is then withdrawn:
do not save the domain) or there is no such domain or device."""

CREATE = """\
Manufacture a new vTPM instance in STATE-DIR/UUID with swtpm_setup:

  * an RSA 2048 EK (and, on TPM 2.0, an ECC P-384 one) with their
    certificates in NV (RSA: 0x01c00002), and a platform certificate
    (0x01c08000 on TPM 2.0), issued by the local CA in --ca-dir: stock
    swtpm_localca with a configuration of ours whose statedir is that
    directory (the system-wide /var/lib/swtpm-localca is never used); the
    CA's root and issuer (intermediate) are made on first use;
  * TPM 2.0: the sha1 and sha256 PCR banks active;
  * NV locked (--lock-nvram), as a manufacturer leaves it;
  * with --key-file, the state encrypted by swtpm with AES-256-CBC.

Also written: STATE-DIR/UUID/vtpm.json (the metadata "show" prints) and
STATE-DIR/UUID/certs/ (the EK certificates, DER and PEM, and ca-chain.pem,
the CA's issuer and root, against which "openssl verify -CAfile" checks the
EK certificate).  An existing instance is never overwritten; on failure
nothing is left behind."""


EX_CREATE = """\
examples:
  pvgrubctl vtpm create --state-dir /srv/vtpm --tpm2 \\
      --uuid 7b5b6d2e-0c5e-4c39-9a63-4f4f0e0b1c1d --key-file /etc/pvgrub-py/vtpm.key
  pvgrubctl vtpm create --state-dir /srv/vtpm --tpm12 \\
      --uuid 7b5b6d2e-0c5e-4c39-9a63-4f4f0e0b1c1d --ca-dir /etc/pvgrub-py/vtpm-ca"""

EX_LIST = """\
examples:
  pvgrubctl vtpm list --state-dir /srv/vtpm
  pvgrubctl vtpm list --state-dir /srv/vtpm --json"""

EX_SHOW = """\
examples:
  pvgrubctl vtpm show --state-dir /srv/vtpm 7b5b6d2e-0c5e-4c39-9a63-4f4f0e0b1c1d
  pvgrubctl vtpm show --state-dir /srv/vtpm 7b5b6d2e-0c5e-4c39-9a63-4f4f0e0b1c1d --json --check"""

EX_DESTROY = """\
examples:
  pvgrubctl vtpm destroy --state-dir /srv/vtpm 7b5b6d2e-0c5e-4c39-9a63-4f4f0e0b1c1d --yes"""

XL_PROCEDURE = """\
moving a running guest with its vTPM (xl save/restore; xl migrate likewise):
  # on the source host
  pvgrubctl vtpm suspend DOM               # the guest's pvgrub-guest-tpm lets go
  xl save -p DOM /srv/save/DOM.xl          # saved, paused: no TPM command meanwhile
  pvgrubctl vtpm export --state-dir /srv/vtpm UUID --to /srv/save/DOM.vtpm \\
      --migration-key-file /etc/pvgrub-py/migration.key
  xl destroy DOM
  # copy DOM.xl and DOM.vtpm to the target; the migration key and the host key
  # are provisioned there beforehand, never with the archive
  # on the target host (vtpmd --state-dir /srv/vtpm runs there)
  pvgrubctl vtpm import --state-dir /srv/vtpm --from /srv/save/DOM.vtpm \\
      --migration-key-file /etc/pvgrub-py/migration.key --key-file /etc/pvgrub-py/vtpm.key
  xl restore /srv/save/DOM.xl              # vtpmd resumes the saved PCRs for it;
                                           # the guest's daemon reconnects by itself"""

EX_EXPORT = f"""\
examples:
  (umask 077; openssl rand -hex 32 > /etc/pvgrub-py/migration.key)
  pvgrubctl vtpm export --state-dir /srv/vtpm 7b5b6d2e-0c5e-4c39-9a63-4f4f0e0b1c1d \\
      --to guest.vtpm --migration-key-file /etc/pvgrub-py/migration.key
  pvgrubctl vtpm export --state-dir /srv/vtpm 7b5b6d2e-0c5e-4c39-9a63-4f4f0e0b1c1d \\
      --to guest.vtpm --migration-key-file fd:3 3</etc/pvgrub-py/migration.key

{XL_PROCEDURE}"""

EX_IMPORT = f"""\
examples:
  pvgrubctl vtpm import --state-dir /srv/vtpm --from guest.vtpm \\
      --migration-key-file /etc/pvgrub-py/migration.key --key-file /etc/pvgrub-py/vtpm.key
  pvgrubctl vtpm import --state-dir /srv/vtpm --from guest.vtpm \\
      --migration-key-file /etc/pvgrub-py/migration.key --key-file /etc/pvgrub-py/vtpm.key \\
      --uuid 0d3c5e7a-1b2f-4e6d-9c8b-7a6f5e4d3c2b

{XL_PROCEDURE}"""

MIGRATION_KEY_HELP = (
    "the migration key: a file of 64 hex digits (`openssl rand -hex 32`), mode 0600 or "
    "stricter, owned by the caller (root), or fd:N, a descriptor the caller opened on such "
    "a file or a pipe; the same on both hosts.  Never the key itself on the command line"
)


def _wrap(text: str) -> str:
    return textwrap.fill(text, 78, break_on_hyphens=False)


def _state_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--state-dir",
        required=True,
        metavar="DIR",
        help="the directory vtpmd serves (its --state-dir); instances are DIR/UUID",
    )


def _uuid(text: str) -> str:
    try:
        return manufacture.canonical_uuid(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


EX_SUSPEND = """\
examples:
  pvgrubctl vtpm suspend guest1 && xl save -p guest1 /srv/save/guest1.xl
  pvgrubctl vtpm resume guest1             # no save after all: it reconnects
  pvgrubctl vtpm suspend 7 --device 1 --timeout 60"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "vtpm",
        help="manufacture, list, show, check and destroy vtpmd's vTPM instances",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="vtpm_verb", metavar="ACTION", required=True)

    c = verbs.add_parser(
        "create",
        epilog=EX_CREATE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="manufacture a new instance (EK, certificates, banks)",
        description=CREATE,
    )
    _state_dir(c)
    c.add_argument(
        "--uuid",
        required=True,
        type=_uuid,
        metavar="UUID",
        help="the instance's uuid, as in the guest's xl vtpm line (canonical form)",
    )
    version = c.add_mutually_exclusive_group(required=True)
    version.add_argument("--tpm2", action="store_true", help="manufacture a TPM 2.0 (vtpmd --tpm2)")
    version.add_argument("--tpm12", action="store_true", help="a TPM 1.2 (Xen's vTPM's version)")
    c.add_argument(
        "--key-file",
        metavar="K",
        help="encrypt the state with this AES-256 key: a file of 64 hex digits, "
        "mode 0600 or stricter, owned by the caller (root); only its path is "
        "recorded, never its contents.  Without it the state is not encrypted",
    )
    c.add_argument(
        "--ca-dir",
        metavar="C",
        help="the local CA's directory (root and issuer certificates and keys, "
        "serial); created if missing and shared by every instance made with "
        "it (default DIR/ca)",
    )
    c.set_defaults(func=run_create)

    ls = verbs.add_parser(
        "list",
        epilog=EX_LIST,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="list the instances in DIR",
        description=_wrap(
            "List the instances in DIR, one a line: uuid, TPM "
            "version, encrypted or not, created, last used.  Directories vtpmd "
            "made on first use (no metadata) are listed as unmanaged."
        ),
    )
    _state_dir(ls)
    ls.add_argument("--json", action="store_true", help="print a JSON array of the instances")
    ls.set_defaults(func=run_list)

    s = verbs.add_parser(
        "show",
        epilog=EX_SHOW,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="print an instance's metadata; --check loads its state",
        description=_wrap(
            "Print an instance's metadata: uuid, tpm_version, "
            "encrypted, key_file, state_dir, ek_certificate and ca_certificate "
            "(paths, PEM), pcr_banks, created and last_used (UTC).  With --check, "
            "first load a copy of its state in a throw-away swtpm (with its key) "
            "and read a PCR: a missing, undecryptable or corrupt state fails "
            "with one line and exit status 1."
        ),
    )
    _state_dir(s)
    s.add_argument("uuid", type=_uuid, metavar="UUID", help="the instance to show (canonical UUID)")
    s.add_argument("--json", action="store_true", help="print the metadata as one JSON object")
    s.add_argument(
        "--check",
        action="store_true",
        help="load the state in a throw-away swtpm; fail if it does not load",
    )
    s.add_argument(
        "--key-file",
        metavar="K",
        help="with --check: the key to load the state with (default: the key file "
        "recorded at create)",
    )
    s.set_defaults(func=run_show)

    d = verbs.add_parser(
        "destroy",
        epilog=EX_DESTROY,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="delete an instance for good (needs --yes)",
        description=_wrap(
            "Delete STATE-DIR/UUID: the TPM state, its EK and "
            "certificates.  Irreversible, so it needs --yes; refused while a "
            "swtpm (vtpmd) holds the instance's lock.  The CA is kept."
        ),
    )
    _state_dir(d)
    d.add_argument(
        "uuid", type=_uuid, metavar="UUID", help="the instance to delete (canonical UUID)"
    )
    d.add_argument(
        "--yes", action="store_true", help="confirm the deletion (required: it cannot be undone)"
    )
    d.set_defaults(func=run_destroy)

    e = verbs.add_parser(
        "export",
        epilog=EX_EXPORT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="write an instance to a file for another host, sealed with a migration key",
        description=_wrap(
            "Write STATE-DIR/UUID to a new file FILE (mode 0600, never overwritten): a tar "
            "archive of the metadata, swtpm's state as it stores it and the certificates, "
            "sealed with the migration key (AES-256-GCM, a fresh 96-bit nonce, and a "
            "header naming the format and UUID as associated data), so that only a holder "
            "of that key can open it and any change, truncation or relabelling to another "
            "uuid is detected before import parses a byte.  The state inside stays "
            "encrypted with the host key (an encrypted instance): the target needs both "
            "keys, and neither is in the file.  An instance vtpmd serves is exported "
            "through its swtpm's control channel, volatile state (PCRs) included: pause or "
            "save the guest first (xl save -p), then destroy it; `import` and the next start "
            "by vtpmd resume that state for the first guest that connects (xl restore)."
        )
        + "\n\n"
        + _wrap(
            "Without --migration-key-file: an unencrypted instance is refused (its EK "
            "private key and seeds, the vTPM's identity that its EK certificate vouches "
            "for, would travel in the clear); an encrypted one is written as a plain tar "
            "with a warning: its state is still encrypted with the host key, but nothing "
            "authenticates the archive as a whole (metadata, certificates, which state is "
            "in it)."
        ),
    )
    _state_dir(e)
    e.add_argument(
        "uuid", type=_uuid, metavar="UUID", help="the instance to export (canonical UUID)"
    )
    e.add_argument(
        "--to",
        "--output",
        "-o",
        dest="output",
        required=True,
        metavar="FILE",
        help="the file to write (must not exist yet); --output and -o are older names",
    )
    e.add_argument("--migration-key-file", metavar="MK", help=MIGRATION_KEY_HELP)
    e.set_defaults(func=run_export)

    i = verbs.add_parser(
        "import",
        epilog=EX_IMPORT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="authenticate an exported file, unpack it into DIR/UUID and check it",
        description=_wrap(
            'Unpack a file made by "pvgrubctl vtpm export" into STATE-DIR/UUID (never over '
            "an existing instance; with --uuid under that uuid instead of the exported "
            'one), then load its state in a throw-away swtpm as "show --check" does; the '
            "instance appears only if that succeeds.  With --migration-key-file the file "
            "must be sealed with that key: it is authenticated and decrypted before "
            "anything in it is parsed, and a wrong key, a truncated or modified file, or "
            "one sealed for another uuid fails with one line and nothing written; a plain "
            "archive is then refused.  The archive is untrusted all the same: anything but "
            "the files an export holds (links, devices, other names, oversized members) is "
            "refused before anything is written.  The state is not re-encrypted: "
            "--key-file names this host's copy of the instance's host key, which must be "
            "the key it was encrypted with on the source."
        ),
    )
    _state_dir(i)
    i.add_argument(
        "archive",
        metavar="ARCHIVE",
        nargs="?",
        help="the same as --from FILE (the older form)",
    )
    i.add_argument(
        "--from",
        dest="from_file",
        metavar="FILE",
        help="a file made by pvgrubctl vtpm export",
    )
    i.add_argument(
        "--uuid",
        type=_uuid,
        metavar="UUID",
        help="import under this uuid (canonical form; must not exist) instead of the "
        "exported one's, e.g. for the guest's new xl vtpm line",
    )
    i.add_argument("--migration-key-file", metavar="MK", help=MIGRATION_KEY_HELP)
    i.add_argument(
        "--key-file",
        metavar="K",
        help="this host's copy of the instance's key (required for an encrypted instance); "
        "recorded as its key file",
    )
    i.add_argument(
        "--max-age",
        type=float,
        default=import_ledger.DEFAULT_MAX_AGE,
        metavar="S",
        help="refuse a sealed export made more than S seconds ago (default 86400, a day; "
        "0: no limit).  Whatever the age, an export not newer than the last one of that "
        "vTPM imported into DIR is refused (DIR/.imports.json): an old export, imported "
        "again, would roll the vTPM back",
    )
    i.set_defaults(func=run_import)

    for verb, func, summary in (
        ("suspend", run_suspend, "ask a guest's vTPM frontend to let go before xl save"),
        ("resume", run_resume, "withdraw that request: the frontend reconnects"),
    ):
        v = verbs.add_parser(
            verb,
            help=summary,
            description=SUSPEND,
            epilog=EX_SUSPEND,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        v.add_argument("domain", metavar="DOMAIN", help="the guest: its name or domid")
        v.add_argument("--device", type=int, default=0, metavar="N",
                       help="the vTPM's device number, device/vtpm/N (default 0)")  # fmt: skip
        if verb == "suspend":
            v.add_argument("--timeout", type=float, default=60.0, metavar="S",
                           help="seconds the frontend may take to let go (default 60)")  # fmt: skip
        v.add_argument("--sim", metavar="DIR",
                       help="act on the simulated host in DIR instead of Xen")  # fmt: skip
        v.set_defaults(func=func)


def run_create(args: argparse.Namespace) -> int:
    inst = manufacture.create(
        args.state_dir, args.uuid, tpm2=args.tpm2, key_file=args.key_file, ca_dir=args.ca_dir
    )
    print(
        f"vTPM {inst.uuid}: manufactured (TPM {inst.tpm_version}"
        f"{', encrypted' if inst.encrypted else ''}) in {inst.directory}"
    )
    return 0


def run_list(args: argparse.Namespace) -> int:
    found, unmanaged = manufacture.list_instances(args.state_dir)
    if args.json:
        rows = [i.as_json() for i in found]
        rows += [{"uuid": u, "unmanaged": True} for u in unmanaged]
        print(json.dumps(rows, indent=2))
        return 0
    for i in found:
        print(
            f"{i.uuid}  TPM {i.tpm_version}  {'encrypted' if i.encrypted else 'plain'}  "
            f"created {i.created}  last used {i.last_used or 'never'}"
        )
    for u in unmanaged:
        print(f"{u}  unmanaged (no metadata: made by vtpmd on first use)")
    return 0


def run_show(args: argparse.Namespace) -> int:
    if args.key_file is not None and not args.check:
        raise UsageError("--key-file goes with --check")
    inst = manufacture.load(args.state_dir, args.uuid)
    checked = manufacture.check(inst, args.key_file) if args.check else None
    if args.json:
        body = inst.as_json()
        if checked is not None:
            body["check"] = "ok"
        print(json.dumps(body, indent=2))
    else:
        print("\n".join(manufacture.describe(inst)))
        if checked is not None:
            print(checked)
    return 0


def run_destroy(args: argparse.Namespace) -> int:
    if not args.yes:
        raise UsageError(f"destroying vTPM {args.uuid} deletes its state for good; add --yes")
    inst = manufacture.load(args.state_dir, args.uuid)
    manufacture.destroy(inst)
    print(f"vTPM {inst.uuid}: destroyed ({inst.directory} removed)")
    return 0


def _migration_key(args: argparse.Namespace) -> bytes | None:
    spec = args.migration_key_file
    return None if spec is None else manufacture.read_key(spec, "migration key file")


def run_export(args: argparse.Namespace) -> int:
    inst = manufacture.load(args.state_dir, args.uuid)
    key = _migration_key(args)
    count, running = migrate.export(inst, args.output, key)
    how = " (running: its state through swtpm's control channel)" if running else ""
    sealed = ", sealed with the migration key" if key is not None else ""
    print(f"vTPM {inst.uuid}: exported {count} files to {args.output}{sealed}{how}")
    if key is None:
        print(
            f"pvgrubctl vtpm export: warning: {args.output} is not sealed with a migration key: "
            "its state is encrypted with the host key, but nothing authenticates the archive",
            file=sys.stderr,
        )
    return 0


def run_import(args: argparse.Namespace) -> int:
    if not 0 <= args.max_age <= 10 * 365 * 86400:
        raise UsageError("--max-age: give seconds, 0 (no limit) up to ten years")
    if (args.archive is None) == (args.from_file is None):
        raise UsageError("give the file to import once: --from FILE (or ARCHIVE)")
    source = args.from_file if args.from_file is not None else args.archive
    inst, checked = migrate.import_archive(
        args.state_dir,
        source,
        args.key_file,
        migration_key=_migration_key(args),
        new_uuid=args.uuid,
        max_age=args.max_age,
    )
    print(f"vTPM {inst.uuid}: imported into {inst.directory}")
    print(checked)
    return 0


def _toolstack(args: argparse.Namespace) -> Hypervisor:
    from pvgrub_py.cli.connect import open_hypervisor

    return open_hypervisor(args.sim, 0)


def run_suspend(args: argparse.Namespace) -> int:
    if not 0 < args.timeout <= 3600:
        raise UsageError("--timeout: give seconds between 0 and 3600")
    with _toolstack(args) as hv, hv.xenstore() as xs:
        domid = suspend.resolve_domain(xs, args.domain)
        took = suspend.request(xs, domid, args.device, args.timeout)
    print(f"domain {domid}: vTPM frontend device/vtpm/{args.device} let go in {took:.2f} s; "
          "save the domain now")  # fmt: skip
    return 0


def run_resume(args: argparse.Namespace) -> int:
    with _toolstack(args) as hv, hv.xenstore() as xs:
        domid = suspend.resolve_domain(xs, args.domain)
        suspend.cancel(xs, domid, args.device)
    print(f"domain {domid}: request withdrawn; its vTPM frontend reconnects")
    return 0
