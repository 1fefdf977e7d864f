"""Linux's vTPM proxy from userspace: ``/dev/vtpmx``, its ioctl, the chip's descriptor.

``VTPM_PROXY_IOC_NEW_DEV`` (Linux include/uapi/linux/vtpm_proxy.h) creates a
TPM chip (``/dev/tpmN``, and ``/dev/tpmrmN`` for TPM 2.0) and returns a file
descriptor: the kernel writes each command for the chip into it, one whole
command per write, and takes the answer from our next write.  Its argument is
``struct vtpm_proxy_new_dev``, five ``__u32``: ``flags`` in
(``VTPM_PROXY_FLAG_TPM2`` = 1), then ``tpm_num``, ``fd``, ``major``, ``minor``
out.  Creating a chip needs CAP_SYS_ADMIN; closing the descriptor removes it.

The ioctl number is ``_IOWR(0xa1, 0x00, struct vtpm_proxy_new_dev)``, built
here with the generic ``_IOC`` layout (Linux include/uapi/asm-generic/ioctl.h,
which x86 and arm64 use): number in bits 0-7, type in bits 8-15, the
argument's size in bits 16-29, direction in bits 30-31 (``_IOC_WRITE`` 1,
``_IOC_READ`` 2; ``_IOWR`` is both).
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import struct
from dataclasses import dataclass

from pvgrub_py.errors import PvgrubError
from pvgrub_py.vtpm.proxy_bridge import PROXY_BUFFER_SIZE

VTPMX_PATH = "/dev/vtpmx"
VTPM_PROXY_FLAG_TPM2 = 1
#: struct vtpm_proxy_new_dev: flags, tpm_num, fd, major, minor; native byte order
#: (little-endian on every architecture Xen runs guests on).
NEW_DEV = struct.Struct("=5I")

# include/uapi/asm-generic/ioctl.h
_IOC_NRBITS, _IOC_TYPEBITS, _IOC_SIZEBITS = 8, 8, 14
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_WRITE, _IOC_READ = 1, 2


def ioc(direction: int, kind: int, number: int, size: int) -> int:
    """``_IOC(dir, type, nr, size)``."""
    if size >= 1 << _IOC_SIZEBITS:
        raise ValueError(f"an ioctl argument of {size} bytes does not fit _IOC's size field")
    return (
        (direction << _IOC_DIRSHIFT)
        | (kind << _IOC_TYPESHIFT)
        | (number << _IOC_NRSHIFT)
        | (size << _IOC_SIZESHIFT)
    )


#: _IOWR(0xa1, 0x00, struct vtpm_proxy_new_dev)
VTPM_PROXY_IOC_NEW_DEV = ioc(_IOC_READ | _IOC_WRITE, 0xA1, 0x00, NEW_DEV.size)


class ProxyDeviceError(PvgrubError):
    pass


@dataclass(frozen=True)
class ProxyChip:
    """What ``VTPM_PROXY_IOC_NEW_DEV`` returned."""

    tpm_num: int
    major: int
    minor: int

    @property
    def ready_line(self) -> str:
        """What --ready-file holds: ``tpm_num major minor``."""
        return f"{self.tpm_num} {self.major} {self.minor}\n"


def create_chip(vtpmx: str = VTPMX_PATH, *, tpm2: bool = True) -> tuple[int, ProxyChip]:
    """A new proxy chip: (its descriptor, what the kernel said about it)."""
    try:
        control = os.open(vtpmx, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        hint = " (modprobe tpm_vtpm_proxy)" if e.errno == errno.ENOENT else ""
        raise ProxyDeviceError(f"{vtpmx}: cannot open: {os.strerror(e.errno or 0)}{hint}") from None
    try:
        arg = bytearray(NEW_DEV.pack(VTPM_PROXY_FLAG_TPM2 if tpm2 else 0, 0, 0, 0, 0))
        fcntl.ioctl(control, VTPM_PROXY_IOC_NEW_DEV, arg, True)
    except OSError as e:
        raise ProxyDeviceError(
            f"{vtpmx}: VTPM_PROXY_IOC_NEW_DEV failed: {os.strerror(e.errno or 0)}"
        ) from None
    finally:
        os.close(control)
    _, tpm_num, fd, major, minor = NEW_DEV.unpack(arg)
    os.set_inheritable(fd, False)
    return fd, ProxyChip(tpm_num, major, minor)


class ProxyEndpoint:
    """The userspace end of a proxy chip: read a command, write its answer.

    Any descriptor with the proxy's message semantics will do (a
    ``SOCK_SEQPACKET`` socket stands in for the kernel in the tests).  The
    endpoint owns the descriptor: `close` removes the chip."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)

    def wait(self, timeout: float) -> bool:
        """True once a command (or the end) can be read, False after ``timeout`` s."""
        try:
            return bool(self._poll.poll(max(0, int(timeout * 1000))))
        except InterruptedError:
            return False

    def read(self) -> bytes | None:
        """One command as the kernel wrote it; None when the chip is gone (EPIPE, EOF)."""
        while True:
            try:
                data = os.read(self.fd, PROXY_BUFFER_SIZE)
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno in (errno.EPIPE, errno.ECONNRESET, errno.EBADF):
                    return None
                raise ProxyDeviceError(f"vTPM proxy: read: {os.strerror(e.errno or 0)}") from None
            return data or None

    def write(self, response: bytes) -> bool:
        """Give the kernel its answer.  False if it was not waiting for one any
        more (EIO: the kernel's own per-command timeout ran out first, and it
        moved on); the chip going away raises."""
        try:
            os.write(self.fd, response)
        except OSError as e:
            if e.errno == errno.EIO:
                return False
            raise ProxyDeviceError(f"vTPM proxy: write: {os.strerror(e.errno or 0)}") from None
        return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
