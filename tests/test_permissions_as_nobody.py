"""Permission-denied paths, reached as nobody so they run when the suite runs as root.

Root reads mode-000 files, so a permission test run as root would prove
nothing; these run the check in a child that dropped to uid 65534.
"""

from __future__ import annotations

from as_nobody import as_nobody, shared_tmp

from pvgrub_py.measure.boot_files import measure_boot_files
from pvgrub_py.tpm.algorithms import SHA1


def test_unreadable_kernel_is_a_one_line_input_error() -> None:
    with shared_tmp() as tmp:
        kernel = tmp / "k"
        kernel.write_bytes(b"k")
        kernel.chmod(0)
        kind, message = as_nobody(lambda: measure_boot_files(str(kernel), None, "", (SHA1,)))
    assert kind == "InputError", (kind, message)
    assert message == f"kernel {kernel}: permission denied"


def test_unreadable_initrd_is_a_one_line_input_error() -> None:
    with shared_tmp() as tmp:
        kernel, initrd = tmp / "k", tmp / "i"
        kernel.write_bytes(b"k")
        kernel.chmod(0o644)
        initrd.write_bytes(b"i")
        initrd.chmod(0)
        kind, message = as_nobody(lambda: measure_boot_files(str(kernel), str(initrd), "", (SHA1,)))
    assert kind == "InputError", (kind, message)
    assert "permission denied" in message and str(initrd) in message and "\n" not in message


def test_the_child_really_is_unprivileged() -> None:
    import os

    assert (
        as_nobody(lambda: (os.getuid(), os.geteuid(), os.getgid()))
        == (
            "ok",
            repr((65534, 65534, 65534)),
        )
        or os.geteuid() != 0
    )
