"""What the sandboxed child can import once its root is empty (`preload`).

The child reads the readers' byte code before the sandbox and runs only the
one a disk needs.  These tests take away the path-based importer exactly as
the child does, outside any sandbox, so a reader that gains a dependency
`preload` does not hold fails here, not in a boot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

DRIVER = r"""
import json, sys
sys.path[:0] = sys.argv[1:]  # run with -S: none of site's imports are there
from pvgrub_py.bootloader import preload
finder = preload.prepare()
heavy_before = sorted(m for m in sys.modules if m.startswith(("dissect.extfs", "dissect.xfs",
                      "dissect.btrfs", "dissect.fat", "dissect.hypervisor", "pycdlib")))
codecs_before = sorted(m for m in sys.modules if m in ("encodings.cp437", "encodings.idna",
                       "encodings.utf_16_le", "encodings.utf_16_be", "encodings.utf_16"))
decoded = [b"\xe9\x00".decode("utf-16-le"), b"\x00\xe9".decode("utf-16-be"),
           "\xe9".encode("utf-16").decode("utf-16"), b"\x82".decode("cp437"),
           b"xn--bcher-kva".decode("idna"), b"\xe9".decode("latin-1"), b"a".decode("ascii")]
openssl_before = "_hashlib" in sys.modules
unused_before = sorted(m for m in sys.modules if m.split(".")[0] in ("zstandard", "lz4"))
failed = preload.check_closure()
import hashlib
digest = hashlib.sha256(b"abc").hexdigest()
import importlib
try:
    importlib.import_module("http.server")  # neither eager nor lazy
    outside = "imported"
except ImportError:
    outside = "ImportError"
ext = sys.modules["dissect.xfs"]
print(json.dumps({"heavy_before": heavy_before, "failed": failed, "outside": outside,
                  "codecs_before": codecs_before, "decoded": decoded,
                  "openssl_before": openssl_before, "digest": digest,
                  "unused_before": unused_before,
                  "reader_loader": type(ext.__spec__.loader).__name__,
                  "reader_file": ext.__file__, "entries": len(finder.entries)}))
"""


def _run() -> dict[str, object]:
    # Without site (-S), so that nothing it imports (an editable install's
    # finder imports pathlib, fnmatch, urllib ...) hides a missing module;
    # the child has at least what this interpreter has at that point.
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    out = subprocess.run([sys.executable, "-S", "-c", DRIVER, *paths], capture_output=True,
                         text=True, check=True, timeout=120)  # fmt: skip
    doc: dict[str, object] = json.loads(out.stdout.splitlines()[-1])
    return doc


def test_every_reader_imports_from_memory_and_nothing_else_does() -> None:
    doc = _run()
    # No reader is executed by prepare(): only the one a disk needs runs.
    assert doc["heavy_before"] == []
    # The readers' codecs are read, not run: the first lookup runs one,
    # from memory (this needs no path-based importer).
    assert doc["codecs_before"] == []
    assert doc["decoded"] == ["\xe9", "\xe9", "\xe9", "\xe9", "b\xfccher", "\xe9", "a"]
    # OpenSSL is not loaded for readers that hash nothing; hashlib (which
    # dissect.hypervisor imports) works from the built-in modules.
    assert doc["openssl_before"] is False
    assert doc["digest"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    # Nor python-zstandard and python-lz4, which no reader uses (dissect
    # reads zstd with compression.zstd or backports.zstd, LZ4 itself).
    assert doc["unused_before"] == []
    # ... and every reader can be imported with only what prepare() read.
    assert doc["failed"] == []
    assert doc["reader_loader"] == "_MemoryLoader"
    assert str(doc["reader_file"]).endswith("dissect/xfs/__init__.py")
    # Anything else is refused, as inside the empty root.
    assert doc["outside"] == "ImportError"
