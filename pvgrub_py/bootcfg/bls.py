"""Boot Loader Specification type #1 entries (``loader/entries/*.conf``).

The BLS (https://uapi-group.org/specifications/specs/boot_loader_specification/)
defines one snippet per kernel with the keys ``title``, ``version``,
``machine-id``, ``sort-key``, ``linux``, ``initrd`` (repeatable),
``options`` (repeatable), ``devicetree``, ``architecture``.

What matters for a pygrub replacement is how *GRUB* reads them, because
Fedora/RHEL boot BLS entries through GRUB's ``blscfg`` command (a
Fedora/RHEL patch, ``grub-core/commands/blscfg.c`` in rhboot/grub2).
Facts implemented here, all from that module:

* Directory: ``$blsdir`` if set, else ``/loader/entries``; only when that
  directory cannot be read, ``/boot/loader/entries`` (a separate ``/boot``
  vs. ``/boot`` on the root filesystem).  The directory is on ``$root``.
* Files: names not starting with ``.`` and ending in ``.conf`` (more than
  five characters); larger than 1 MiB is skipped.
* Lines: leading blanks dropped, ``#`` lines skipped, the key ends at the
  first space (or, if there is none, the first tab) and the value starts
  after the following blanks.  A line with no value *ends the file*.
* Order: **by file name, newest first**.  The name (without ``.conf``) is
  split like an RPM NVR at its last two ``-`` into name, version and
  release, each compared with RPM's ``rpmvercmp`` (with ``~`` sorting
  before anything and ``+`` after the base version); the ``version`` key
  is not used.  Two names that compare equal keep only the first one read.
  Older Fedora GRUBs sorted by the ``version`` key first; for kernel-install
  generated names (``<machine-id>-<kernel-version>``) both give the same
  order.
* Each entry becomes a menu entry with title ``title`` (or the ``linux``
  path when missing; *not* variable-expanded), id = file name without
  ``.conf``, classes from ``grub_class``, extra arguments from
  ``grub_arg``, and the body
  ``linux ($root)<linux> <options>`` / ``initrd ($root)<i1> ($root)<i2>``.
  ``options`` is expanded when ``blscfg`` runs: ``$name`` becomes the
  variable's value followed by a space (nothing when unset, and one blank
  after the name is dropped); without an ``options`` key,
  ``$default_kernelopts`` is used.  Entries without ``linux`` are skipped.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable

from pvgrub_py.bootcfg.entry import BootEntry, BootMenu, FileRef
from pvgrub_py.bootcfg.errors import BootConfigError
from pvgrub_py.bootcfg.files import (
    VolumeSet,
    decode_config,
    normalize_path,
    read_capped,
    split_words,
)
from pvgrub_py.bootcfg.grubenv import parse_envblk
from pvgrub_py.bootcfg.limits import DEFAULT_LIMITS, Limits
from pvgrub_py.record import record

TYPE_CHECKING = False

if TYPE_CHECKING:
    from pvgrub_py.bootcfg.files import ConfigFiles

DEFAULT_BLSDIR = "/loader/entries"
FALLBACK_BLSDIR = "/boot/loader/entries"


@record(frozen=True)
class BlsEntry:
    """One parsed snippet: its file name (without ``.conf``) and key/value pairs."""

    filename: str
    path: str
    pairs: tuple[tuple[str, str], ...]

    def get(self, key: str) -> str | None:
        for k, v in self.pairs:
            if k == key:
                return v
        return None

    def get_all(self, key: str) -> list[str]:
        return [v for k, v in self.pairs if k == key]

    @property
    def title(self) -> str | None:
        return self.get("title")

    @property
    def version(self) -> str | None:
        return self.get("version")

    @property
    def linux(self) -> str | None:
        return self.get("linux")

    @property
    def initrds(self) -> list[str]:
        return self.get_all("initrd")

    @property
    def options(self) -> str | None:
        opts = self.get_all("options")
        return " ".join(opts) if opts else None

    @property
    def machine_id(self) -> str | None:
        return self.get("machine-id")


def parse_bls(text: str, filename: str, path: str = "") -> BlsEntry:
    """Parse one snippet the way GRUB's ``blscfg`` reads it."""
    pairs: list[tuple[str, str]] = []
    for raw in text.replace("\r", "").split("\n"):
        line = raw.lstrip(" \t")
        if line.startswith("#"):
            continue
        sep = line.find(" ")
        if sep < 0:
            sep = line.find("\t")
        if sep < 0 or sep + 1 >= len(line):
            break
        key = line[:sep]
        value = line[sep + 1 :].lstrip(" \t")
        pairs.append((key, value))
    return BlsEntry(filename, path, tuple(pairs))


# -- RPM version comparison (rpmvercmp, as copied into GRUB's blscfg) --------


def vercmp(a: str, b: str) -> int:
    """1 if *a* is newer, -1 if *b* is newer, 0 if equal (rpmvercmp rules)."""
    if a == b:
        return 0
    i = j = 0
    while i < len(a) or j < len(b):
        while i < len(a) and not (_alnum(a[i]) or a[i] in "~+"):
            i += 1
        while j < len(b) and not (_alnum(b[j]) or b[j] in "~+"):
            j += 1
        ca = a[i] if i < len(a) else ""
        cb = b[j] if j < len(b) else ""
        if ca == "~" or cb == "~":
            if ca != "~":
                return 1
            if cb != "~":
                return -1
            i += 1
            j += 1
            continue
        if ca == "+" or cb == "+":
            if not ca:
                return -1
            if not cb:
                return 1
            if ca != "+":
                return 1
            if cb != "+":
                return -1
            i += 1
            j += 1
            continue
        if not (ca and cb):
            break
        if ca.isdigit():
            si, sj = _run(a, i, str.isdigit), _run(b, j, str.isdigit)
            isnum = True
        else:
            si, sj = _run(a, i, _alpha), _run(b, j, _alpha)
            isnum = False
        seg_a, seg_b = a[i:si], b[j:sj]
        if not seg_b:
            return 1 if isnum else -1
        if isnum:
            seg_a, seg_b = seg_a.lstrip("0"), seg_b.lstrip("0")
            if len(seg_a) != len(seg_b):
                return 1 if len(seg_a) > len(seg_b) else -1
        if seg_a != seg_b:
            return 1 if seg_a > seg_b else -1
        i, j = si, sj
    if i >= len(a) and j >= len(b):
        return 0
    return -1 if i >= len(a) else 1


def _alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def _alpha(ch: str) -> bool:
    return ch.isascii() and ch.isalpha()


def _run(text: str, i: int, pred: Callable[[str], bool]) -> int:
    while i < len(text) and pred(text[i]) and text[i].isascii():
        i += 1
    return i


def split_nvr(name: str) -> tuple[str, str, str]:
    """Split at the last two ``-`` into (name, version, release), GRUB-style.

    Missing parts bubble up the way ``split_package_string`` does it: a
    name without any ``-`` is all *name*; with one ``-`` the part after it
    is the *version*.
    """
    parts = name.rsplit("-", 2)
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    if len(parts) == 2:
        return parts[0], parts[1], ""
    return parts[0], "", ""


def bls_compare(a: BlsEntry, b: BlsEntry) -> int:
    """GRUB's ``bls_cmp``: compare file names as name-version-release."""
    for x, y in zip(split_nvr(a.filename), split_nvr(b.filename), strict=True):
        r = vercmp(x, y)
        if r:
            return r
    return 0


def sort_entries(entries: list[BlsEntry]) -> tuple[list[BlsEntry], list[BlsEntry]]:
    """Newest first, as GRUB inserts them; returns (kept, dropped duplicates)."""
    kept: list[BlsEntry] = []
    dropped: list[BlsEntry] = []
    for entry in entries:
        pos = len(kept)
        duplicate = False
        for k, other in enumerate(kept):
            r = bls_compare(entry, other)
            if r == 0:
                duplicate = True
                break
            if r > 0:
                pos = k
                break
        if duplicate:
            dropped.append(entry)
        else:
            kept.insert(pos, entry)
    return kept, dropped


def load_entries(
    files: ConfigFiles,
    blsdir: str | None = None,
    *,
    limits: Limits = DEFAULT_LIMITS,
    warn: Callable[[str], None] | None = None,
) -> tuple[str, list[BlsEntry]]:
    """Read and sort the snippets of one volume; returns (directory, entries).

    *blsdir* is ``$blsdir``; when it is ``None`` the default directory is
    tried and, if it cannot be listed, the ``/boot`` one.
    """
    dirs = [blsdir] if blsdir else [DEFAULT_BLSDIR, FALLBACK_BLSDIR]
    names: list[str] | None = None
    directory = normalize_path(dirs[0])
    for d in dirs:
        directory = normalize_path(d)
        names = files.list_dir(directory)
        if names is not None:
            break
    if names is None:
        return directory, []
    confs = [n for n in names if not n.startswith(".") and len(n) > 5 and n.endswith(".conf")]
    if len(confs) > limits.max_dir_entries:
        raise BootConfigError(
            f"({files.identity.name}){directory}",
            f"more than {limits.max_dir_entries} BLS entries",
        )
    entries: list[BlsEntry] = []
    for name in sorted(confs):
        path = posixpath.join(directory, name)
        try:
            data = read_capped(files, path, max_bytes=limits.max_file_bytes, what="BLS entry")
        except BootConfigError:
            if warn is not None:
                warn(f"{path}: larger than {limits.max_file_bytes} bytes, skipped (as GRUB)")
            continue
        if data is None:
            continue
        entries.append(parse_bls(decode_config(data), name[:-5], path))
    kept, dropped = sort_entries(entries)
    if warn is not None:
        for entry in dropped:
            warn(f"{entry.path}: sorts equal to another entry, dropped (as GRUB)")
    return directory, kept


def expand_options(value: str, lookup: Callable[[str], str | None]) -> str:
    """Expand ``$name`` in a BLS value as blscfg's ``expand_val`` intends.

    Each variable becomes its value plus a space (nothing if unset) and one
    blank right after the name is dropped.  (GRUB's C loop also loses
    one-character segments at the very end; we do not copy that bug.)
    """
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if ch == "$":
            j = i + 1
            while j < n and (_alnum(value[j]) or value[j] == "_"):
                j += 1
            name = value[i + 1 : j]
            val = lookup(name) if name else None
            if val is not None:
                out.append(val + " ")
            i = j
            if i < n and value[i] == " ":
                i += 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def entry_script(
    entry: BlsEntry, lookup: Callable[[str], str | None], *, split_initrd: bool = False
) -> str | None:
    """The GRUB script blscfg generates as the body of *entry* (None: no linux).

    GRUB pastes each ``initrd`` value after ``($root)`` as it stands;
    *split_initrd* (petitboot) expands the value and loads each word as a
    path on ``$root``.
    """
    linux = entry.linux
    if linux is None:
        return None
    opts = entry.options
    options = expand_options(opts, lookup) if opts is not None else None
    if options is None:
        default = lookup("default_kernelopts")
        options = expand_options(default, lookup) if default is not None else None
    body = f"linux ($root){linux}"
    if options:
        body += f" {options}"
    body += "\n"
    initrds = entry.initrds
    if split_initrd:
        words = [w for i in initrds for w in split_words(expand_options(i, lookup))]
        initrds = ["'" + w.replace("'", "'\\''") + "'" for w in words]
    if initrds:
        body += "initrd" + "".join(f" ($root){i}" for i in initrds) + "\n"
    return body


def parse_bls_dir(
    volumes: VolumeSet | ConfigFiles,
    directory: str | None = None,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> BootMenu:
    """A menu from ``loader/entries`` alone (no grub.cfg on the volume).

    Used when a volume has BLS snippets but no GRUB config (a systemd-boot
    layout).  Entries keep GRUB's blscfg order, so the newest kernel is the
    default.  ``$variables`` in ``options``/``initrd`` (Fedora 28-30 wrote
    ``options $kernelopts``) are expanded from a grubenv on the same volume
    if there is one (``/grub2``, ``/boot/grub2``, ``/grub``, ``/boot/grub``);
    unset ones vanish, as in GRUB.
    """
    vols = volumes if isinstance(volumes, VolumeSet) else VolumeSet.single(volumes)
    warnings: list[str] = []

    def warn(msg: str) -> None:
        if len(warnings) < limits.max_warnings:
            warnings.append(msg[:300])

    found_dir, entries = load_entries(vols.primary, directory, limits=limits, warn=warn)
    env = _grubenv(vols.primary, limits)
    boot: list[BootEntry] = []
    for entry in entries:
        if len(boot) >= limits.max_entries:
            raise BootConfigError(found_dir, f"more than {limits.max_entries} entries")
        linux = entry.linux
        if linux is None:
            warn(f"{entry.path}: no 'linux' key; skipped")
            continue
        title = entry.title if entry.title is not None else linux
        k = len(boot)
        boot.append(
            BootEntry(
                title=title,
                kernel=FileRef(normalize_path(linux)),
                initrds=tuple(
                    FileRef(normalize_path(w))
                    for i in entry.initrds
                    for w in split_words(expand_options(i, env.get))
                ),
                args=" ".join(split_words(expand_options(entry.options or "", env.get))),
                id=entry.filename,
                index_path=str(k),
                title_path=title,
                source=entry.path,
                loader="linux",
            )
        )
    return BootMenu(
        entries=tuple(boot),
        source=found_dir,
        format="bls",
        default=None,
        default_index=0,
        warnings=tuple(warnings),
    )


GRUBENV_PATHS = ("/grub2/grubenv", "/boot/grub2/grubenv", "/grub/grubenv", "/boot/grub/grubenv")


def _grubenv(files: ConfigFiles, limits: Limits) -> dict[str, str]:
    for path in GRUBENV_PATHS:
        data = read_capped(files, path, max_bytes=limits.max_file_bytes, what="grubenv")
        if data is None:
            continue
        block = parse_envblk(data)
        if block is not None:
            return block.variables
    return {}
