"""The boot-config parsers on configs this project writes (tests/own_bootcfg.py).

`make test`'s coverage of what the conformance suite checks on third-party
configs: the shapes grub-mkconfig, Red Hat style grubenv defaults, extlinux
and GRUB legacy produce, read by hand (expected values below) and compared
with the real pygrub (Xen 4.17) where pygrub reads the config.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import own_bootcfg as own
import pytest
from pygrub_oracle import (
    Choice,
    needs_pygrub,
    needs_pygrub_bin,
    norm,
    our_choice,
    our_choice_of,
    pygrub,
    pygrub_choice,
    pygrub_config,
    run_pygrub,
)

from pvgrub_py.bootcfg import (
    BootConfigError,
    BootMenu,
    DictVolume,
    VolumeIdentity,
    VolumeSet,
    find_config,
    load_menu,
    parse_extlinux,
    parse_grub2,
    parse_grub_legacy,
    select,
)
from pvgrub_py.bootcfg.dialect import Dialect

__all__ = ["pygrub"]  # the module-scoped fixture, imported to be found by pytest

CFG = "/boot/grub/grub.cfg"
K = f"/boot/vmlinuz-{own.KVER}"
I = f"/boot/initrd.img-{own.KVER}"  # noqa: E741
ADVANCED = f"gnulinux-advanced-{own.ROOT_UUID}"


def debian(uuid: str | None = own.ROOT_UUID, **files: str) -> DictVolume:
    return DictVolume({CFG: own.DEBIAN12, **files}, volume=VolumeIdentity("hd0,gpt2", uuid=uuid))


def test_debian12_entries_as_grub_builds_them() -> None:
    menu = parse_grub2(debian(), CFG)
    assert menu.format == "grub2" and menu.timeout == 5 and menu.default == "0"
    rows = [
        (e.index_path, e.title, e.kernel.path if e.kernel else None,
         [i.path for i in e.initrds], e.args)
        for e in menu.entries
    ]  # fmt: skip
    assert rows == [
        ("0", "Debian GNU/Linux", K, [I], own.DEBIAN12_ARGS),
        ("1>0", f"Debian GNU/Linux, with Linux {own.KVER}", K, [I], own.DEBIAN12_ARGS),
        (
            "1>1",
            f"Debian GNU/Linux, with Linux {own.KVER} (recovery mode)",
            K,
            [I],
            own.DEBIAN12_RECOVERY_ARGS,
        ),
        (
            "1>2",
            f"Debian GNU/Linux, with Linux {own.OLD_KVER}",
            f"/boot/vmlinuz-{own.OLD_KVER}",
            [f"/boot/initrd.img-{own.OLD_KVER}"],
            own.DEBIAN12_ARGS,
        ),
    ]
    for entry in menu.entries:
        # The search for ROOT_UUID found our volume; GRUB joins `ro  console` with one space.
        assert entry.kernel is not None and entry.kernel.device == "hd0,gpt2"
        assert not [w for w in entry.warnings if "search" in w]
    assert not menu.warnings
    assert select(menu) is menu.entries[0]
    assert menu.entries[0].id == f"gnulinux-simple-{own.ROOT_UUID}"
    assert menu.entries[0].classes == ("debian", "gnu-linux", "gnu", "os")


def test_debian12_submenu_selection_in_every_form() -> None:
    menu = parse_grub2(debian(), CFG)
    recovery = menu.entries[2]
    assert [s.index_path for s in menu.submenus] == ["1"]
    assert menu.submenus[0].id == ADVANCED
    assert recovery.title_path == (
        f"Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux {own.KVER} "
        "(recovery mode)"
    )
    assert select(menu, "1") is menu.entries[1]  # a submenu: its first entry
    assert select(menu, "1>1") is recovery
    assert select(menu, recovery.title) is recovery
    assert select(menu, f"gnulinux-{own.KVER}-recovery-{own.ROOT_UUID}") is recovery
    assert select(menu, f"{ADVANCED}>2") is menu.entries[3]
    with pytest.raises(BootConfigError, match="no menu entry matches"):
        select(menu, "no such entry")
    assert select(menu, "no such entry", strict=False) is menu.entries[0]


@pytest.mark.parametrize(
    ("env", "want"),
    [
        ({"next_entry": "1>1"}, 2),  # grub-reboot into the recovery entry
        ({"next_entry": f"{ADVANCED}>gnulinux-{own.OLD_KVER}-advanced-{own.ROOT_UUID}"}, 3),
        ({"saved_entry": "1>1"}, 0),  # Debian's header ignores saved_entry: default="0"
    ],
)
def test_debian12_grubenv_next_entry(env: dict[str, str], want: int) -> None:
    menu = parse_grub2(debian(**{"/boot/grub/grubenv": own.grubenv(**env)}), CFG)
    assert select(menu) is menu.entries[want]


def test_search_miss_keeps_the_hint_root() -> None:
    """Without the searched UUID the entries boot from the `set root` hint, as in GRUB."""
    entry = select(parse_grub2(debian(uuid=None), CFG))
    assert entry.kernel is not None and entry.kernel.device == "hd0,gpt2"
    assert any("search: no volume with fs-uuid" in w for w in entry.warnings)


def redhat(**env: str) -> DictVolume:
    files = {"/grub2/grub.cfg": own.REDHAT}
    if env:
        files["/grub2/grubenv"] = own.grubenv(**env)
    return DictVolume(files, volume=VolumeIdentity("hd0,msdos1", uuid=own.BOOT_UUID))


@pytest.mark.parametrize(
    ("env", "want"),
    [
        ({}, 0),
        ({"saved_entry": own.REDHAT_RESCUE_TITLE}, 1),  # saved_entry beats the default
        ({"saved_entry": own.REDHAT_RESCUE_TITLE, "next_entry": "0"}, 0),  # next_entry beats it
        ({"saved_entry": "1"}, 1),
    ],
)
def test_redhat_saved_and_next_entry(env: dict[str, str], want: int) -> None:
    menu = parse_grub2(redhat(**env), "/grub2/grub.cfg")
    assert len(menu.entries) == 2
    assert select(menu) is menu.entries[want]
    assert not [w for w in menu.warnings if "grubenv" in w]
    first, rescue = menu.entries
    assert first.kernel is not None and first.kernel.path == "/vmlinuz-5.14.0-70.13.1.x86_64"
    assert first.kernel.device == "hd0,msdos1" and first.args == own.REDHAT_ARGS
    assert [i.path for i in rescue.initrds] == [f"/initramfs-{own.RESCUE_ID}.img"]
    assert rescue.args == own.REDHAT_RESCUE_ARGS


def test_extlinux_menu_default_relative_names_and_timeout() -> None:
    vol = DictVolume({"/boot/extlinux.conf": own.EXTLINUX})
    menu = parse_extlinux(vol, "/boot/extlinux.conf")
    assert menu.format == "extlinux"
    assert [(e.id, e.title) for e in menu.entries] == [
        ("lts", "Linux lts"),
        ("rescue", "Linux lts (rescue)"),
    ]
    assert menu.default == "lts"  # MENU DEFAULT beats DEFAULT menu.c32
    assert menu.timeout == 3  # TIMEOUT 30 tenths of a second
    entry = select(menu)
    # Relative names are taken from the config's directory, as Syslinux does.
    assert entry.kernel is not None and entry.kernel.path == "/boot/vmlinuz-lts"
    assert [i.path for i in entry.initrds] == ["/boot/initramfs-lts"]
    assert entry.args == f"root=UUID={own.ROOT_UUID} modules=sd-mod,ext4 quiet"
    assert select(menu, "rescue").initrds == ()


def test_menu_lst_default_root_and_lines() -> None:
    vol = DictVolume({"/boot/grub/menu.lst": own.MENU_LST})
    menu = parse_grub_legacy(vol, "/boot/grub/menu.lst")
    assert menu.format == "grub-legacy" and menu.timeout == 3
    assert menu.default_index == 1
    rows = [(e.title, e.kernel.device if e.kernel else None, e.args) for e in menu.entries]
    assert rows == [
        (f"Guest Linux {own.OLD_KVER}", "hd0,1", "root=/dev/xvda1 ro console=hvc0"),
        (f"Guest Linux {own.KVER}", "hd0,1", "root=/dev/xvda1 ro console=hvc0 quiet"),
        (f"Guest Linux {own.KVER} (single-user mode)", "hd0,1", "root=/dev/xvda1 ro single"),
    ]
    entry = select(menu)
    assert entry.kernel is not None and entry.kernel.path == K
    assert [i.path for i in entry.initrds] == [I]


def test_bls_snippets_newest_first_with_grubenv_variables() -> None:
    vol = DictVolume({"/boot/grub2/grub.cfg": own.BLS_GRUB_CFG, **own.BLS_ENTRIES})
    menu = parse_grub2(vol, "/boot/grub2/grub.cfg")
    assert [e.title for e in menu.entries] == [
        "Guest (6.10.3-200.x86_64)",
        "Guest (6.5.6-300.x86_64)",
    ]
    assert menu.entries[1].args == "root=/dev/xvda2 ro quiet"  # $extra from the script
    assert select(menu).kernel is not None


LAYOUTS = [
    ("/boot/grub/grub.cfg", "grub2", own.DEBIAN12),
    ("/grub/grub.cfg", "grub2", own.DEBIAN12),  # separate /boot partition
    ("/boot/grub2/grub.cfg", "grub2", own.REDHAT),
    ("/grub2/grub.cfg", "grub2", own.REDHAT),
    ("/boot/extlinux/extlinux.conf", "extlinux", own.EXTLINUX),
    ("/extlinux.conf", "extlinux", own.EXTLINUX),
    ("/boot/grub/menu.lst", "grub-legacy", own.MENU_LST),
    ("/grub/grub.conf", "grub-legacy", own.MENU_LST),
]


@pytest.mark.parametrize(("path", "kind", "text"), LAYOUTS, ids=[x[0] for x in LAYOUTS])
def test_find_config_layouts(path: str, kind: str, text: str) -> None:
    empty = DictVolume({"/etc/fstab": ""}, volume=VolumeIdentity("hd0,msdos1"))
    boot = DictVolume({path: text}, volume=VolumeIdentity("hd0,msdos2"))
    vols = VolumeSet([empty, boot])
    found = find_config(vols)
    assert found is not None and (found.path, found.kind) == (path, kind)
    assert found.volume is boot
    menu = load_menu(vols)
    assert menu.format == kind and menu.entries


def test_find_config_order_and_bls_only() -> None:
    both = DictVolume({"/boot/grub/menu.lst": own.MENU_LST, "/boot/grub2/grub.cfg": own.REDHAT})
    found = find_config([both])
    assert found is not None and found.kind == "grub2"  # pygrub's order: GRUB 2 first
    menu = load_menu(VolumeSet([DictVolume(dict(own.BLS_ENTRIES))]))
    assert menu.format == "bls"
    assert menu.entries[0].title == "Guest (6.10.3-200.x86_64)"
    with pytest.raises(BootConfigError, match="no boot configuration found"):
        load_menu(VolumeSet([DictVolume({"/etc/fstab": ""})]))


def test_configfile_chain_replaces_the_menu() -> None:
    """An EFI-style stub grub.cfg that hands over to the real one on another volume."""
    stub = DictVolume(
        {
            CFG: (
                "menuentry stub { linux /nope }\n"
                f"search.fs_uuid {own.BOOT_UUID.upper()} root\n"
                "set prefix=($root)/grub2\n"
                "configfile $prefix/grub.cfg\n"
                "menuentry after { linux /nope }\n"
            )
        },
        volume=VolumeIdentity("hd0,gpt1"),
    )
    real = DictVolume(
        {"/grub2/grub.cfg": own.REDHAT},
        volume=VolumeIdentity("hd0,gpt2", uuid=own.BOOT_UUID),
    )
    menu = parse_grub2(VolumeSet([stub, real]), CFG)
    assert [e.title for e in menu.entries] == [
        "Red Hat style Linux, with Linux 5.14.0-70.13.1.x86_64",
        own.REDHAT_RESCUE_TITLE,
    ]


def _boots(menu: BootMenu) -> list[tuple[object, ...]]:
    return [
        (e.index_path, e.title, e.kernel, e.initrds, e.args, e.loader) for e in menu.entries
    ] + [("default", menu.default_index)]


@pytest.mark.parametrize(
    ("text", "uuid"),
    [(own.DEBIAN12, own.ROOT_UUID), (own.REDHAT, own.BOOT_UUID)],
    ids=["debian12", "redhat"],
)
def test_generated_configs_boot_the_same_in_both_dialects(text: str, uuid: str) -> None:
    """(A UUID search that misses differs on purpose: see the petitboot dialect tests.)"""
    vol = DictVolume({CFG: text}, volume=VolumeIdentity("hd0,gpt2", uuid=uuid))
    grub = parse_grub2(vol, CFG, dialect=Dialect.GRUB)
    petitboot = parse_grub2(vol, CFG, dialect=Dialect.PETITBOOT)
    assert _boots(grub) == _boots(petitboot)


def test_extlinux_same_in_both_dialects() -> None:
    vol = DictVolume({"/boot/extlinux.conf": own.EXTLINUX})
    menus = [parse_extlinux(vol, "/boot/extlinux.conf", dialect=d) for d in Dialect]
    assert _boots(menus[0]) == _boots(menus[1])


def test_menu_lst_legacy_devices_and_saved_default() -> None:
    text = (
        "default saved\ntimeout=5\nroot (hd0,0)\n"
        "title one\nkernel /vmlinuz-1 ro\n"
        "title two\nroot (hd0,1)\nkernel --no-mem-option (hd1,2)/vmlinuz-2 root=/dev/xvda2  quiet\n"
        "initrd /initrd-2\nsavedefault\n"
        "title xen\nkernel /xen.gz\nmodule /vmlinuz\n"
    )
    vol = DictVolume({"/grub/menu.lst": text, "/grub/default": "1\n#########\n"})
    menu = parse_grub_legacy(vol, "/grub/menu.lst")
    assert menu.timeout == 5
    assert menu.default == "1"  # read from the `default` file savedefault writes
    one, two, xen = menu.entries
    assert one.kernel is not None and one.kernel.device == "hd0,1"  # legacy counts from 0
    assert two.kernel is not None and (two.kernel.device, two.kernel.path) == (
        "hd1,3",
        "/vmlinuz-2",
    )
    assert two.args == "root=/dev/xvda2  quiet"  # GRUB legacy passes the line verbatim
    assert [(i.device, i.path) for i in two.initrds] == [("hd0,2", "/initrd-2")]
    assert not xen.bootable and xen.loader == "multiboot"
    assert select(menu) is two
    no_file = parse_grub_legacy(DictVolume({"/grub/menu.lst": text}), "/grub/menu.lst")
    assert no_file.default == "0"


def test_extlinux_mboot_and_global_append() -> None:
    text = (
        "APPEND console=hvc0\nDEFAULT xen\nLABEL plain\n  KERNEL /vmlinuz\n"
        "LABEL xen\n  KERNEL mboot.c32\n"
        "  APPEND /xen.gz dom0_mem=1G --- /vmlinuz-xen root=/dev/xvda1 ro --- /initrd-xen\n"
        "LABEL two\n  kernel mboot.c32\n  append /vmlinuz-2 quiet --- /initrd-2\n"
        "LABEL quoted\n  LINUX /vmlinuz extra\n  INITRD /a,/b\n  APPEND -\n"
    )
    menu = parse_extlinux(DictVolume({"/extlinux.conf": text}), "/extlinux.conf")
    plain, xen, two, quoted = menu.entries
    assert plain.args == "console=hvc0"  # no label APPEND: the global one
    assert xen.kernel is not None and xen.kernel.path == "/vmlinuz-xen"
    assert xen.args == "root=/dev/xvda1 ro" and [i.path for i in xen.initrds] == ["/initrd-xen"]
    assert two.kernel is not None and two.kernel.path == "/vmlinuz-2"
    assert [i.path for i in two.initrds] == ["/initrd-2"]
    assert quoted.args == "extra" and [i.path for i in quoted.initrds] == ["/a", "/b"]
    assert select(menu) is xen


# -- against the real pygrub ---------------------------------------------------------------

#: (kind, path, text): configs pygrub reads as GRUB does.
AGREEING = {
    "debian12": ("grub2", CFG, own.DEBIAN12),
    "redhat": ("grub2", "/boot/grub2/grub.cfg", own.REDHAT),
    "extlinux-plain": ("extlinux", "/boot/extlinux.conf", own.EXTLINUX_PLAIN),
    "menu.lst": ("grub-legacy", "/boot/grub/menu.lst", own.MENU_LST),
}


def _parse(kind: str, path: str, text: str) -> BootMenu:
    vol = DictVolume({path: text}, volume=VolumeIdentity("hd0,gpt2", uuid=own.ROOT_UUID))
    parse = {"grub2": parse_grub2, "extlinux": parse_extlinux, "grub-legacy": parse_grub_legacy}
    return parse[kind](vol, path)


@needs_pygrub
@pytest.mark.parametrize("name", sorted(AGREEING))
def test_every_entry_as_pygrub_reads_it(name: str, pygrub: tuple[ModuleType, ModuleType]) -> None:
    kind, path, text = AGREEING[name]
    menu = _parse(kind, path, text)
    assert pygrub_choice(pygrub, kind, text, path) == our_choice(menu)
    cf = pygrub_config(pygrub, kind, text, path)
    assert len(cf.images) == len(menu.entries)
    for index, img in enumerate(cf.images):
        if kind != "extlinux":  # pygrub titles a Syslinux entry by its label
            assert img.title == menu.entries[index].title
        assert pygrub_choice_of(img) == our_choice_of(menu, index)


def pygrub_choice_of(img: Any) -> Choice:
    """One of pygrub's images as a Choice."""
    kernel, initrd = img.kernel, img.initrd
    return Choice(kernel[1] if kernel else None, initrd[1] if initrd else None, norm(img.args))


@needs_pygrub
def test_relative_syslinux_names_pygrub_cannot_read(
    pygrub: tuple[ModuleType, ModuleType],
) -> None:
    """pygrub's Syslinux reader knows KERNEL/APPEND only: a LINUX label has no kernel there."""
    theirs = pygrub_choice(pygrub, "extlinux", own.EXTLINUX, "/boot/extlinux.conf")
    ours = our_choice(_parse("extlinux", "/boot/extlinux.conf", own.EXTLINUX))
    assert theirs.kernel is None and ours.kernel == "/boot/vmlinuz-lts"


@needs_pygrub_bin
@pytest.mark.parametrize("name", ["debian12", "redhat"])
def test_pygrub_cli_boots_what_we_boot(name: str, tmp_path: Path) -> None:
    kind, path, text = AGREEING[name]
    config = tmp_path / "grub.cfg"
    config.write_text(text)
    assert run_pygrub(config, tmp_path) == our_choice(_parse(kind, path, text))


@needs_pygrub_bin
def test_pygrub_cli_ignores_a_submenu_default(tmp_path: Path) -> None:
    """`set default="1>1"`: pygrub boots entry 0, GRUB the recovery entry in the submenu."""
    text = own.DEBIAN12.replace('set default="0"', 'set default="1>1"')
    config = tmp_path / "grub.cfg"
    config.write_text(text)
    cli = run_pygrub(config, tmp_path)
    assert cli is not None and "single" not in cli.args
    assert our_choice(_parse("grub2", CFG, text)).args == own.DEBIAN12_RECOVERY_ARGS
