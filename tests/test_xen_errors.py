"""`XenError` is both the project's error and an `OSError`; errno is read in one place.

pynacl's and pygit2's pattern: a caller may ``except OSError`` around a
hypervisor call and see Xen's errno, or ``except PvgrubError`` and print the
line.  xattr's: one function reads the errno a failing C call left.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest

from pvgrub_py.errors import PvgrubError
from pvgrub_py.inputs import describe_open_error
from pvgrub_py.xen.interface import XenError, XsmNotEnabledError

XEN_PACKAGE = Path(__file__).resolve().parent.parent / "pvgrub_py" / "xen"


def test_xen_error_is_an_oserror_with_errno_and_strerror() -> None:
    e = XenError(errno.ENOENT, "xs_read", "/local/domain/7/name")
    assert isinstance(e, OSError) and isinstance(e, PvgrubError)
    assert e.errno == errno.ENOENT and e.strerror == os.strerror(errno.ENOENT)
    assert e.args == (errno.ENOENT, os.strerror(errno.ENOENT))
    assert e.function == "xs_read" and e.message == "/local/domain/7/name"
    # The line the CLIs print, not OSError's "[Errno 2] ...".
    assert str(e) == "xs_read: /local/domain/7/name: No such file or directory (ENOENT)"
    assert str(XenError(0, "f")) == "f: failed (0)"


def test_either_base_catches_it() -> None:
    with pytest.raises(OSError) as as_os:
        raise XenError(errno.EPERM, "xc_domain_pause", "domain 3")
    assert as_os.value.errno == errno.EPERM
    with pytest.raises(PvgrubError) as as_ours:
        raise XsmNotEnabledError("xc_flask_op")
    assert isinstance(as_ours.value, OSError) and as_ours.value.errno == errno.ENOSYS
    assert str(as_ours.value).startswith("xc_flask_op: XSM/FLASK is not enabled on this host")


def test_an_open_error_message_keeps_a_xen_errors_own_line() -> None:
    """``except OSError`` sites that describe a file (a host directory) now also see
    XenError: they keep what failed, not just ``address already in use``."""
    e = XenError(errno.EADDRINUSE, "sim host", "a host already runs on /tmp/h/hyp.sock")
    assert "already runs" in describe_open_error(e)
    assert describe_open_error(FileNotFoundError(2, "No such file or directory")) == (
        "no such file or directory"
    )


def test_only_binding_reads_ffi_errno() -> None:
    """Every errno read goes through `binding.last_errno` (one call site, as xattr)."""
    readers = {
        path.name for path in XEN_PACKAGE.glob("*.py") if re.search(r"\bffi\.errno\b", _code(path))
    }
    assert readers == {"binding.py"}


def _code(path: Path) -> str:
    """The file without its docstrings and comments' ``ffi.errno`` mentions."""
    text = path.read_text()
    text = re.sub(r'""".*?"""', "", text, flags=re.S)
    return re.sub(r"#.*", "", text)


def test_call_error_takes_the_errno_the_call_left() -> None:
    from pvgrub_py.xen import binding as binding_mod

    class Ffi:
        errno = errno.EACCES

    b = binding_mod.Binding(Ffi(), object(), frozenset())  # type: ignore[arg-type]
    assert binding_mod.last_errno(b) == errno.EACCES
    assert binding_mod.call_error(b, "xs_write", "/x").errno == errno.EACCES
    assert binding_mod.call_error(b, "xs_write", err=errno.E2BIG).errno == errno.E2BIG
    Ffi.errno = 0
    with pytest.raises(XenError) as caught:
        binding_mod.fail(b, "xs_write")
    assert caught.value.errno == errno.EIO  # a failure that left no errno is still one


@pytest.mark.parametrize(
    "error",
    [XenError(errno.ENOENT, "xs_read", "/local/domain/7"), XsmNotEnabledError("xc_flask_op")],
)
def test_it_crosses_a_process_boundary_whole(error: XenError) -> None:
    """multiprocessing pickles what a child raises: errno, function and line survive."""
    import pickle

    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert (copy.errno, copy.function, copy.message, str(copy)) == (
        error.errno,
        error.function,
        error.message,
        str(error),
    )
