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

Inside the sandbox ``import dissect.xfs`` (an XFS disk) then runs the code read
before, and only the one reader the superblock sniff picks is executed,
as in an unsandboxed run.  The bytes come from the same installed files an
ordinary import reads, opened as root before the privilege drop; nothing
is written from the sandbox (``set_data`` is a no-op).

Reading ~280 files cost every boot ~7 ms, so `LAZY` is read from one
file when it can be: the *bundle* (`bundle_path`, beside this module's
byte code, ``preload.<cache tag>.bundle``), written by
``python -m pvgrub_py.bootloader.preload --build`` (`build_bundle`) and,
like a .pyc, by a boot that found none valid.  It holds each module's
name, source path, whether it is a package, its source's mtime and size
and its byte code.  `prepare` maps it (a module's bytes are copied only
when it is imported) and uses it only if:

* it is a regular file (not a link) of root or of the effective uid, not
  writable by group or others: it is run as code, trusted as a .pyc in a
  root-owned tree is;
* it was made by this interpreter (magic number, cache tag, version,
  optimisation level) for this `LAZY` list, and is whole;
* every source still has the mtime (ns) and size the byte code was made
  from (importlib's own test, stricter), every directory listed to find
  the submodules its mtime, and every `LAZY` name resolves to the same
  place (sys.path, or a file earlier on it, would change that).  That last
  test costs ~0.9 ms (57 lookups); when only the interpreter's own finders
  are installed, sys.path after the script's own entry is the one the
  bundle was made with and that entry holds none of the names, it is made
  as importlib's `FileFinder` caches its listings: by the mtime of each
  directory those lookups list (`_search_state`).

Anything else (missing, untrusted, damaged, stale) is ignored, with why at
``--debug`` level only, and the files are read as before.

`check_closure` (a test runs it) imports every reader with only the
prepared modules available, so a new dependency of a reader fails a test
rather than a boot.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import marshal
import os
import stat
import sys
from collections.abc import Iterator, Sequence
from types import ModuleType

from pvgrub_py.bootloader.debug import debug

# Not `typing` (~1.5 ms of the child, before it can parse): annotations only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import ctypes
    from importlib.abc import Loader
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
    # built into the interpreter are skipped, see `prepare`; dissect.util's
    # is `NATIVE`).
    # Btrfs and qcow2 zstd: dissect reads them with compression.zstd
    # (Python 3.14) or backports.zstd, where one is installed.  Not
    # python-zstandard nor python-lz4: no reader imports those (LZ4 and LZO
    # are dissect.util's own), and loading them cost every boot ~1 ms.
    "backports.zstd",
    "zlib",
    # Not _lzma and _bz2 (~0.45 ms): no reader decompresses xz or bzip2;
    # the one module here importing lzma and bz2 at its top (shutil) does
    # it under ``except ImportError``, and does without them in the sandbox.
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
#: Extension modules of packages whose ``__init__`` need not run before the
#: sandbox: each is loaded alone (a shared library needs its path) and
#: handed to the first import of it, its package left to run then, from
#: `LAZY`.  Importing dissect.util._native ran dissect/util/__init__.py,
#: which imports every compression and hash module (~5 ms): a disk read
#: without Dissect needs none of them.
NATIVE = ("dissect.util._native",)
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
    # copy (and the weakref it imports): dataclasses and --offset
    # (`choose`) import it; a boot without either never runs it.
    "copy",
    "weakref",
    "_weakrefset",
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
    # typing: the readers (ours on Dissect, Dissect's own) import it; the
    # boot path up to the plan no longer does (`pvgrub_py.named_tuple`).
    "typing",
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
    "pvgrub_py.disk.readers.ext4",
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
    __slots__ = ("_pyc_path", "blob", "end", "is_pyc", "mtime", "mtime_ns", "package", "pyc",
                 "size", "source", "source_bytes", "start")  # fmt: skip

    def __init__(self, source: str, package: bool) -> None:
        self.source = source
        self.package = package
        self.source_bytes: bytes | None = None
        self.pyc: bytes | None = None
        self._pyc_path: str | None = None
        self.mtime = 0.0
        self.mtime_ns = 0
        self.size = 0
        #: From a bundle: the bytes are ``blob[start:end]`` (the byte code
        #: if `is_pyc`, else the source), copied when imported.
        self.blob: _Mapping | None = None
        self.start = self.end = 0
        self.is_pyc = False

    @property
    def pyc_path(self) -> str:
        """Where importlib looks for the byte code (computed when asked:
        ~3 us each, and a bundle's entries are mostly never imported)."""
        if self._pyc_path is None:
            self._pyc_path = importlib.util.cache_from_source(self.source)
        return self._pyc_path

    def data(self, pyc: bool) -> bytes | None:
        """The byte code (*pyc*) or the source, if that is what was read."""
        if self.blob is not None:
            return self.blob[self.start : self.end] if pyc == self.is_pyc else None
        return self.pyc if pyc else self.source_bytes


def _read(path: str) -> bytes | None:
    """The whole file, or None; os-level calls (no file object): ~280 of
    these run before the sandbox when there is no valid bundle."""
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
    entry.mtime, entry.mtime_ns, entry.size = st.st_mtime, st.st_mtime_ns, st.st_size
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
        data = None
        if path == entry.source:
            data = entry.data(pyc=False)
        elif path == entry.pyc_path:
            data = entry.data(pyc=True)
        if data is None:
            raise OSError(f"{path}: not read before the sandbox")
        return data

    def path_stats(self, path: str) -> dict[str, float | int]:
        return {"mtime": self._entry.mtime, "size": self._entry.size}

    def set_data(self, path: str, data: Any, *, _mode: int = 0o666) -> None:
        pass  # never write byte code from the sandbox


class _Loaded:
    """The loader of a `NATIVE` module: the module loaded before the sandbox."""

    def __init__(self, module: ModuleType) -> None:
        self._module = module

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return self._module

    def exec_module(self, module: ModuleType) -> None:
        pass  # initialised when it was loaded


def _load_native(name: str) -> ModuleType | None:
    """Extension module *name* loaded without importing its package, or
    None (not installed, or not an extension module)."""
    package = name.rpartition(".")[0]
    try:
        parent = importlib.util.find_spec(package)  # runs the grandparents only
        if parent is None or not parent.submodule_search_locations:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, parent.submodule_search_locations)
        if spec is None or not isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
            return None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except (ImportError, ValueError):
        return None
    finally:
        # A single-phase extension registers itself: it is imported, with
        # its package, when a reader imports it (`MemoryFinder.natives`).
        sys.modules.pop(name, None)
    return module


#: How a name resolved: (spec origin, submodule search locations), or
#: (None, None) when it did not.
_Resolved = tuple[str | None, tuple[str, ...] | None]


class MemoryFinder:
    """Finds the modules `prepare` read, and nothing else.

    A meta path finder needs only ``find_spec``; deriving from
    ``importlib.abc.MetaPathFinder`` would import importlib.abc, which
    imports importlib.resources, tempfile and shutil: ~2.5 ms of every
    ``--runas`` boot, in the child, before it can parse.
    """

    def __init__(self) -> None:
        self.entries: dict[str, _Entry] = {}
        #: What the entries depend on besides their own files, which a
        #: bundle is checked against: how each name given to `add`
        #: resolved, and the mtime of each directory listed.
        self.roots: list[tuple[str, str | None, tuple[str, ...] | None]] = []
        self.dirs: dict[str, int] = {}
        #: What resolving the roots depended on (`_search_state`).
        self.search: _SearchState = ((), ())
        #: The bundle the entries came from; None when read file by file.
        self.bundle: str | None = None
        #: `NATIVE` modules loaded, not yet imported.
        self.natives: dict[str, ModuleType] = {}

    def add(self, name: str) -> None:
        """*name* (a module, or a package and all its submodules)."""
        origin, locations = _resolve(name)
        self.roots.append((name, origin, locations))
        if origin is None or not origin.endswith(".py"):
            for where in locations or ():  # a namespace package
                self._walk(name, where)
            return
        entry = _Entry(origin, locations is not None)
        if _capture(entry):
            self.entries[name] = entry
        for where in locations or ():
            self._walk(name, where)

    def _walk(self, package: str, where: str) -> None:
        for name, path, is_package in _modules_under(package, where, self.dirs):
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
            native = self.natives.get(fullname)
            if native is None:
                return None
            # A loader by its methods alone (no importlib.abc: see above).
            loader: Loader = _Loaded(native)  # type: ignore[assignment]
            return importlib.machinery.ModuleSpec(fullname, loader, origin=native.__file__)
        return importlib.util.spec_from_file_location(
            fullname, entry.source, loader=_MemoryLoader(fullname, entry),
            submodule_search_locations=[os.path.dirname(entry.source)] if entry.package else None,
        )  # fmt: skip


def _resolve(name: str) -> _Resolved:
    """Where the import system finds *name* now, as `MemoryFinder.add` uses it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None, None
    if spec is None:
        return None, None
    locations = spec.submodule_search_locations
    return spec.origin, None if locations is None else tuple(locations)


def _mtime_ns(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1


#: sys.path after the entry the interpreter put first (the script's
#: directory, or the working directory), and the mtime of each directory
#: resolving the roots lists; empty when it cannot stand for a lookup.
_SearchState = tuple[tuple[str, ...], tuple[tuple[str, int], ...]]
_FILE_FINDER_HOOK = "FileFinder.path_hook.<locals>.path_hook_for_FileFinder"


def _split_path() -> tuple[list[str], list[str]]:
    """sys.path as (the entry put first for the script or ``-m``, the rest):
    the first differs between the build (``make setup``) and a boot
    (libxl runs the installed script) without changing what is found when
    it holds none of the names looked up (`_first_entry_is_neutral`)."""
    first = 0 if sys.flags.safe_path else min(1, len(sys.path))
    return sys.path[:first], sys.path[first:]


def _first_entry_is_neutral(names: Sequence[str]) -> bool:
    """Whether the first entry of sys.path holds nothing a lookup of
    *names*' top-level packages could find (a file or directory named
    after one: a module, an extension module, a package or a namespace
    portion)."""
    first, _ = _split_path()
    if not first:
        return True
    try:
        present = os.listdir(first[0] or os.curdir)
    except OSError:
        return True
    tops = {name.partition(".")[0] for name in names}
    return not any(entry.partition(".")[0] in tops for entry in present)


def _search_state(names: Sequence[str]) -> _SearchState:
    """What resolving *names* (as `_resolve` just did) depended on: the
    rest of sys.path (`_split_path`) and every directory the lookups
    listed: its entries for a top-level name, each enclosing package's
    ``__path__`` (imported by then) for a submodule.  A file added, removed
    or renamed in one of them changes its mtime."""
    if not _standard_import_system() or not _first_entry_is_neutral(names):
        return (), ()
    _, rest = _split_path()
    where = [entry or os.curdir for entry in rest]
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts)):
            package = sys.modules.get(".".join(parts[:i]))
            where.extend(getattr(package, "__path__", ()))
    return tuple(rest), tuple((d, _mtime_ns(d)) for d in dict.fromkeys(where))


def _standard_import_system() -> bool:
    """Only the interpreter's own finders and path hooks: an import then
    depends on nothing but sys.path and the directories it lists."""
    machinery = importlib.machinery
    standard: tuple[object, ...] = (
        machinery.BuiltinImporter, machinery.FrozenImporter, machinery.PathFinder,
    )  # fmt: skip
    installed: list[object] = list(sys.meta_path)
    hooks = sys.path_hooks
    return (
        len(installed) == len(standard)
        and all(a is b for a, b in zip(installed, standard, strict=True))
        and len(hooks) == 2
        and getattr(hooks[0], "__name__", "") == "zipimporter"
        and getattr(hooks[1], "__qualname__", "") == _FILE_FINDER_HOOK
    )


def _same_search(search: _SearchState, names: Sequence[str]) -> bool:
    """Whether resolving *names* again would list the same directories,
    unchanged, with the same finders: then it finds the same files."""
    rest, dirs = search
    if not dirs or tuple(_split_path()[1]) != rest or not _standard_import_system():
        return False
    if not all(_mtime_ns(where) == mtime_ns for where, mtime_ns in dirs):
        return False
    return _first_entry_is_neutral(names)


def _modules_under(
    package: str, where: str, dirs: dict[str, int]
) -> Iterator[tuple[str, str, bool]]:
    """(module name, source path, is a package) for every module below *where*.

    Records in *dirs* the mtime of each directory the answer depends on:
    the ones listed, and the subdirectories that are not packages (one
    becomes a package when an ``__init__.py`` is added to it).
    """
    dirs[where] = _mtime_ns(where)
    try:
        names = sorted(os.listdir(where))
    except OSError:
        return
    for base in names:
        path = os.path.join(where, base)
        if base.endswith(".py") and base != "__init__.py":
            yield f"{package}.{base[:-3]}", path, False
        elif base.isidentifier():
            if os.path.isfile(os.path.join(path, "__init__.py")):
                sub = f"{package}.{base}"
                yield sub, os.path.join(path, "__init__.py"), True
                yield from _modules_under(sub, path, dirs)
            elif base != "__pycache__":
                dirs[path] = _mtime_ns(path)


# The preload bundle: one file holding what `MemoryFinder` reads for LAZY,
# so that the child opens one file instead of ~280.  Layout: BUNDLE_MAGIC,
# the header's length (8 bytes, little-endian), the header (marshal: key,
# roots, dirs, search state, entries, length of the data), then each
# entry's bytes.
BUNDLE_MAGIC = b"PVGRBND\x02"
_PREFIX = len(BUNDLE_MAGIC) + 8


def bundle_path() -> str | None:
    """Where the bundle lives: beside this module's byte code (honouring
    ``sys.pycache_prefix``), named with the cache tag, e.g.
    ``__pycache__/preload.cpython-311.bundle``; None without a cache tag."""
    try:
        pyc = importlib.util.cache_from_source(__file__)
    except NotImplementedError:
        return None
    return pyc.removesuffix(".pyc") + ".bundle"


def _key(lazy: Sequence[str]) -> tuple[bytes, str | None, str, int, tuple[str, ...], int, int]:
    """What the byte code and the module list depend on besides the files,
    this module among them (how it walks, what it bundles)."""
    st = os.stat(__file__)
    return (importlib.util.MAGIC_NUMBER, sys.implementation.cache_tag, sys.version,
            sys.flags.optimize, tuple(lazy), st.st_mtime_ns, st.st_size)  # fmt: skip


class _Mapping:
    """A file mapped read-only and private by libc's mmap, read by slicing:
    a module's bytes are copied (its pages touched) only when it is
    imported.  Not the mmap module: its objects keep a duplicate of the
    descriptor open, and the sandboxed child is to have none but its disk,
    its pipe and /dev/null.  (A mapped file cut short under it would end
    the child with SIGBUS: the bundle is only ever replaced by rename.)"""

    PROT_READ = 1
    MAP_PRIVATE = 2

    def __init__(self, fd: int, size: int) -> None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long)  # fmt: skip
        libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
        addr = libc.mmap(None, size, self.PROT_READ, self.MAP_PRIVATE, fd, 0)
        if addr is None or addr == ctypes.c_void_p(-1).value:  # MAP_FAILED
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))
        self._libc = libc
        self._addr: int | None = addr
        self._size = size
        #: Bounds-checked: a slice past the end is cut, never read.
        self._data: ctypes.Array[ctypes.c_char] = (ctypes.c_char * size).from_address(addr)

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, where: slice) -> bytes:
        return self._data[where]  # type: ignore[return-value] # a c_char array's slice is bytes

    def close(self) -> None:
        """Unmap (only when nothing refers to its entries any more)."""
        import ctypes

        if self._addr is not None:
            self._data = (ctypes.c_char * 0)()
            self._libc.munmap(self._addr, self._size)
            self._addr = None


def _load_bundle(path: str, lazy: Sequence[str]) -> MemoryFinder | None:
    """The finder of the bundle at *path*, or None (with why, at debug
    level) if it is missing, untrusted, damaged or stale."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as e:
        debug(f"{path}: no preload bundle: {e.strerror}")
        return None
    try:
        st = os.fstat(fd)
        # Run as code: trusted as a .pyc in a root-owned tree is.
        if not stat.S_ISREG(st.st_mode) or st.st_uid not in (0, os.geteuid()):
            debug(f"{path}: preload bundle ignored: not a regular file of root or ours")
            return None
        if st.st_mode & 0o022:
            debug(f"{path}: preload bundle ignored: writable by group or others")
            return None
        if st.st_size < _PREFIX:
            debug(f"{path}: preload bundle ignored: truncated")
            return None
        blob = _Mapping(fd, st.st_size)
    except OSError as e:
        debug(f"{path}: preload bundle ignored: {e}")
        return None
    finally:
        os.close(fd)
    try:
        finder, why = _check_bundle(blob, lazy)
    except Exception as e:  # damaged: whatever marshal or unpacking raised
        finder, why = None, f"damaged ({type(e).__name__})"
    if finder is None:
        debug(f"{path}: preload bundle ignored: {why}")
        blob.close()
        return None
    finder.bundle = path
    return finder


def _check_bundle(blob: _Mapping, lazy: Sequence[str]) -> tuple[MemoryFinder | None, str]:
    if blob[: len(BUNDLE_MAGIC)] != BUNDLE_MAGIC:
        return None, "not a bundle"
    base = _PREFIX + int.from_bytes(blob[len(BUNDLE_MAGIC) : _PREFIX], "little")
    key, roots, dirs, search, entries, length = marshal.loads(blob[_PREFIX:base])
    if key != _key(lazy) or [root[0] for root in roots] != list(lazy):
        # (the names checked, so that resolving them imports no other package)
        return None, "made by another interpreter or for another module list"
    if len(blob) != base + length:
        return None, "truncated"
    for where, mtime_ns in dirs:
        if _mtime_ns(where) != mtime_ns:
            return None, f"stale: {where} changed"
    finder = MemoryFinder()
    for name, source, package, mtime_ns, size, is_pyc, start, end in entries:
        try:
            st = os.stat(source)
        except OSError:
            return None, f"stale: {source} is gone"
        if st.st_mtime_ns != mtime_ns or st.st_size != size:
            return None, f"stale: {source} changed"
        if not 0 <= start <= end <= length:
            return None, "damaged"
        entry = _Entry(source, bool(package))
        entry.mtime, entry.mtime_ns, entry.size = st.st_mtime, mtime_ns, size
        entry.blob, entry.start, entry.end, entry.is_pyc = blob, base + start, base + end, is_pyc
        finder.entries[name] = entry
    # Last, the dearest check: each name still resolves to the same place
    # (sys.path, or a file earlier on it, would change that), unless
    # nothing it depends on changed.
    if not _same_search(search, lazy):
        for name, origin, locations in roots:
            if _resolve(name) != (origin, locations):
                return None, f"stale: {name} is found elsewhere now"
    finder.roots = list(roots)
    finder.dirs = dict(dirs)
    finder.search = search
    return finder, ""


def _compiled(entry: _Entry) -> bytes | None:
    """The entry's source compiled as importlib compiles it
    (``source_to_code``), as a timestamp .pyc (PEP 552); None if it does
    not compile (its import then fails in the sandbox, as it would here)."""
    assert entry.source_bytes is not None
    try:
        code = compile(entry.source_bytes, entry.source, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return None
    mtime = (int(entry.mtime) & 0xFFFFFFFF).to_bytes(4, "little")
    size = (entry.size & 0xFFFFFFFF).to_bytes(4, "little")
    return importlib.util.MAGIC_NUMBER + b"\0\0\0\0" + mtime + size + marshal.dumps(code)


def _bundle_chunks(finder: MemoryFinder, lazy: Sequence[str]) -> list[bytes]:
    """The bundle of *finder* (read file by file for *lazy*), in pieces:
    the byte code of each entry, or its source where it does not compile."""
    entries = []
    data: list[bytes] = []
    offset = 0
    for name, entry in finder.entries.items():
        chunk = entry.pyc if entry.pyc is not None else _compiled(entry)
        is_pyc = chunk is not None
        if chunk is None:
            chunk = entry.source_bytes
        assert chunk is not None  # _capture keeps only what it read
        entries.append((name, entry.source, entry.package, entry.mtime_ns, entry.size, is_pyc,
                        offset, offset + len(chunk)))  # fmt: skip
        data.append(chunk)
        offset += len(chunk)
    header = marshal.dumps((_key(lazy), tuple(finder.roots), tuple(finder.dirs.items()),
                            finder.search, tuple(entries), offset))  # fmt: skip
    return [BUNDLE_MAGIC, len(header).to_bytes(8, "little"), header, *data]


def _write_atomically(path: str, chunks: Sequence[bytes]) -> None:
    """*path* holds *chunks* (mode 0644), or is left as it was."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        try:
            os.fchmod(fd, 0o644)  # whatever the umask
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_files(lazy: Sequence[str]) -> MemoryFinder:
    """A finder of *lazy* read file by file.  A name that cannot be found
    is left out: importing it fails in the sandbox, as it would here."""
    finder = MemoryFinder()
    for name in lazy:
        with contextlib.suppress(ImportError, ValueError):
            finder.add(name)
    finder.search = _search_state(lazy)
    return finder


def build_bundle(path: str | None = None, *, lazy: Sequence[str] = LAZY) -> str:
    """Write the bundle `prepare` reads (to *path*, default `bundle_path`),
    compiling the sources that have no valid byte code; its path.  Raises
    OSError when it cannot be written."""
    where = bundle_path() if path is None else path
    if where is None:
        raise OSError("this interpreter has no byte-code cache tag")
    finder = _read_files(lazy)
    os.makedirs(os.path.dirname(where), exist_ok=True)
    _write_atomically(where, _bundle_chunks(finder, lazy))
    return where


def prepare(
    *,
    lazy: Sequence[str] = LAZY,
    eager: Sequence[str] = EAGER,
    native: Sequence[str] = NATIVE,
    bundle: str | bool = True,
) -> MemoryFinder:
    """Import *eager*, load *native*, read *lazy*; only these can be
    imported afterwards.

    An *eager* module built into the interpreter (Debian's has unicodedata,
    pyexpat, _elementtree, _datetime ... built in) needs no file, so it is
    left to the first import, as the readers' pure-Python modules are.

    *lazy* is read from the bundle (*bundle*: True for `bundle_path` if
    *lazy* is `LAZY`, or a path; False for none) when it is valid, else file by file, and then
    the bundle is written for the next run unless byte code is not to be
    written (``-B``) or a module had none: quietly, if it can.
    """
    builtin = sys.builtin_module_names
    for name in eager:
        if name in builtin:
            continue
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    # The default bundle is LAZY's: a run with another list leaves it be.
    default = bundle_path() if tuple(lazy) == LAZY else None
    path = default if bundle is True else bundle or None
    finder = _load_bundle(path, lazy) if path else None
    if finder is None:
        finder = _read_files(lazy)
        # For the next run, as the interpreter writes a .pyc: only when
        # every module had valid byte code (compiling the others here would
        # cost this boot; ``--build`` does it), so that a bundle never keeps
        # a module's source once its byte code is written.
        if (
            path
            and not sys.dont_write_bytecode
            and all(e.pyc is not None for e in finder.entries.values())
        ):
            try:
                _write_atomically(path, _bundle_chunks(finder, lazy))
            except OSError as e:
                debug(f"{path}: preload bundle not written: {e}")
    for name in native:
        if name in sys.modules or name.rpartition(".")[0] in sys.modules:
            with contextlib.suppress(ImportError):  # its package ran: as *eager*
                importlib.import_module(name)
            continue
        module = _load_native(name)
        if module is not None:
            finder.natives[name] = module
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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pvgrub_py.bootloader.preload --build [PATH]``: write the
    bundle (as ``make setup`` does); prints its path."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "--build" or len(args) > 2:
        print("usage: python -m pvgrub_py.bootloader.preload --build [PATH]", file=sys.stderr)
        return 2
    try:
        print(build_bundle(args[1] if len(args) == 2 else None))
    except OSError as e:
        print(f"preload: {e.filename or 'bundle'}: cannot write: {e.strerror or e}",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
