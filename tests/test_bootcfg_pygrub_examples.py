"""pygrub's example configs, the Linode menu.lst and GRUB's isolinux test tree.

Expected values were read off the files by hand (kernel lines, the
grub-mkconfig structure, the menu.lst and isolinux directives); the
differential test compares the same files against pygrub itself.  These are
third-party files (`make conformance`); `test_bootcfg_own_configs.py` covers
the same shapes with configs this project writes.
"""

from __future__ import annotations

import corpus
import pytest

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

pytestmark = pytest.mark.conformance

BOOTCFG = corpus.BOOTCFG
EXAMPLES = BOOTCFG / "pygrub-examples"
LINODE = BOOTCFG / "menu-lst" / "linode-debian.menu.lst"
ISOLINUX = BOOTCFG / "grub-syslinux" / "ubuntu10.04"

FEDORA16_ARGS = (
    "root=/dev/mapper/VolGroup-lv_root ro {}rd.md=0 rd.dm=0 rd.lvm.lv=VolGroup/lv_swap quiet "
    "SYSFONT=latarcyrheb-sun16 rhgb rd.lvm.lv=VolGroup/lv_root rd.luks=0 KEYTABLE=uk "
    "LANG=en_US.UTF-8"
)
FEDORA19_ARGS = (
    "root=/dev/mapper/fedora-root ro rd.lvm.lv=fedora/swap rd.md=0 rd.dm=0 vconsole.keymap=us "
    "rd.luks=0 vconsole.font=latarcyrheb-sun16 rd.lvm.lv=fedora/root"
)
RHEL7_ARGS = (
    "root=/dev/mapper/rhel-root ro rd.lvm.lv=rhel/swap vconsole.keymap=uk crashkernel=auto "
    "rd.lvm.lv=rhel/root vconsole.font=latarcyrheb-sun16"
)

# file -> (uuid the config searches for, [(index path, title, kernel, initrd, args)])
GRUB2_EXPECTED: dict[str, tuple[str, list[tuple[str, str, str | None, str | None, str]]]] = {
    "debian-wheezy-hvm.grub2": (
        "f395d5a0-4612-4872-806c-33cd37c152f0",
        [
            (
                "0",
                "Debian GNU/Linux, with Linux 3.2.0-4-amd64",
                "/boot/vmlinuz-3.2.0-4-amd64",
                "/boot/initrd.img-3.2.0-4-amd64",
                "root=UUID=f395d5a0-4612-4872-806c-33cd37c152f0 ro",
            ),
            (
                "1",
                "Debian GNU/Linux, with Linux 3.2.0-4-amd64 (recovery mode)",
                "/boot/vmlinuz-3.2.0-4-amd64",
                "/boot/initrd.img-3.2.0-4-amd64",
                "root=UUID=f395d5a0-4612-4872-806c-33cd37c152f0 ro single",
            ),
        ],
    ),
    "fedora-16-with-xen.grub2": (
        "f14ea58a-c2b3-4348-8091-3ab733a2f49e",
        [
            (
                "0",
                "Fedora Linux, with Linux 3.1.0-0.rc9.git0.0.fc16.x86_64",
                "/vmlinuz-3.1.0-0.rc9.git0.0.fc16.x86_64",
                "/initramfs-3.1.0-0.rc9.git0.0.fc16.x86_64.img",
                FEDORA16_ARGS.format(""),
            ),
            (
                "1",
                "Fedora Linux, with Linux 3.1.0-0.rc9.git0.0.fc16.x86_64 (recovery mode)",
                "/vmlinuz-3.1.0-0.rc9.git0.0.fc16.x86_64",
                "/initramfs-3.1.0-0.rc9.git0.0.fc16.x86_64.img",
                FEDORA16_ARGS.format("single "),
            ),
            # The "Xen 4.1" submenu: multiboot entries a PV guest cannot boot.
            (
                "2>0",
                "Fedora Linux, with Xen 4.1 and Linux 3.1.0-0.rc9.git0.0.fc16.x86_64",
                None,
                None,
                "",
            ),
            (
                "2>1",
                "Fedora Linux, with Xen 4.1 and Linux 3.1.0-0.rc9.git0.0.fc16.x86_64 "
                "(recovery mode)",
                None,
                None,
                "",
            ),
        ],
    ),
    "fedora-19.grub2": (
        "5001334f-de37-4b0b-bd2b-c1cea036f293",
        [
            (
                "0",
                "Fedora, with Linux 3.9.6-301.fc19.i686.PAE",
                "/vmlinuz-3.9.6-301.fc19.i686.PAE",
                "/initramfs-3.9.6-301.fc19.i686.PAE.img",
                FEDORA19_ARGS,
            ),
            (
                "1",
                "Fedora, with Linux 0-rescue-8d62a0261d8147dc84eb89292ebc1666",
                "/vmlinuz-0-rescue-8d62a0261d8147dc84eb89292ebc1666",
                "/initramfs-0-rescue-8d62a0261d8147dc84eb89292ebc1666.img",
                FEDORA19_ARGS,
            ),
        ],
    ),
    "rhel-7-beta.grub2": (
        "89ffef78-82b3-457c-bc57-42cccc373851",
        [
            (
                "0",
                "Red Hat Enterprise Linux Everything, with Linux 3.10.0-54.0.1.el7.x86_64",
                "/vmlinuz-3.10.0-54.0.1.el7.x86_64",
                "/initramfs-3.10.0-54.0.1.el7.x86_64.img",
                RHEL7_ARGS + " LANG=en_GB.UTF-8",
            ),
            (
                "1",
                "Red Hat Enterprise Linux Everything, with Linux "
                "0-rescue-af34f0b8cf364cdbbe6d093f8228a37f",
                "/vmlinuz-0-rescue-af34f0b8cf364cdbbe6d093f8228a37f",
                "/initramfs-0-rescue-af34f0b8cf364cdbbe6d093f8228a37f.img",
                RHEL7_ARGS,
            ),
        ],
    ),
    "ubuntu-14.04-lts.grub2": (
        "86ba9198-4319-4809-908d-6dbe6938b19a",
        [
            (
                "0",
                "Ubuntu",
                "/vmlinuz-3.13.0-44-generic",
                "/initrd.img-3.13.0-44-generic",
                "root=/dev/mapper/BoxenSys00-root ro biosdevname=0 quiet",
            ),
            (
                "1>0",
                "Ubuntu, with Linux 3.13.0-44-generic",
                "/vmlinuz-3.13.0-44-generic",
                "/initrd.img-3.13.0-44-generic",
                "root=/dev/mapper/BoxenSys00-root ro biosdevname=0 quiet",
            ),
            (
                "1>1",
                "Ubuntu, with Linux 3.13.0-44-generic (recovery mode)",
                "/vmlinuz-3.13.0-44-generic",
                "/initrd.img-3.13.0-44-generic",
                "root=/dev/mapper/BoxenSys00-root ro recovery nomodeset biosdevname=0",
            ),
            # memtest86+ via knetbsd: not a Linux kernel.
            ("2", "Memory test (memtest86+)", None, None, ""),
            (
                "3",
                "Memory test (memtest86+, serial console 115200)",
                "/memtest86+.bin",
                None,
                "console=ttyS0,115200n8",
            ),
        ],
    ),
}


def example_volume(name: str, *, uuid: str | None, path: str = "/boot/grub/grub.cfg") -> DictVolume:
    return DictVolume(
        {path: (EXAMPLES / name).read_bytes()},
        volume=VolumeIdentity("hd0,msdos1", uuid=uuid),
    )


@pytest.mark.parametrize("name", sorted(GRUB2_EXPECTED))
def test_grub2_example(name: str) -> None:
    uuid, expected = GRUB2_EXPECTED[name]
    menu = parse_grub2(example_volume(name, uuid=uuid), "/boot/grub/grub.cfg")
    assert menu.format == "grub2"
    assert menu.timeout == 5
    assert len(menu.entries) == len(expected)
    for entry, (path, title, kernel, initrd, args) in zip(menu.entries, expected, strict=True):
        assert entry.index_path == path
        assert entry.title == title
        assert (entry.kernel.path if entry.kernel else None) == kernel
        assert (entry.initrd.path if entry.initrd else None) == initrd
        assert entry.args == args
        if entry.kernel is not None:
            # The search for the config's UUID found our volume.
            assert entry.kernel.device == "hd0,msdos1"
            assert not [w for w in entry.warnings if "search" in w]
    chosen = select(menu)
    assert chosen is menu.entries[0]
    assert not [w for w in menu.warnings if "syntax error" in w]


def test_ubuntu_submenu_paths_and_ids() -> None:
    uuid = GRUB2_EXPECTED["ubuntu-14.04-lts.grub2"][0]
    menu = parse_grub2(example_volume("ubuntu-14.04-lts.grub2", uuid=uuid), "/boot/grub/grub.cfg")
    sub = menu.entries[1]
    assert sub.title_path == "Advanced options for Ubuntu>Ubuntu, with Linux 3.13.0-44-generic"
    assert sub.id == "gnulinux-3.13.0-44-generic-advanced-c7a4b4ca-71da-4d03-b374-a6b76ebcfc90"
    assert [s.index_path for s in menu.submenus] == ["1"]
    assert menu.submenus[0].id == "gnulinux-advanced-c7a4b4ca-71da-4d03-b374-a6b76ebcfc90"
    assert sub.classes == ("ubuntu", "gnu-linux", "gnu", "os")
    # --entry in every form pygrub users may write, plus GRUB paths.
    assert select(menu, "1") is sub
    assert select(menu, "1>1") is menu.entries[2]
    assert select(menu, "Ubuntu, with Linux 3.13.0-44-generic (recovery mode)") is menu.entries[2]
    assert select(menu, sub.id) is sub
    assert (
        select(menu, "gnulinux-advanced-c7a4b4ca-71da-4d03-b374-a6b76ebcfc90>1") is menu.entries[2]
    )
    with pytest.raises(BootConfigError, match="no menu entry matches"):
        select(menu, "no such entry")
    assert select(menu, "no such entry", strict=False) is menu.entries[0]
    with pytest.raises(BootConfigError, match="loads no Linux kernel"):
        select(menu, "Memory test (memtest86+)")


def test_search_miss_keeps_the_hint_root() -> None:
    """Without the searched UUID the entries boot from the `set root` hint, as in GRUB."""
    menu = parse_grub2(example_volume("fedora-19.grub2", uuid=None), "/boot/grub/grub.cfg")
    entry = select(menu)
    assert entry.kernel is not None and entry.kernel.device == "hd0,msdos1"
    assert any("search: no volume with fs-uuid" in w for w in entry.warnings)


def test_debian_xen_device_name_resolves() -> None:
    """`set root='(/dev/xvda,msdos1)'` (Debian in a PV guest) names hd0,msdos1."""
    menu = parse_grub2(example_volume("debian-wheezy-hvm.grub2", uuid=None), "/boot/grub/grub.cfg")
    entry = select(menu)
    assert entry.kernel is not None and entry.kernel.device == "/dev/xvda,msdos1"
    vols = VolumeSet([example_volume("debian-wheezy-hvm.grub2", uuid=None)])
    assert vols.resolve(entry.kernel.device) is vols.primary


def test_saved_entry_and_next_entry_from_grubenv() -> None:
    """fedora-19's header: next_entry beats saved_entry beats the default."""
    cfg = (EXAMPLES / "fedora-19.grub2").read_bytes()
    rescue = "Fedora, with Linux 0-rescue-8d62a0261d8147dc84eb89292ebc1666"
    env = "# GRUB Environment Block\nsaved_entry=" + rescue + "\n"
    env = env + "#" * (1024 - len(env))
    vol = DictVolume({"/boot/grub2/grub.cfg": cfg, "/boot/grub2/grubenv": env})
    menu = parse_grub2(vol, "/boot/grub2/grub.cfg")
    assert menu.default == rescue
    assert select(menu).title == rescue
    assert not [w for w in menu.warnings if "grubenv" in w]

    env2 = "# GRUB Environment Block\nsaved_entry=" + rescue + "\nnext_entry=0\n"
    env2 = env2 + "#" * (1024 - len(env2))
    vol2 = DictVolume({"/boot/grub2/grub.cfg": cfg, "/boot/grub2/grubenv": env2})
    menu2 = parse_grub2(vol2, "/boot/grub2/grub.cfg")
    assert menu2.default == "0"
    assert select(menu2).title == "Fedora, with Linux 3.9.6-301.fc19.i686.PAE"


def test_alpine_extlinux() -> None:
    vol = DictVolume(
        {"/boot/extlinux.conf": (EXAMPLES / "alpine-linux-2.3.2.extlinux").read_bytes()}
    )
    menu = parse_extlinux(vol, "/boot/extlinux.conf")
    assert menu.format == "extlinux"
    assert [(e.id, e.title) for e in menu.entries] == [("grsec", "Linux 3.0.10-grsec")]
    entry = select(menu)
    # Relative names are taken from the config's directory, as Syslinux does.
    assert entry.kernel is not None and entry.kernel.path == "/boot/vmlinuz-3.0.10-grsec"
    assert [i.path for i in entry.initrds] == ["/boot/initramfs-3.0.10-grsec"]
    assert entry.args == (
        "root=UUID=a97ffe64-430f-4fd3-830e-4736d9a27af0 modules=sd-mod,usb-storage,ext4 quiet"
    )
    assert menu.default == "grsec"  # MENU DEFAULT beats DEFAULT menu.c32
    assert menu.timeout == 3  # TIMEOUT 30 tenths of a second


def test_linode_menu_lst() -> None:
    vol = DictVolume({"/boot/grub/menu.lst": LINODE.read_bytes()})
    menu = parse_grub_legacy(vol, "/boot/grub/menu.lst")
    assert menu.format == "grub-legacy"
    assert menu.default_index == 0 and menu.default == "0"
    assert menu.timeout == 2
    rows = [(e.title, e.root, e.kernel.path if e.kernel else None, e.args) for e in menu.entries]
    assert rows == [
        (
            "Debian GNU/Linux, kernel v2.6.35-rc5-1-g561c5e8",
            "hd0",
            "/boot/vmlinuz-2.6.35-rc5-Avar-Akbar+",
            "root=/dev/xvda",
        ),
        (
            "Debian GNU/Linux, kernel 2.6.35-rc5-Avar-Akbar+",
            "hd0",
            "/etc/boot/vmlinuz-2.6.35-rc5-Avar-Akbar+",
            "root=UUID=3529f8c9-9878-47d7-9b22-d97d327a5b85 ro",
        ),
        (
            "Debian GNU/Linux, kernel 2.6.35-rc5-Avar-Akbar+ (single-user mode)",
            "hd0",
            "/etc/boot/vmlinuz-2.6.35-rc5-Avar-Akbar+",
            "root=UUID=3529f8c9-9878-47d7-9b22-d97d327a5b85 ro single",
        ),
    ]
    assert all(e.initrds == () for e in menu.entries)
    # `root (hd0)`: a whole disk, no partition; it resolves to an unpartitioned volume.
    disk = VolumeSet(
        [DictVolume({"/boot/grub/menu.lst": LINODE.read_bytes()}, volume=VolumeIdentity("hd0"))]
    )
    entry = select(menu)
    assert entry.kernel is not None
    assert disk.resolve(entry.kernel.device) is disk.primary


def _boots(menu: BootMenu) -> list[tuple[object, ...]]:
    return [
        (e.index_path, e.title, e.kernel, e.initrds, e.args, e.loader) for e in menu.entries
    ] + [("default", menu.default_index)]


@pytest.mark.parametrize("name", sorted(GRUB2_EXPECTED))
def test_grub2_example_same_in_both_dialects(name: str) -> None:
    """Generated configs boot the same in GRUB's and petitboot's reading."""
    vol = example_volume(name, uuid=GRUB2_EXPECTED[name][0])
    grub = parse_grub2(vol, "/boot/grub/grub.cfg", dialect=Dialect.GRUB)
    petitboot = parse_grub2(vol, "/boot/grub/grub.cfg", dialect=Dialect.PETITBOOT)
    assert _boots(grub) == _boots(petitboot)


def test_isolinux_tree_same_in_both_dialects() -> None:
    files = {"/" + str(p.relative_to(ISOLINUX)): p.read_bytes() for p in ISOLINUX.rglob("*")
             if p.is_file()}  # fmt: skip
    menus = [
        parse_extlinux(DictVolume(files), "/isolinux/isolinux.cfg", dialect=d) for d in Dialect
    ]
    assert _boots(menus[0]) == _boots(menus[1])


def test_isolinux_tree() -> None:
    files = {
        "/" + str(p.relative_to(ISOLINUX)): p.read_bytes()
        for p in ISOLINUX.rglob("*")
        if p.is_file()
    }
    menu = parse_extlinux(DictVolume(files), "/isolinux/isolinux.cfg")
    labels = [e.id for e in menu.entries]
    assert labels[:5] == ["live", "live-install", "check", "memtest", "hd"]
    by = {e.id: e for e in menu.entries}
    # Titles come from MENU LABEL without the ^ hotkey mark, as grub-syslinux2cfg shows them.
    assert by["live"].title == "Try Ubuntu without installing"
    assert select(menu, "live-install") is by["live-install"]
    for name in ("live", "live-install", "check"):
        e = by[name]
        assert e.kernel is not None and e.kernel.path == "/casper/vmlinuz"
        assert [i.path for i in e.initrds] == ["/casper/initrd.lz"]  # from APPEND initrd=
        assert "initrd=" not in e.args
    assert by["live"].args == "file=/cdrom/preseed/ubuntu.seed boot=casper quiet splash --"
    assert by["memtest"].kernel is not None and by["memtest"].kernel.path == "/install/mt86plus"
    assert not by["hd"].bootable and by["hd"].loader == "localboot"
    assert not by["help"].bootable  # CONFIG prompt.cfg
    # txt.cfg says `default live`; isolinux.cfg later says `default vesamenu.c32`, a UI
    # module and no label, so the first label boots (grub-syslinux2cfg keeps the
    # module name as its default, which names no entry either).
    assert menu.default == "vesamenu.c32"
    assert select(menu).id == "live"
    assert menu.timeout == 5
    assert any("gtk.cfg" in w for w in menu.warnings)


LAYOUTS = [
    ("/boot/grub/grub.cfg", "grub2"),
    ("/grub/grub.cfg", "grub2"),  # separate /boot partition
    ("/boot/grub2/grub.cfg", "grub2"),
    ("/grub2/grub.cfg", "grub2"),
    ("/boot/extlinux/extlinux.conf", "extlinux"),
    ("/extlinux.conf", "extlinux"),
    ("/boot/grub/menu.lst", "grub-legacy"),
    ("/grub/grub.conf", "grub-legacy"),
]


@pytest.mark.parametrize(("path", "kind"), LAYOUTS)
def test_find_config_layouts(path: str, kind: str) -> None:
    source = {
        "grub2": EXAMPLES / "fedora-19.grub2",
        "extlinux": EXAMPLES / "alpine-linux-2.3.2.extlinux",
        "grub-legacy": LINODE,
    }[kind]
    empty = DictVolume({"/etc/fstab": ""}, volume=VolumeIdentity("hd0,msdos1"))
    boot = DictVolume({path: source.read_bytes()}, volume=VolumeIdentity("hd0,msdos2"))
    vols = VolumeSet([empty, boot])
    found = find_config(vols)
    assert found is not None and (found.path, found.kind) == (path, kind)
    assert found.volume is boot
    menu = load_menu(vols)
    assert menu.format == kind and menu.entries


def test_find_config_order_and_bls_only() -> None:
    both = DictVolume(
        {
            "/boot/grub/menu.lst": LINODE.read_bytes(),
            "/boot/grub2/grub.cfg": (EXAMPLES / "fedora-19.grub2").read_bytes(),
        }
    )
    found = find_config([both])
    assert found is not None and found.kind == "grub2"  # pygrub's order: GRUB 2 first
    bls_only = DictVolume(
        {
            "/loader/entries/abc-6.1.0-1.fc39.x86_64.conf": (
                "title Fedora 6.1\nlinux /vmlinuz-6.1\n"
                "initrd /initramfs-6.1.img\noptions ro quiet\n"
            ),
            "/loader/entries/abc-6.10.0-1.fc39.x86_64.conf": (
                "title Fedora 6.10\nlinux /vmlinuz-6.10\noptions ro\n"
            ),
        }
    )
    menu = load_menu(VolumeSet([bls_only]))
    assert menu.format == "bls"
    assert [e.title for e in menu.entries] == ["Fedora 6.10", "Fedora 6.1"]  # newest first
    assert select(menu).kernel is not None
    # Fedora 28-30 style snippets: $kernelopts comes from grubenv.
    env = "# GRUB Environment Block\nkernelopts=root=/dev/xvda2 ro\n"
    fedora = DictVolume(
        {
            "/loader/entries/m-5.0.9-301.fc30.x86_64.conf": (
                "title F30\nlinux /vmlinuz-5.0.9\ninitrd /initramfs-5.0.9.img $tuned_initrd\n"
                "options $kernelopts $tuned_params quiet\n"
            ),
            "/grub2/grubenv": env + "#" * (1024 - len(env)),
        }
    )
    entry = select(load_menu(VolumeSet([fedora])))
    assert entry.args == "root=/dev/xvda2 ro quiet"
    assert [i.path for i in entry.initrds] == ["/initramfs-5.0.9.img"]
    with pytest.raises(BootConfigError, match="no boot configuration found"):
        load_menu(VolumeSet([DictVolume({"/etc/fstab": ""})]))


def _menu_titles(menu: BootMenu) -> list[str]:
    return [e.title_path for e in menu.entries]


def test_configfile_chain_replaces_the_menu() -> None:
    """An EFI-style stub grub.cfg that hands over to the real one on another volume."""
    stub = DictVolume(
        {
            "/boot/grub/grub.cfg": (
                "menuentry stub { linux /nope }\n"
                "search.fs_uuid 1234-abcd root\n"
                "set prefix=($root)/boot/grub2\n"
                "configfile $prefix/grub.cfg\n"
                "menuentry after { linux /nope }\n"
            )
        },
        volume=VolumeIdentity("hd0,gpt1"),
    )
    real = DictVolume(
        {"/boot/grub2/grub.cfg": (EXAMPLES / "fedora-19.grub2").read_bytes()},
        volume=VolumeIdentity("hd0,gpt2", uuid="1234-ABCD"),
    )
    menu = parse_grub2(VolumeSet([stub, real]), "/boot/grub/grub.cfg")
    assert _menu_titles(menu) == [e[1] for e in GRUB2_EXPECTED["fedora-19.grub2"][1]]
