"""Files the bootloader leaves for libxl, created safely and removed on failure.

libxl mmaps the kernel and ramdisk named in the result and unlinks them at
once.  Until then they sit in a directory shared with other domains' boots,
so each is created exclusively (``O_EXCL|O_NOFOLLOW``, never following a
planted symlink) with mode 0600, under an unpredictable name, as pygrub's
``mkstemp`` does.  If anything fails, every file we created is removed: the
output directory holds nothing of ours after a failed run, and a directory
this run created (``--output-directory`` and any missing parents) is removed
again.  The directory is made absolute first, so the result records name
absolute paths, as pygrub's do, whatever the caller's working directory.
"""

from __future__ import annotations

import contextlib
import os
from types import TracebackType

from pvgrub_py.errors import InputError
from pvgrub_py.inputs import describe_open_error

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import BinaryIO


class OutputDirectory:
    def __init__(self, directory: str, create: bool = True) -> None:
        self.directory = os.path.abspath(directory)
        self.created: list[str] = []
        #: Directories this run created, outermost first (removed on failure).
        self.made_dirs: list[str] = []
        self._committed = False
        if create:
            self._make(self.directory)
        if not os.path.isdir(self.directory):
            raise InputError(directory, "output directory does not exist")

    def _make(self, directory: str) -> None:
        """``mkdir -p``, remembering each directory it made."""
        missing: list[str] = []
        path = directory
        while not os.path.lexists(path):
            missing.append(path)
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent
        for path in reversed(missing):
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                continue  # made by someone else meanwhile: theirs, not ours
            except OSError as e:
                self._remove_dirs()
                raise InputError(
                    directory, f"cannot create output directory: {describe_open_error(e)}"
                ) from None
            self.made_dirs.append(path)

    def create(self, prefix: str) -> tuple[str, BinaryIO]:
        """A new empty 0600 file ``<prefix>.<random>``; returns its path and handle."""
        path, fd = self.create_fd(prefix)
        return path, os.fdopen(fd, "wb")

    def create_fd(self, prefix: str) -> tuple[str, int]:
        """`create`, returning a raw descriptor (the extractor writes 1 MiB chunks)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        for _ in range(100):
            # os.urandom, not secrets: the same kernel CSPRNG without the
            # import of base64, hmac and random that secrets brings (~1.2 ms
            # with Debian's interpreter, bench/bench_bootloader.py).
            path = os.path.join(self.directory, f"{prefix}.{os.urandom(4).hex()}")
            try:
                fd = os.open(path, flags, 0o600)
            except FileExistsError:
                continue
            except OSError as e:
                raise InputError(
                    self.directory, f"cannot create {prefix}: {describe_open_error(e)}"
                ) from None
            self.created.append(path)
            return path, fd
        raise InputError(self.directory, f"cannot find a free name for {prefix}")

    def commit(self) -> None:
        """The run succeeded: keep the files for libxl."""
        self._committed = True

    def discard(self) -> None:
        for path in self.created:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self.created.clear()
        self._remove_dirs()

    def _remove_dirs(self) -> None:
        """Remove the directories this run made, innermost first, if still empty."""
        for path in reversed(self.made_dirs):
            with contextlib.suppress(OSError):
                os.rmdir(path)
        self.made_dirs.clear()

    def __enter__(self) -> OutputDirectory:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._committed:
            self.discard()
