"""Where the third-party corpora live ($PVGRUB_SHARED/fixtures, default ../shared/fixtures).

Only tests marked ``conformance`` (``make conformance``) may read them; the
rest of the suite runs on a bare clone.  ``tests/conftest.py`` skips a
conformance test when the corpus is missing, and fails it under ``CI=true``.
"""

from __future__ import annotations

import os
from pathlib import Path

SHARED = Path(os.environ.get("PVGRUB_SHARED", Path(__file__).resolve().parents[2] / "shared"))
FIXTURES = SHARED / "fixtures"
BOOTCFG = FIXTURES / "bootcfg"
EVENTLOG = FIXTURES / "eventlog"
TPM = FIXTURES / "tpm"


def present() -> bool:
    return FIXTURES.is_dir()


def missing_reason() -> str:
    return f"third-party corpus not found at {FIXTURES} (set PVGRUB_SHARED; make conformance)"
