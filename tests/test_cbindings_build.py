"""The cffi module: built against the installed Xen, conditional names hidden, no ffi leaks."""

from __future__ import annotations

import errno
import importlib
import subprocess
import sys

import pytest

from pvgrub_py.xen import binding
from pvgrub_py.xen._conditional import CONDITIONAL_NAMES
from pvgrub_py.xen.availability import availability, loaded_library_versions
from pvgrub_py.xen.interface import XenError

AVAILABLE = availability()
needs_bindings = pytest.mark.skipif(
    not AVAILABLE.built, reason=f"Xen bindings not built: {AVAILABLE.reason}"
)


def pkg_config_version() -> str | None:
    try:
        done = subprocess.run(
            ["pkg-config", "--modversion", "xencontrol"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return None
    return done.stdout.strip() or None


@needs_bindings
def test_built_against_the_installed_xen() -> None:
    expected = pkg_config_version()
    if expected is None:
        pytest.skip("pkg-config cannot tell the installed Xen version")
    assert AVAILABLE.built_against == expected


@needs_bindings
def test_loaded_libraries_are_reported_by_version() -> None:
    binding.require("xc_interface_open")
    versions = loaded_library_versions()
    assert versions.get("libxenctrl") == AVAILABLE.built_against
    assert versions.get("libxenguest") == AVAILABLE.built_against


@needs_bindings
def test_names_missing_in_this_release_are_hidden() -> None:
    b = binding.require("x")
    for flag, names in CONDITIONAL_NAMES.items():
        present = bool(getattr(importlib.import_module("pvgrub_py._xen_cffi").lib, flag))
        for name in names:
            assert hasattr(b.lib, name) == present
            if not present:
                with pytest.raises(XenError) as caught:
                    binding.function(b, name)
                assert caught.value.errno == errno.ENOSYS
    # Xen 4.13 replaced the ramdisk by modules; 4.17 has only modules.
    if AVAILABLE.built_against and AVAILABLE.built_against.startswith("4.17"):
        assert "xc_dom_ramdisk_mem" in AVAILABLE.hidden_symbols
        assert hasattr(b.lib, "xc_dom_module_mem")


def test_missing_module_means_simulator_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the extension every entry point raises ENOSYS with the fix."""
    monkeypatch.setitem(sys.modules, "pvgrub_py._xen_cffi", None)
    binding.load.cache_clear()
    try:
        a = availability()
        assert not a.built and a.simulator_only and "not importable" in (a.reason or "")
        from pvgrub_py.xen.xenctrl import XenCtrl

        with pytest.raises(XenError) as caught:
            XenCtrl.open_dummy()
        assert caught.value.errno == errno.ENOSYS
        assert "libxen-dev" in str(caught.value)
    finally:
        binding.load.cache_clear()


def test_public_api_exposes_no_cffi_objects() -> None:
    import pvgrub_py.xen.domain_image as domain_image
    import pvgrub_py.xen.xenctrl as xenctrl

    for module in (xenctrl, domain_image):
        assert not hasattr(module, "ffi") and not hasattr(module, "lib")


def _stub_members(class_name: str) -> set[str]:
    import ast
    from pathlib import Path

    import pvgrub_py

    stub = Path(pvgrub_py.__file__).with_name("_xen_cffi.pyi")
    tree = ast.parse(stub.read_text())
    (cls,) = (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    names = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}
    names |= {
        n.target.id
        for n in cls.body
        if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
    }
    return names


@needs_bindings
def test_the_stub_declares_exactly_what_the_extension_has() -> None:
    """`Binding.lib` and `.ffi` are typed by _xen_cffi.pyi: a name missing there is
    untyped for mypy, a name only there would pass mypy and fail at run time."""
    module = importlib.import_module("pvgrub_py._xen_cffi")
    compiled = {name for name in dir(module.lib) if not name.startswith("__")}
    assert _stub_members("Lib") == compiled
    missing = sorted(name for name in _stub_members("FFI") if not hasattr(module.ffi, name))
    assert missing == []
