"""The Protocols a boot only annotates with are still importable where they were.

`ConfigFiles`, `GuestSession`, `ByteSource`, `TpmTransport` and
`PeerLabelled` live in modules of their own
(they need `typing`, which a boot does not import) and their old homes hand
them out on first use (PEP 562).
"""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_the_old_homes_export_the_protocols() -> None:
    from pvgrub_py.bootcfg import ConfigFiles as from_package
    from pvgrub_py.bootcfg.config_files import ConfigFiles as defined
    from pvgrub_py.bootcfg.files import ConfigFiles, DictVolume
    from pvgrub_py.bootloader.guest import GuestSession
    from pvgrub_py.bootloader.guest_session import GuestSession as session_defined
    from pvgrub_py.disk import ByteSource as disk_export
    from pvgrub_py.disk.bounded import ByteSource, FdSource
    from pvgrub_py.disk.byte_source import ByteSource as source_defined

    assert ConfigFiles is defined is from_package
    assert GuestSession is session_defined
    assert ByteSource is source_defined is disk_export
    assert isinstance(DictVolume(files={}), ConfigFiles)
    with open(sys.executable, "rb") as f:
        assert isinstance(FdSource(f.fileno()), ByteSource)


def test_the_tpm_transport_exports_its_protocols() -> None:
    from pvgrub_py.tpm.swtpm import SwtpmTransport
    from pvgrub_py.tpm.tpm_transport import PeerLabelled as labelled_defined
    from pvgrub_py.tpm.tpm_transport import TpmTransport as transport_defined
    from pvgrub_py.tpm.transport import PeerLabelled, TpmTransport

    assert TpmTransport is transport_defined
    assert PeerLabelled is labelled_defined

    class Labelled:
        def peer_label(self) -> str:
            return "system_u:system_r:vtpm_t"

    # measure.vtpm's --vtpm-label check: a tpmif frontend has a label, a swtpm socket none.
    assert isinstance(Labelled(), PeerLabelled)
    assert not issubclass(SwtpmTransport, PeerLabelled)


def test_other_missing_names_are_still_missing() -> None:
    import pvgrub_py.bootcfg.files as files
    import pvgrub_py.bootloader.guest as guest
    import pvgrub_py.disk.bounded as bounded
    import pvgrub_py.tpm.transport as transport

    for module in (files, guest, bounded, transport):
        with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
            module.Nothing  # noqa: B018


def test_importing_the_old_homes_does_not_load_the_protocols() -> None:
    code = (
        "import sys, pvgrub_py.bootcfg.files, pvgrub_py.bootloader.guest, pvgrub_py.disk.bounded\n"
        "import pvgrub_py.tpm.transport, pvgrub_py.tpm.client\n"
        "print(sorted(m for m in ('typing', 'pvgrub_py.bootcfg.config_files',"
        " 'pvgrub_py.bootloader.guest_session', 'pvgrub_py.disk.byte_source',"
        " 'pvgrub_py.tpm.tpm_transport') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    assert out.strip() == "[]"
