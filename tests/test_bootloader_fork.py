"""Without --runas, a non-interactive boot parses in a forked, unconfined child.

The parent gets its vTPM ready while the child parses (`run.open_session`
with ``fork=True``); the child speaks the deprivileged protocol, so the
plan and the bytes arrive and are checked exactly as with --runas.  The
interactive menu and ``pvgrubctl predict`` stay in-process.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import disk_images
import pytest

from pvgrub_py.bootloader.guest import open_local_session
from pvgrub_py.bootloader.options import parse_options
from pvgrub_py.bootloader.run import open_session


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> disk_images.ImageFactory:
    return disk_images.factory(tmp_path_factory)


def _collect(session: object, index: int) -> bytes:
    parts: list[bytes] = []
    session.stream(index, parts.append, 1 << 30)  # type: ignore[attr-defined]
    return b"".join(parts)


def test_a_quiet_boot_parses_in_a_child_with_the_same_result(
    images: disk_images.ImageFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    img = images.debian_gpt()
    opts = parse_options(["-q", str(img.path)])
    assert opts is not None
    # A $TMPDIR of its own: a sandbox root made by another test run cannot show up here.
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    roots = set(glob.glob(os.path.join(tmp_path, "pvgrub-py-root.*")))
    forked = open_session(opts, None, fork=True)
    local = open_local_session(opts)
    try:
        assert getattr(forked, "parses_elsewhere", False)
        pid = forked.pid  # type: ignore[attr-defined]
        assert pid != os.getpid() and os.path.exists(f"/proc/{pid}")
        # No sandbox without --runas: no root directory is made for it.
        assert set(glob.glob(os.path.join(tmp_path, "pvgrub-py-root.*"))) == roots
        assert forked.plan == local.plan
        for i in range(len(local.plan.files)):
            assert _collect(forked, i) == _collect(local, i)
        forked.finish()
    finally:
        forked.close()
        local.close()


def test_without_fork_the_session_stays_in_process(images: disk_images.ImageFactory) -> None:
    opts = parse_options(["-q", str(images.debian_gpt().path)])
    assert opts is not None
    session = open_session(opts, None)
    try:
        assert not getattr(session, "parses_elsewhere", False)
    finally:
        session.close()
