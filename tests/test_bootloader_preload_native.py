"""`preload.NATIVE`: an extension module is loaded before the sandbox
without running its package, which a disk read without Dissect never needs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

DRIVER = r"""
import json, sys
sys.path[:0] = sys.argv[1:]
from pvgrub_py.bootloader import preload
finder = preload.prepare(bundle=False)
before = sorted(m for m in sys.modules if m.startswith("dissect.util"))
import dissect.util.compression as c
util = sys.modules["dissect.util"]
print(json.dumps({"before": before, "natives": sorted(finder.natives),
                  "native_lz4": c.lz4 is c.lz4_native is not None,
                  "attribute": util._native is sys.modules["dissect.util._native"],
                  "decompressed": c.lz4.decompress(b"\x50hello", 5).decode()}))
"""


def test_dissect_util_runs_only_when_a_reader_imports_it() -> None:
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    out = subprocess.run([sys.executable, "-S", "-c", DRIVER, *paths], capture_output=True,
                         text=True, timeout=120, check=True)  # fmt: skip
    doc = json.loads(out.stdout.splitlines()[-1])
    # dissect/util/__init__.py imports every compression and hash module:
    # not run before the sandbox, nor is the native module imported.
    assert doc["before"] == []
    assert doc["natives"] == ["dissect.util._native"]
    # Imported later, with only the prepared modules, dissect.util still
    # picks its native LZ4 (the one loaded before), as an ordinary import.
    assert doc["native_lz4"] is True
    assert doc["attribute"] is True
    assert doc["decompressed"] == "hello"  # a literal-only LZ4 block
