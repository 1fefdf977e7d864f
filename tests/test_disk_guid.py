"""GUID text without the uuid module: the uuid module is the oracle."""

from __future__ import annotations

import os
import uuid

import pytest

from pvgrub_py.disk.guid import guid_text, mixed_endian_guid_text


def test_guid_text_matches_uuid_for_random_bytes() -> None:
    for _ in range(2000):
        raw = os.urandom(16)
        assert guid_text(raw) == str(uuid.UUID(bytes=raw))
        assert mixed_endian_guid_text(raw) == str(uuid.UUID(bytes_le=raw))


def test_gpt_linux_filesystem_type_as_stored_on_disk() -> None:
    stored = uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4").bytes_le
    assert mixed_endian_guid_text(stored) == "0fc63daf-8483-4772-8e79-3d69d8477de4"


@pytest.mark.parametrize("size", [0, 15, 17])
def test_wrong_length_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        guid_text(bytes(size))
    with pytest.raises(ValueError, match="16 bytes"):
        mixed_endian_guid_text(bytes(size))


def test_the_parser_child_path_does_not_import_uuid() -> None:
    """Sniffing and reading a GPT no longer costs ``import uuid`` (and platform)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import pvgrub_py.disk.partitions, pvgrub_py.disk.sniff\n"
        "print('uuid' in sys.modules, 'platform' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()  # fmt: skip
    assert out == ["False", "False"]
