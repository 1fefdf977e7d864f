"""The read-only view of guest volumes that every boot-config parser uses.

Parsers never touch the host filesystem or a disk image directly: they see
one or more *volumes* (filesystems, usually partitions of the guest's first
disk) through the small `ConfigFiles` protocol (defined in
`pvgrub_py.bootcfg.config_files`, exported here).  The disk layer
implements it over ext4/xfs/btrfs/iso9660 images; `DictVolume` implements
it over an in-memory dict for tests and fixtures.

The protocol is deliberately minimal:

``identity``
    A `VolumeIdentity`: the GRUB 2 device name (``hd0,msdos1``,
    ``hd0,gpt2``, ``hd0`` for an unpartitioned disk), the filesystem UUID
    and label.  ``search --fs-uuid/--label`` (GRUB manual, "search")
    matches against these and sets its variable to the *name*, so the name
    should be what GRUB itself would call the partition.

``read(path, max_bytes)``
    The bytes of a regular file, or ``None`` if there is none at *path*
    (missing, a directory, a dangling link).  It must not return more than
    ``max_bytes + 1`` bytes: one extra byte lets the caller tell an
    oversized file from one of exactly ``max_bytes`` without reading a
    1 GiB "config".

``stat(path)``
    A `PathInfo` (is it a directory, its size) or ``None``.  Needed for
    GRUB's ``[ -d/-e/-f/-s ]`` tests without reading the file.

``list_dir(path)``
    The entry names of a directory (no ``.``/``..``), or ``None`` if it is
    not a directory.  Needed for BLS ``loader/entries``.

Paths handed to a volume are always absolute and normalised (``/a/b``, no
``.``/``..``/``//`` components, no trailing slash except ``/`` itself);
`normalize_path` does that.  Symlink resolution, case folding (FAT,
iso9660) and permission checks are the implementation's business.

A `VolumeSet` groups the volumes of one guest and knows which one holds
the config (the initial ``$root``); it resolves GRUB device strings
(``hd0,msdos1``, ``hd0,1``, ``(/dev/xvda,msdos1)``) to volumes.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence

from pvgrub_py._lazy import lazy_attributes
from pvgrub_py.bootcfg.errors import BootConfigError
from pvgrub_py.bootcfg.limits import MAX_CONFIG_BYTES
from pvgrub_py.bootcfg.volume_info import PathInfo as PathInfo
from pvgrub_py.bootcfg.volume_info import VolumeIdentity as VolumeIdentity
from pvgrub_py.record import field, record

TYPE_CHECKING = False

if TYPE_CHECKING:
    from pvgrub_py.bootcfg.config_files import ConfigFiles as ConfigFiles
else:
    # ConfigFiles: a `typing.Protocol`, run on first use, not by every boot.
    __getattr__ = lazy_attributes(__name__, {"ConfigFiles": "pvgrub_py.bootcfg.config_files"})


def normalize_path(path: str) -> str:
    """Make *path* absolute and canonical the way the volume protocol expects.

    A relative path is taken from the volume root, as GRUB's ``test`` does
    for a name without a slash (``grub-core/commands/test.c``).
    """
    if not path.startswith("/"):
        path = "/" + path
    norm = posixpath.normpath(path)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    return norm


def read_capped(
    files: ConfigFiles, path: str, *, max_bytes: int = MAX_CONFIG_BYTES, what: str = "config"
) -> bytes | None:
    """Read *path* and refuse it if it is larger than *max_bytes*."""
    data = files.read(normalize_path(path), max_bytes)
    if data is None:
        return None
    if len(data) > max_bytes:
        raise BootConfigError(
            f"({files.identity.name}){normalize_path(path)}",
            f"{what} file is larger than the {max_bytes}-byte cap",
        )
    return data


def decode_config(data: bytes) -> str:
    """Decode config bytes the way GRUB treats them: as bytes, passed through.

    GRUB never rejects a config for its encoding and never re-encodes it: the
    bytes of a ``linux`` line are the bytes the kernel gets.  So valid UTF-8
    decodes as UTF-8 and every other byte becomes a lone surrogate
    (``surrogateescape``), *per byte*, whatever the rest of the file holds;
    `encode_config` (and every writer of a cmdline, a result record or an
    event) turns the text back into exactly the original bytes.  Decoding
    the whole file as latin-1 when one byte is not UTF-8 would double-encode
    every valid multi-byte character (``café`` booted and measured as
    ``cafÃ©``).  GRUB reads a config line by line into C strings, so a NUL
    ends its *line*; the next line is read normally.
    """
    if b"\0" in data:
        data = b"\n".join(line.split(b"\0", 1)[0] for line in data.split(b"\n"))
    return data.decode("utf-8", "surrogateescape")


def encode_config(text: str) -> bytes:
    """The config bytes *text* was decoded from (`decode_config`'s inverse)."""
    return text.encode("utf-8", "surrogateescape")


#: The blanks the config languages split words on: ASCII only (GRUB's
#: ``grub_isspace``, syslinux's ``<= ' '`` test, the BLS parsers).  Python's
#: ``str.split()`` and ``str.strip()`` with no argument also take U+0085,
#: U+00A0, U+2028 and other Unicode spaces, which GRUB passes through as
#: ordinary bytes of a word.
ASCII_BLANKS = " \t\n\r\f\v"
_BLANK_RUN = re.compile(r"[ \t\n\r\f\v]+")


def split_words(text: str) -> list[str]:
    """``text.split()`` on ASCII blanks only."""
    text = text.strip(ASCII_BLANKS)
    return _BLANK_RUN.split(text) if text else []


def split_first(text: str) -> list[str]:
    """``text.split(None, 1)`` on ASCII blanks only."""
    text = text.lstrip(ASCII_BLANKS)
    return _BLANK_RUN.split(text, maxsplit=1) if text else []


def _as_bytes(data: bytes | str) -> bytes:
    """A test's file contents as bytes: text as `decode_config` would have produced
    it, any other lone surrogate (which no config decodes to) as its UTF-8 form."""
    if not isinstance(data, str):
        return bytes(data)
    try:
        return encode_config(data)
    except UnicodeEncodeError:
        return data.encode("utf-8", "surrogatepass")


@record
class DictVolume:
    """A `ConfigFiles` backed by a dict of path → contents (tests, fixtures).

    Directories are implied by the file paths; *dirs* adds empty ones.
    """

    files: Mapping[str, bytes | str]
    dirs: Iterable[str] = ()
    volume: VolumeIdentity = field(default_factory=lambda: VolumeIdentity("hd0,msdos1"))

    def __post_init__(self) -> None:
        self._files: dict[str, bytes] = {}
        for path, data in self.files.items():
            self._files[normalize_path(path)] = _as_bytes(data)
        self._dirs: set[str] = {"/"}
        for path in self._files:
            self._add_parents(path)
        for d in self.dirs:
            nd = normalize_path(d)
            self._dirs.add(nd)
            self._add_parents(nd)

    def _add_parents(self, path: str) -> None:
        parent = posixpath.dirname(path)
        while parent not in self._dirs:
            self._dirs.add(parent)
            parent = posixpath.dirname(parent)

    @property
    def identity(self) -> VolumeIdentity:
        return self.volume

    def read(self, path: str, max_bytes: int) -> bytes | None:
        data = self._files.get(normalize_path(path))
        if data is None:
            return None
        return data[: max_bytes + 1]

    def stat(self, path: str) -> PathInfo | None:
        p = normalize_path(path)
        if p in self._dirs:
            return PathInfo(is_dir=True, size=0)
        data = self._files.get(p)
        if data is None:
            return None
        return PathInfo(is_dir=False, size=len(data))

    def list_dir(self, path: str) -> list[str] | None:
        p = normalize_path(path)
        if p not in self._dirs:
            return None
        prefix = p.rstrip("/") + "/"
        names = {
            q[len(prefix) :].split("/", 1)[0]
            for q in (*self._files, *self._dirs)
            if q.startswith(prefix) and q != prefix
        }
        return sorted(names)


# GRUB 2 disk/partition names, plus the Linux-style names some Xen configs
# carry (Debian's grub-pc in a PV guest writes ``(/dev/xvda,msdos1)``) and
# GRUB's own Xen PV disk names (``xen/xvda``, grub-core/disk/xen/xendisk.c).
_DISK_RE = re.compile(
    r"^(?:hd(?P<hd>[0-9]{1,6})|(?:/dev/|xen/)?(?:xvd|sd|vd|hd)(?P<letters>[a-z]{1,4}))"
    r"(?:,(?:msdos|gpt|bsd|sun|dvh|amiga|apple|acorn|plan|sunpc)?(?P<part>[0-9]{1,6}))?$"
)


def parse_disk_name(name: str) -> tuple[int, int | None] | None:
    """``hd0,msdos1`` → (0, 1); ``hd1`` → (1, None); ``xen/xvdb,gpt2`` → (1, 2)."""
    m = _DISK_RE.match(name.strip())
    if m is None:
        return None
    if m.group("hd") is not None:
        disk = int(m.group("hd"))
    else:
        disk = 0
        for ch in m.group("letters"):
            disk = disk * 26 + (ord(ch) - ord("a") + 1)
        disk -= 1
    part = m.group("part")
    return disk, (int(part) if part is not None else None)


class VolumeSet:
    """The volumes of one guest, one of them holding the config being parsed.

    Iteration order is the order ``search`` scans devices in; the disk layer
    should list them in partition order, as GRUB enumerates them.
    """

    def __init__(self, volumes: Sequence[ConfigFiles], primary: int = 0) -> None:
        if not volumes:
            raise ValueError("a VolumeSet needs at least one volume")
        self._volumes: tuple[ConfigFiles, ...] = tuple(volumes)
        self._primary = self._volumes[primary]

    @classmethod
    def single(cls, files: ConfigFiles) -> VolumeSet:
        return cls([files])

    @property
    def primary(self) -> ConfigFiles:
        """The volume the config file was found on (GRUB's initial ``$root``)."""
        return self._primary

    def with_primary(self, files: ConfigFiles) -> VolumeSet:
        """The same set with *files* as the config volume."""
        vols = list(self._volumes)
        if files not in vols:
            vols.append(files)
        return VolumeSet(vols, vols.index(files))

    def __iter__(self) -> Iterator[ConfigFiles]:
        return iter(self._volumes)

    def __len__(self) -> int:
        return len(self._volumes)

    def resolve(self, device: str | None) -> ConfigFiles | None:
        """The volume a GRUB device string names, ``None`` if there is none.

        ``None``/empty means the config volume.  Besides exact names, GRUB's
        equivalent spellings match (``hd0,1`` = ``hd0,msdos1``, parentheses
        optional).  As an extension taken from petitboot, a bare filesystem
        UUID also names a device: GRUB itself cannot open ``(UUID)/path``,
        so no config that works under GRUB changes meaning.
        """
        if device is None:
            return self._primary
        dev = device.strip()
        if dev.startswith("(") and dev.endswith(")"):
            dev = dev[1:-1]
        if not dev:
            return self._primary
        for vol in self._volumes:
            if vol.identity.name == dev:
                return vol
        wanted = parse_disk_name(dev)
        if wanted is not None:
            for vol in self._volumes:
                if parse_disk_name(vol.identity.name) == wanted:
                    return vol
        low = dev.lower()
        for vol in self._volumes:
            uuid = vol.identity.uuid
            if uuid is not None and uuid.lower() == low:
                return vol
        return None

    def find_uuid(self, uuid: str) -> ConfigFiles | None:
        """First volume whose filesystem UUID matches (case-insensitive, as GRUB)."""
        low = uuid.lower()
        for vol in self._volumes:
            if vol.identity.uuid is not None and vol.identity.uuid.lower() == low:
                return vol
        return None

    def find_label(self, label: str) -> ConfigFiles | None:
        """First volume with exactly this filesystem label."""
        for vol in self._volumes:
            if vol.identity.label == label:
                return vol
        return None


def split_device_path(spec: str) -> tuple[str | None, str] | None:
    """Split a GRUB file name ``(dev)/path`` into (device, path).

    ``/path`` gives (None, "/path"): the file is on ``$root``.  Returns
    ``None`` for names GRUB cannot open as a file: an unterminated
    ``(dev`` or a device with no path (GRUB manual, "File name syntax").
    """
    if spec.startswith("("):
        close = spec.find(")")
        if close < 0:
            return None
        device = spec[1:close]
        path = spec[close + 1 :]
        if not path:
            return None
        return device, path
    return None, spec
