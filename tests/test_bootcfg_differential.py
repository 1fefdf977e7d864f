"""The real pygrub (Xen 4.17) as a differential oracle for our parsers.

pygrub's own parser modules (``grub/GrubConf.py``, ``grub/ExtLinuxConf.py``)
are imported from the installed Xen tools and run on the same files; the
``pygrub --isconfig`` command line is run on the GRUB 2 examples to check
that our reading of its selection rule (``Grub.image_index`` and the
``IndexError`` fallback in ``run_grub``) is what the tool really does.
Nothing of pygrub is copied: it is only executed.

Where pygrub handles a config, the default entry's kernel, initrd and
arguments (whitespace-normalised: pygrub keeps the raw text after the
kernel path, GRUB re-joins arguments with single spaces) must be equal.
Every config where we deliberately choose differently is listed in
`DIFFERENCES` with the reason, and the test checks that the difference
is the documented one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import corpus
import pytest
from pygrub_oracle import (
    NOTHING,
    PYGRUB_BIN,
    PYGRUB_LIB,
    our_choice,
    our_choice_of,
    pygrub,
    pygrub_choice,
    pygrub_config,
    run_pygrub,
)
from pygrub_oracle import (
    norm as _norm,
)

from pvgrub_py.bootcfg import (
    BootConfigError,
    BootMenu,
    DictVolume,
    VolumeIdentity,
    VolumeSet,
    parse_extlinux,
    parse_grub2,
    parse_grub_legacy,
)
from pvgrub_py.bootcfg.dialect import Dialect

__all__ = ["pygrub"]  # the module-scoped fixture, imported to be found by pytest

BOOTCFG = corpus.BOOTCFG
PETITBOOT = BOOTCFG / "petitboot"
EXAMPLES = BOOTCFG / "pygrub-examples"

#: Third-party configs throughout (make conformance); test_bootcfg_own_configs.py
#: runs the same oracle on configs this project writes.
pytestmark = [
    pytest.mark.conformance,
    pytest.mark.skipif(PYGRUB_LIB is None, reason="pygrub (xen-utils) is not installed"),
]


# -- the configs --------------------------------------------------------------------------


@dataclass
class Config:
    kind: str
    path: str
    volumes: VolumeSet
    env: dict[str, str]

    @property
    def text(self) -> str:
        data = self.volumes.primary.read(self.path, 1 << 20)
        assert data is not None
        return data.decode("latin-1")

    def parse(self, dialect: Dialect = Dialect.GRUB) -> BootMenu:
        if self.kind == "grub2":
            return parse_grub2(self.volumes, self.path, env=self.env, dialect=dialect)
        if self.kind == "extlinux":
            return parse_extlinux(self.volumes, self.path, dialect=dialect)
        return parse_grub_legacy(self.volumes, self.path)


def _tree(tree: Path) -> dict[str, bytes]:
    if not tree.is_dir():
        return {}
    return {"/" + str(p.relative_to(tree)): p.read_bytes() for p in tree.rglob("*") if p.is_file()}


def petitboot_config(name: str) -> Config:
    exp = json.loads((PETITBOOT / f"{name}.expected.json").read_text())
    dev = exp.get("device") or {}
    vols = [
        DictVolume(
            _tree(PETITBOOT / exp["tree"]),
            exp.get("dirs", []),
            VolumeIdentity(dev.get("name", "__test0"), dev.get("uuid"), dev.get("label")),
        )
    ]
    for extra in exp.get("devices", []):
        files = _tree(PETITBOOT / f"{name}@{extra['name']}") or extra.get("files", {})
        vols.append(
            DictVolume(
                files, [], VolumeIdentity(extra["name"], extra.get("uuid"), extra.get("label"))
            )
        )
    kind = "grub2" if exp["parser"] == "grub2" else "extlinux"
    return Config(kind, exp["config_path"], VolumeSet(vols), exp.get("implicit_env") or {})


def single(kind: str, path: str, data: bytes | str, **extra: bytes | str) -> Config:
    files: dict[str, bytes | str] = {
        path: data,
        **{k.replace("__", "/"): v for k, v in extra.items()},
    }
    return Config(kind, path, VolumeSet([DictVolume(files)]), {})


def example(name: str) -> Config:
    kind = "extlinux" if name.endswith(".extlinux") else "grub2"
    path = "/boot/extlinux.conf" if kind == "extlinux" else "/boot/grub/grub.cfg"
    return single(kind, path, (EXAMPLES / name).read_bytes())


def _example_text(name: str) -> str:
    path = EXAMPLES / name
    return path.read_text() if path.is_file() else ""


UBUNTU = _example_text("ubuntu-14.04-lts.grub2")
FEDORA19 = _example_text("fedora-19.grub2")
RESCUE19 = "Fedora, with Linux 0-rescue-8d62a0261d8147dc84eb89292ebc1666"


def _grubenv(**values: str) -> str:
    body = "# GRUB Environment Block\n" + "".join(f"{k}={v}\n" for k, v in values.items())
    return body + "#" * (1024 - len(body))


def synthetic(name: str) -> Config:
    if name == "submenu-default-path":
        return single(
            "grub2", "/boot/grub/grub.cfg", UBUNTU.replace('set default="0"', 'set default="1>1"')
        )
    if name == "submenu-default-ids":
        spec = (
            "gnulinux-advanced-c7a4b4ca-71da-4d03-b374-a6b76ebcfc90>"
            "gnulinux-3.13.0-44-generic-recovery-c7a4b4ca-71da-4d03-b374-a6b76ebcfc90"
        )
        return single(
            "grub2",
            "/boot/grub/grub.cfg",
            UBUNTU.replace('set default="0"', 'set default="${saved_entry}"'),
            __boot__grub__grubenv=_grubenv(saved_entry=spec),
        )
    if name == "default-index-counts-submenus":
        return single(
            "grub2", "/boot/grub/grub.cfg", UBUNTU.replace('set default="0"', 'set default="3"')
        )
    if name == "saved-entry-title":
        return single(
            "grub2",
            "/boot/grub2/grub.cfg",
            FEDORA19,
            __boot__grub2__grubenv=_grubenv(saved_entry=RESCUE19),
        )
    if name == "next-entry-beats-saved":
        return single(
            "grub2",
            "/boot/grub2/grub.cfg",
            FEDORA19,
            __boot__grub2__grubenv=_grubenv(saved_entry="0", next_entry="1"),
        )
    if name == "quoted-args":
        return single(
            "grub2",
            "/boot/grub/grub.cfg",
            "menuentry 'q' {\n  linux /vmlinuz root=/dev/xvda1 'rd.foo=a b' x\\\"y\n}\n",
        )
    raise KeyError(name)


# -- expectations ----------------------------------------------------------------------------

PYGRUB_SYNTAX = (
    "pygrub's line-based GRUB 2 parser rejects valid GRUB syntax (one-line bodies, "
    "'}' after a command, brace placements, nested blocks) or crashes on it; GRUB and "
    "we accept it"
)
NO_VARIABLES = (
    "pygrub never expands variables ($kernel, ${prefix}, $params, $kernelopts, "
    "$vt_handoff, ${2}); GRUB does, so we pass the expanded values"
)
DEFAULT_BY_NAME = (
    "pygrub turns any non-numeric default (a title, an --id, ${saved_entry}) into 0 "
    "(GrubConf._set_default); GRUB matches titles and ids, so we boot the named entry"
)
NO_BLS = "pygrub has no blscfg: BLS entries are invisible to it"
RELATIVE_PATH = (
    "a relative kernel/initrd name: pygrub passes it through unchanged; we anchor it "
    "at the volume root (GRUB 2) or the config directory (Syslinux)"
)
NO_SCRIPTING = (
    "pygrub ignores if/fi, so it lists the menuentry inside a false `if` block (SLES "
    "snapshot submenu, an empty body) as entry 0; GRUB never creates it"
)
SYSLINUX_KEYWORDS = (
    "pygrub's ExtLinux parser knows only LABEL/KERNEL/APPEND: it ignores LINUX, "
    "INITRD and INCLUDE, so labels using them have no kernel/initrd and an included "
    "DEFAULT is lost"
)
SUBMENU_DEFAULT = (
    "pygrub flattens submenus and reads default only as a flat index; GRUB (and we) "
    "resolve '1>1', 'id>id' paths and count a submenu as one top-level item"
)
ARG_QUOTING = (
    "pygrub keeps quotes and backslashes of the kernel line verbatim; GRUB removes "
    "them while parsing and re-quotes an argument containing a space when it builds "
    "the command line (grub_create_loader_cmdline)"
)

AGREE = "agree"

EXPECTED: dict[str, str] = {
    # pygrub's own examples and the Linode menu.lst
    "example:debian-wheezy-hvm.grub2": AGREE,
    "example:fedora-16-with-xen.grub2": AGREE,
    "example:fedora-19.grub2": AGREE,
    "example:rhel-7-beta.grub2": AGREE,
    "example:ubuntu-14.04-lts.grub2": AGREE,
    "example:alpine-linux-2.3.2.extlinux": RELATIVE_PATH,
    "menu-lst:linode-debian.menu.lst": AGREE,
    "isolinux:ubuntu10.04": SYSLINUX_KEYWORDS,
    # petitboot's configs
    "petitboot:grub2-blscfg-default-filename": NO_BLS,
    "petitboot:grub2-blscfg-default-index": NO_BLS,
    "petitboot:grub2-blscfg-default-title": NO_BLS,
    "petitboot:grub2-blscfg-fcos38": NO_BLS,
    "petitboot:grub2-blscfg-multiple-bls": NO_BLS,
    "petitboot:grub2-blscfg-opts-config": NO_BLS,
    "petitboot:grub2-blscfg-opts-grubenv": NO_BLS,
    "petitboot:grub2-default-id-space": DEFAULT_BY_NAME,
    "petitboot:grub2-default-id": DEFAULT_BY_NAME,
    "petitboot:grub2-default-index": AGREE,
    "petitboot:grub2-default-multiword": DEFAULT_BY_NAME,
    "petitboot:grub2-default": AGREE,
    "petitboot:grub2-devpath-scripting": PYGRUB_SYNTAX,
    "petitboot:grub2-devpath": PYGRUB_SYNTAX,
    "petitboot:grub2-empty": AGREE,
    "petitboot:grub2-f18-ppc64": AGREE,
    "petitboot:grub2-f20-ppc64": NO_VARIABLES,
    "petitboot:grub2-if-formats": PYGRUB_SYNTAX,
    "petitboot:grub2-implicit-default-invalid": AGREE,
    "petitboot:grub2-implicit-default-unset": AGREE,
    "petitboot:grub2-lexer-error": AGREE,
    "petitboot:grub2-load-env": NO_VARIABLES,
    "petitboot:grub2-menuentry-formats": PYGRUB_SYNTAX,
    "petitboot:grub2-multiple-id": DEFAULT_BY_NAME,
    "petitboot:grub2-multiple-resolve": AGREE,
    "petitboot:grub2-noeol": AGREE,
    "petitboot:grub2-nondefault-prefix": NO_VARIABLES,
    "petitboot:grub2-parser-error": AGREE,
    "petitboot:grub2-pos-param": NO_VARIABLES,
    "petitboot:grub2-rhcos-ootpa": PYGRUB_SYNTAX,
    "petitboot:grub2-rhel8": NO_VARIABLES,
    "petitboot:grub2-saved-default": RELATIVE_PATH,
    "petitboot:grub2-search-args": PYGRUB_SYNTAX,
    "petitboot:grub2-search-label": PYGRUB_SYNTAX,
    "petitboot:grub2-search-uuid": PYGRUB_SYNTAX,
    "petitboot:grub2-single-line-if": AGREE,
    "petitboot:grub2-single-yocto": PYGRUB_SYNTAX,
    "petitboot:grub2-single": AGREE,
    "petitboot:grub2-sles-btrfs-snapshot": NO_SCRIPTING,
    "petitboot:grub2-source-functions": AGREE,
    "petitboot:grub2-source-recursion-infinite": PYGRUB_SYNTAX,
    "petitboot:grub2-source-recursion": PYGRUB_SYNTAX,
    "petitboot:grub2-source": PYGRUB_SYNTAX,
    "petitboot:grub2-test-file-ops": PYGRUB_SYNTAX,
    "petitboot:grub2-ubuntu-13_04-x86": NO_VARIABLES,
    "petitboot:syslinux-explicit": SYSLINUX_KEYWORDS,
    "petitboot:syslinux-global-append": SYSLINUX_KEYWORDS,
    "petitboot:syslinux-nested-config": SYSLINUX_KEYWORDS,
    "petitboot:syslinux-single-yocto": AGREE,
    # written for this test: where pygrub gets GRUB's default wrong
    "synthetic:submenu-default-path": SUBMENU_DEFAULT,
    "synthetic:submenu-default-ids": SUBMENU_DEFAULT,
    "synthetic:default-index-counts-submenus": SUBMENU_DEFAULT,
    "synthetic:saved-entry-title": DEFAULT_BY_NAME,
    "synthetic:next-entry-beats-saved": DEFAULT_BY_NAME,
    "synthetic:quoted-args": ARG_QUOTING,
}

#: What we boot in the synthetic cases (checked against GRUB's rules by hand).
SYNTHETIC_OURS = {
    "submenu-default-path": "root=/dev/mapper/BoxenSys00-root ro recovery nomodeset biosdevname=0",
    "submenu-default-ids": "root=/dev/mapper/BoxenSys00-root ro recovery nomodeset biosdevname=0",
    "default-index-counts-submenus": "console=ttyS0,115200n8",
    "saved-entry-title": "/vmlinuz-0-rescue-8d62a0261d8147dc84eb89292ebc1666",
    "next-entry-beats-saved": "/vmlinuz-0-rescue-8d62a0261d8147dc84eb89292ebc1666",
    "quoted-args": 'root=/dev/xvda1 "rd.foo=a b" x\\"y',
}


def load(case: str) -> Config:
    family, name = case.split(":", 1)
    if family == "example":
        return example(name)
    if family == "menu-lst":
        return single(
            "grub-legacy", "/boot/grub/menu.lst", (BOOTCFG / "menu-lst" / name).read_bytes()
        )
    if family == "isolinux":
        root = BOOTCFG / "grub-syslinux" / name
        return Config(
            "extlinux", "/isolinux/isolinux.cfg", VolumeSet([DictVolume(_tree(root))]), {}
        )
    if family == "petitboot":
        return petitboot_config(name)
    return synthetic(name)


def test_every_petitboot_config_is_classified() -> None:
    names = {
        p.name.removesuffix(".expected.json")
        for p in PETITBOOT.glob("*.expected.json")
        if "save-env" not in p.name
    }
    assert {c.split(":", 1)[1] for c in EXPECTED if c.startswith("petitboot:")} == names


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_against_pygrub(case: str, pygrub: tuple[ModuleType, ModuleType]) -> None:
    cfg = load(case)
    theirs = pygrub_choice(pygrub, cfg.kind, cfg.text, cfg.path)
    try:
        ours = our_choice(cfg.parse())
    except BootConfigError:
        ours = NOTHING
    expect = EXPECTED[case]
    if expect == AGREE:
        assert theirs == ours
        return
    assert theirs != ours, "documented as different but pygrub now agrees"
    family, name = case.split(":", 1)
    if expect == PYGRUB_SYNTAX:
        assert isinstance(theirs, Exception) or theirs.kernel is None
        if name != "grub2-source-recursion-infinite":
            assert ours.kernel is not None
    elif expect == NO_VARIABLES:
        assert not isinstance(theirs, Exception)
        assert "$" in f"{theirs.kernel} {theirs.initrd} {theirs.args}"
        assert "$" not in f"{ours.kernel} {ours.initrd} {ours.args}"
    elif expect == DEFAULT_BY_NAME:
        # pygrub boots entry 0, we the entry the default names.
        menu = cfg.parse()
        assert menu.default_index != 0
        assert theirs == our_choice_of(menu, 0)
    elif expect == NO_BLS:
        assert (
            isinstance(theirs, Exception) or theirs == NOTHING or "/boot/" not in str(theirs.kernel)
        )
        assert ours.kernel is not None
    elif expect == RELATIVE_PATH:
        assert not isinstance(theirs, Exception) and theirs.kernel is not None
        assert ours.kernel is not None and ours.kernel.endswith("/" + theirs.kernel)
        assert not theirs.kernel.startswith("/")
    elif expect == NO_SCRIPTING:
        assert not isinstance(theirs, Exception) and theirs.kernel is None
        assert ours.kernel is not None
    elif expect == SYSLINUX_KEYWORDS:
        assert not isinstance(theirs, Exception)
        assert ours.kernel is not None
    elif expect in (SUBMENU_DEFAULT, ARG_QUOTING):
        assert not isinstance(theirs, Exception)
        assert SYNTHETIC_OURS[name] in (ours.kernel, ours.args)
    else:
        raise AssertionError(expect)
    if family == "synthetic" and expect == DEFAULT_BY_NAME:
        assert ours.kernel == SYNTHETIC_OURS[name]


@pytest.mark.parametrize("case", sorted(c for c, e in EXPECTED.items() if e == AGREE))
def test_petitboot_dialect_against_pygrub(case: str, pygrub: tuple[ModuleType, ModuleType]) -> None:
    """Where pygrub and our GRUB reading agree, petitboot's reading agrees too,
    except where petitboot runs a body in place (a function's ``$2``, which
    neither GRUB nor pygrub sees in the entry body)."""
    cfg = load(case)
    theirs = pygrub_choice(pygrub, cfg.kind, cfg.text, cfg.path)
    try:
        ours = our_choice(cfg.parse(Dialect.PETITBOOT))
    except BootConfigError:
        ours = NOTHING
    if case in PETITBOOT_BOOTS_MORE:
        assert theirs == NOTHING and ours.kernel == PETITBOOT_BOOTS_MORE[case]
        return
    assert theirs == ours


#: Cases where only petitboot's reading finds a kernel.
PETITBOOT_BOOTS_MORE = {"petitboot:grub2-source-functions": "/vmlinux"}


def test_every_entry_of_pygrubs_examples(pygrub: tuple[ModuleType, ModuleType]) -> None:
    """Not only the default: pygrub's flattened image list equals our entry list."""
    for path in sorted(EXAMPLES.glob("*.grub2")):
        cf = pygrub_config(pygrub, "grub2", path.read_text(), "/boot/grub/grub.cfg")
        menu = example(path.name).parse()
        assert len(cf.images) == len(menu.entries), path.name
        for img, entry in zip(cf.images, menu.entries, strict=True):
            assert img.title == entry.title
            if img.kernel is None:
                assert not entry.bootable
                continue
            assert entry.kernel is not None and img.kernel[1] == entry.kernel.path
            assert (img.initrd[1] if img.initrd else None) == (
                entry.initrd.path if entry.initrd else None
            )
            assert _norm(img.args) == entry.args


@pytest.mark.skipif(PYGRUB_BIN is None, reason="pygrub binary not installed")
@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.grub2")))
def test_pygrub_cli_matches_module_oracle(
    name: str, tmp_path: Path, pygrub: tuple[ModuleType, ModuleType]
) -> None:
    """The real tool's choice equals the module-level oracle, and ours."""
    config = EXAMPLES / name
    cli = run_pygrub(config, tmp_path)
    cfg = example(name)
    assert cli == pygrub_choice(pygrub, "grub2", cfg.text, cfg.path)
    assert cli == our_choice(cfg.parse())


@pytest.mark.skipif(PYGRUB_BIN is None, reason="pygrub binary not installed")
def test_pygrub_cli_submenu_default(tmp_path: Path) -> None:
    """`set default="1>1"`: pygrub boots entry 0, GRUB the recovery entry in the submenu."""
    cfg = synthetic("submenu-default-path")
    config = tmp_path / "grub.cfg"
    config.write_text(cfg.text)
    cli = run_pygrub(config, tmp_path)
    assert cli is not None and "recovery" not in cli.args
    assert "recovery" in our_choice(cfg.parse()).args
