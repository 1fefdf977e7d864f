"""What the sandboxed parser can import once it is inside its empty root.

The child chroots into an empty tmpfs (`sandbox`), where the host's Python
library is no longer visible, so everything it may import while parsing
must be in hand before.  Importing every reader up front (each Dissect
module compiles its C structure definitions at import: 0.13-0.2 s for all
of them) cost every ``--runas`` boot the readers of every filesystem,
when a disk needs one.  Instead, before the sandbox is entered, `prepare`:

* imports what every boot needs (our own config and disk modules) and
  the extension modules the readers may load (a shared library cannot be
  loaded from memory);
* reads, without executing, the byte-compiled files (or, where there is
  no valid one, the sources) of the readers and of the pure-Python modules
  they import (`LAZY`), and installs `MemoryFinder` first on
  ``sys.meta_path``;
* removes the path-based finder, so that an import of anything else fails
  at once inside the sandbox, exactly as it would in a test outside it.

Inside the sandbox ``import dissect.extfs`` then runs the code read
before, and only the one reader the superblock sniff picks is executed,
as in an unsandboxed run.  The bytes come from the same installed files an
ordinary import reads, opened as root before the privilege drop; nothing
is cached anywhere and nothing is written (``set_data`` is a no-op).

`check_closure` (a test runs it) imports every reader with only the
prepared modules available, so a new dependency of a reader fails a test
rather than a boot.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

#: Imported before the sandbox: cheap, needed by every boot, or native code.
EAGER = (
    # What every boot runs: the guest side, the disk layer, the config search.
    "pvgrub_py.bootloader.guest",
    "pvgrub_py.bootloader.choose",
    "pvgrub_py.bootloader.plan",
    "pvgrub_py.bootloader.wire",
    "pvgrub_py.disk.volumes",
    "pvgrub_py.disk.extract",
    "pvgrub_py.disk.extents",
    "pvgrub_py.bootcfg.search",
    "ctypes",  # dissect.cstruct, and the sandbox itself
    "dissect",  # the namespace package; its modules are LAZY
    # Native modules the readers load (shared libraries need a path; those
    # built into the interpreter are skipped, see `prepare`).
    "dissect.util._native",
    # Btrfs and qcow2 zstd: dissect reads them with compression.zstd
    # (Python 3.14) or backports.zstd, where one is installed.  Not
    # python-zstandard nor python-lz4: no reader imports those (LZ4 and LZO
    # are dissect.util's own), and loading them cost every boot ~1 ms.
    "backports.zstd",
    "zlib",
    "_lzma",
    "_bz2",
    "_datetime",
    "_elementtree",
    "pyexpat",
    "unicodedata",
    "array",
    "binascii",
    "grp",
    "pwd",
    # Not _hashlib (OpenSSL, ~2 ms): no reader a boot runs hashes anything;
    # dissect.hypervisor imports hashlib, which then falls back to these
    # (built into Debian's interpreter, shared libraries elsewhere).
    "_md5",
    "_sha1",
    "_sha256",
    "_sha512",
    "_sha3",
    "_blake2",
    "_locale",
    "_string",
    "_opcode",  # dis (inspect, dataclasses: pprint's, which dissect.cstruct imports)
)
#: The codecs the readers decode names with (FAT and Joliet use UTF-16):
#: read with `LAZY`, run by the first lookup (``codecs.lookup`` imports
#: ``encodings.<name>``), so a disk that needs none costs none of them.
CODECS = (
    "encodings.ascii",
    "encodings.cp437",
    "encodings.idna",
    "encodings.latin_1",
    "encodings.punycode",  # what idna decodes "xn--" labels with
    "encodings.utf_16",
    "encodings.utf_16_be",
    "encodings.utf_16_le",
    "encodings.utf_8",
)
#: Read before the sandbox, run only if imported: the readers, the libraries
#: they use, and the pure-Python standard modules those import.  A package
#: brings all its submodules.
LAZY = (
    # Our config parsers and disk formats (the ones a disk does not use are
    # never run), the filesystem readers, the libraries they use.
    "pvgrub_py.bootcfg",
    "pvgrub_py.disk",
    "dissect.cstruct",
    "dissect.util",
    "dissect.extfs",
    "dissect.xfs",
    "dissect.btrfs",
    "dissect.fat",
    "dissect.volume",
    "dissect.hypervisor",
    "pycdlib",
    "defusedxml",
    # The standard library modules the above import (`check_closure`);
    # pathlib, shutil, random and their imports ran here as a side effect of
    # importing importlib.abc until it went: now they are read like the rest.
    "_compression",
    "_strptime",
    # dataclasses (pprint's, which dissect.cstruct imports) and what it
    # imports: our own records no longer load it before the sandbox
    # (`pvgrub_py.record`), so the readers that need it read it here.
    "ast",
    "dataclasses",
    "dis",
    "inspect",
    "linecache",
    "opcode",
    "token",
    "tokenize",
    "base64",
    "bisect",
    "bz2",
    "calendar",
    "datetime",
    *CODECS,
    "fnmatch",
    "hashlib",
    "hmac",
    "ipaddress",
    "locale",
    "logging",
    "lzma",
    "ntpath",
    "pathlib",
    "plistlib",
    "pprint",
    "random",
    "shutil",
    "string",
    "stringprep",
    "tarfile",
    "textwrap",
    "traceback",
    "urllib",
    # uuid (and the platform module it asks for the system name): the
    # Dissect readers and pycdlib import it; our own GPT and superblock
    # code no longer does (`pvgrub_py.disk.guid`), so it is read, not run.
    "uuid",
    "platform",
    "xml",
)
#: The readers `check_closure` imports, as the disk layer does.
READERS = (
    "pvgrub_py.bootcfg.grub2",
    "pvgrub_py.bootcfg.grub2_commands",
    "pvgrub_py.bootcfg.grub2_testcmd",
    "pvgrub_py.bootcfg.bls",
    "pvgrub_py.bootcfg.extlinux",
    "pvgrub_py.bootcfg.grub_legacy",
    "pvgrub_py.disk.lvm",
    "pvgrub_py.disk.qcow2",
    "pvgrub_py.disk.readers.extfs",
    "pvgrub_py.disk.readers.xfs",
    "pvgrub_py.disk.readers.btrfs",
    "pvgrub_py.disk.readers.fat",
    "pvgrub_py.disk.readers.iso9660",
    "dissect.volume.lvm",
    "dissect.volume.lvm.physical",
    "dissect.hypervisor.disk.qcow2",
    "dissect.util.compression.lz4",
    "dissect.util.compression.lzo",
    "dissect.util.compression.lznt1",
    "_strptime",  # time.strptime, which pycdlib calls for ISO 9660 dates
)


class _Entry:
    __slots__ = ("mtime", "package", "pyc", "pyc_path", "size", "source", "source_bytes")

    def __init__(self, source: str, package: bool) -> None:
        self.source = source
        self.package = package
        self.source_bytes: bytes | None = None
        self.pyc_path = importlib.util.cache_from_source(source)
        self.pyc: bytes | None = None
        self.mtime = 0.0
        self.size = 0


def _read(path: str) -> bytes | None:
    """The whole file, or None; os-level calls (no file object): ~280 of
    these run before the sandbox, on every ``--runas`` boot."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        want = os.fstat(fd).st_size + 1  # one read, if the size holds
        parts: list[bytes] = []
        while True:
            data = os.read(fd, want)
            parts.append(data)
            if len(data) < want:  # a short read of a regular file: its end
                return data if len(parts) == 1 else b"".join(parts)
    except OSError:
        return None
    finally:
        os.close(fd)


def _capture(entry: _Entry) -> bool:
    """Read the entry's byte code, or its source when that is stale or missing."""
    try:
        st = os.stat(entry.source)
    except OSError:
        return False
    entry.mtime, entry.size = st.st_mtime, st.st_size
    pyc = _read(entry.pyc_path)
    # importlib's own check (timestamp pycs): magic, flags 0, mtime, size.
    if (
        pyc is not None
        and len(pyc) >= 16
        and pyc[:4] == importlib.util.MAGIC_NUMBER
        and pyc[4:8] == b"\0\0\0\0"
        and int.from_bytes(pyc[8:12], "little") == int(st.st_mtime) & 0xFFFFFFFF
        and int.from_bytes(pyc[12:16], "little") == st.st_size & 0xFFFFFFFF
    ):
        entry.pyc = pyc
        return True
    entry.source_bytes = _read(entry.source)
    return entry.source_bytes is not None


class _MemoryLoader(importlib.machinery.SourceFileLoader):
    """importlib's source loader, its file reads answered from memory."""

    def __init__(self, fullname: str, entry: _Entry) -> None:
        super().__init__(fullname, entry.source)
        self._entry = entry

    def get_data(self, path: str) -> bytes:
        entry = self._entry
        if path == entry.pyc_path and entry.pyc is not None:
            return entry.pyc
        if path == entry.source and entry.source_bytes is not None:
            return entry.source_bytes
        raise OSError(f"{path}: not read before the sandbox")

    def path_stats(self, path: str) -> dict[str, float | int]:
        return {"mtime": self._entry.mtime, "size": self._entry.size}

    def set_data(self, path: str, data: Any, *, _mode: int = 0o666) -> None:
        pass  # never write byte code from the sandbox


class MemoryFinder:
    """Finds the modules `prepare` read, and nothing else.

    A meta path finder needs only ``find_spec``; deriving from
    ``importlib.abc.MetaPathFinder`` would import importlib.abc, which
    imports importlib.resources, tempfile and shutil: ~2.5 ms of every
    ``--runas`` boot, in the child, before it can parse.
    """

    def __init__(self) -> None:
        self.entries: dict[str, _Entry] = {}

    def add(self, name: str) -> None:
        """*name* (a module, or a package and all its submodules)."""
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            if spec is not None and spec.submodule_search_locations:  # a namespace package
                for where in spec.submodule_search_locations:
                    self._walk(name, where)
            return
        locations = spec.submodule_search_locations
        entry = _Entry(spec.origin, bool(locations))
        if _capture(entry):
            self.entries[name] = entry
        for where in locations or ():
            self._walk(name, where)

    def _walk(self, package: str, where: str) -> None:
        for name, path, is_package in _modules_under(package, where):
            if name in self.entries:
                continue
            entry = _Entry(path, is_package)
            if _capture(entry):
                self.entries[name] = entry

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        entry = self.entries.get(fullname)
        if entry is None:
            return None
        return importlib.util.spec_from_file_location(
            fullname, entry.source, loader=_MemoryLoader(fullname, entry),
            submodule_search_locations=[os.path.dirname(entry.source)] if entry.package else None,
        )  # fmt: skip


def _modules_under(package: str, where: str) -> Iterator[tuple[str, str, bool]]:
    """(module name, source path, is a package) for every module below *where*."""
    try:
        names = sorted(os.listdir(where))
    except OSError:
        return
    for base in names:
        path = os.path.join(where, base)
        if base.endswith(".py") and base != "__init__.py":
            yield f"{package}.{base[:-3]}", path, False
        elif base.isidentifier() and os.path.isfile(os.path.join(path, "__init__.py")):
            sub = f"{package}.{base}"
            yield sub, os.path.join(path, "__init__.py"), True
            yield from _modules_under(sub, path)


def prepare(*, lazy: Sequence[str] = LAZY, eager: Sequence[str] = EAGER) -> MemoryFinder:
    """Import *eager*, read *lazy*; only these can be imported afterwards.

    An *eager* module built into the interpreter (Debian's has unicodedata,
    pyexpat, _elementtree, _datetime ... built in) needs no file, so it is
    left to the first import, as the readers' pure-Python modules are.
    """
    builtin = sys.builtin_module_names
    for name in eager:
        if name in builtin:
            continue
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    finder = MemoryFinder()
    for name in lazy:
        with contextlib.suppress(ImportError, ValueError):
            finder.add(name)
    sys.meta_path[:] = [
        finder,
        *(f for f in sys.meta_path if f is not importlib.machinery.PathFinder),
    ]
    sys.path_importer_cache.clear()
    return finder


def check_closure(readers: Sequence[str] = READERS) -> list[str]:
    """After `prepare`: import every reader; the ones that fail, with why."""
    failed = []
    for name in readers:
        try:
            importlib.import_module(name)
        except ImportError as e:
            failed.append(f"{name}: {e}")
    return failed
