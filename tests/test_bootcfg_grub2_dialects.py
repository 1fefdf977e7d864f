"""The GRUB 2 interpreter and the two dialects, on scripts written here.

`make test`'s coverage of what petitboot's parser suite (conformance) checks:
each difference between GRUB's reading and petitboot's that the README lists,
and the interpreter features the distribution configs lean on (variables,
quoting, if/elif, functions, loops, load_env, search, source/configfile,
blscfg).  Expected values are GRUB's documented behaviour, read by hand.
"""

from __future__ import annotations

import pytest
from own_bootcfg import grubenv

from pvgrub_py.bootcfg import (
    BootConfigError,
    BootMenu,
    DictVolume,
    VolumeIdentity,
    parse_extlinux,
    parse_grub2,
    select,
)
from pvgrub_py.bootcfg.dialect import Dialect

CFG = "/boot/grub/grub.cfg"
UUID = "1111-2222"


def parse(files: dict[str, str], dialect: Dialect, dirs: tuple[str, ...] = ()) -> BootMenu:
    vol = DictVolume(files, list(dirs), VolumeIdentity("hd0,msdos1", uuid=UUID))
    return parse_grub2(vol, CFG, dialect=dialect)


def boots(menu: BootMenu) -> list[tuple[str, str | None, str | None, list[str], str]]:
    return [
        (e.title, e.kernel.path if e.kernel else None, e.kernel.device if e.kernel else None,
         [i.path for i in e.initrds], e.args)
        for e in menu.entries
    ]  # fmt: skip


# (case, files, dirs, what GRUB boots, what petitboot boots): one row per README item.
DIFFERENCES = [
    (
        "menuentry body runs at boot with the final variables / in place",
        {CFG: "set k=/a\nmenuentry t { linux $k }\nset k=/b\n"},
        (),
        [("t", "/b", "hd0,msdos1", [], "")],
        [("t", "/a", "hd0,msdos1", [], "")],
    ),
    (
        "a loop variable in a body: its last value / each value",
        {CFG: 'for v in 1 2; do menuentry "e$v" { linux /k$v }; done\n'},
        (),
        [("e1", "/k2", "hd0,msdos1", [], ""), ("e2", "/k2", "hd0,msdos1", [], "")],
        [("e1", "/k1", "hd0,msdos1", [], ""), ("e2", "/k2", "hd0,msdos1", [], "")],
    ),
    (
        "a function's $2 inside a menuentry body: unset at boot / the argument",
        {CFG: 'function f { menuentry "$1" { linux /k $2 } }\nf one x\nf two y\n'},
        (),
        [("one", "/k", "hd0,msdos1", [], ""), ("two", "/k", "hd0,msdos1", [], "")],
        [("one", "/k", "hd0,msdos1", [], "x"), ("two", "/k", "hd0,msdos1", [], "y")],
    ),
    (
        "set a=b c sets b / b c",
        {CFG: "set a=b c\nmenuentry t { linux /k $a }\n"},
        (),
        [("t", "/k", "hd0,msdos1", [], "b")],
        [("t", "/k", "hd0,msdos1", [], "b c")],
    ),
    (
        "search without a type: refused / a UUID search setting $root",
        {CFG: "search nouuid\nmenuentry t { linux /k r=$root }\n"},
        (),
        [("t", "/k", "hd0,msdos1", [], "r=hd0,msdos1")],
        [("t", "/k", "nouuid", [], "r=nouuid")],
    ),
    (
        "a UUID search that misses: the variable stays / holds the UUID",
        {
            CFG: "set root=x\nsearch --fs-uuid --set=root 9999-0000\n"
            + "menuentry t { linux /k r=$root }\n"
        },
        (),
        [("t", "/k", "x", [], "r=x")],
        [("t", "/k", "9999-0000", [], "r=9999-0000")],
    ),
    (
        "test -s DIR is false / true",
        {CFG: "if test -s /boot; then a=yes; else a=no; fi\nmenuentry t { linux /k $a }\n"},
        ("/boot",),
        [("t", "/k", "hd0,msdos1", [], "no")],
        [("t", "/k", "hd0,msdos1", [], "yes")],
    ),
    (
        "BLS title $var stays literal / is expanded; initrd $a /x $b loads nothing / /x",
        {
            CFG: "set v=V\nblscfg\n",
            "/loader/entries/a-1.conf": "title T $v\nlinux /vm\ninitrd $a /x $b\noptions ro\n",
        },
        (),
        [("T $v", "/vm", "hd0,msdos1", [], "ro")],
        [("T V", "/vm", "hd0,msdos1", ["/x"], "ro")],
    ),
]


@pytest.mark.parametrize(
    ("files", "dirs", "grub", "petitboot"),
    [row[1:] for row in DIFFERENCES],
    ids=[row[0] for row in DIFFERENCES],
)
def test_each_dialect_difference(
    files: dict[str, str],
    dirs: tuple[str, ...],
    grub: list[tuple[object, ...]],
    petitboot: list[tuple[object, ...]],
) -> None:
    assert boots(parse(files, Dialect.GRUB, dirs)) == grub
    assert boots(parse(files, Dialect.PETITBOOT, dirs)) == petitboot
    assert boots(parse_grub2(DictVolume(files, list(dirs), VolumeIdentity("hd0,msdos1",
                 uuid=UUID)), CFG)) == grub  # GRUB's is the default  # fmt: skip


def test_source_nested_too_deep_is_an_error_in_grub_and_a_stop_in_petitboot() -> None:
    files = {CFG: "source /s1\n"} | {
        f"/s{i}": f"menuentry e{i} {{ linux /k{i} }}\nsource /s{i + 1}\n" for i in range(1, 20)
    }
    with pytest.raises(BootConfigError, match="nested deeper") as info:
        parse(files, Dialect.GRUB)
    assert "\n" not in str(info.value)
    menu = parse(files, Dialect.PETITBOOT)
    assert [e.title for e in menu.entries] == [f"e{i}" for i in range(1, 11)]
    assert any("nested deeper than 10 levels" in w for w in menu.warnings)


def test_syslinux_label_append_replaces_or_follows_the_global_one() -> None:
    vol = DictVolume({"/extlinux.conf": "APPEND g=1\nLABEL a\n KERNEL /k\n APPEND l=2\n"})
    grub = parse_extlinux(vol, "/extlinux.conf", dialect=Dialect.GRUB)
    petitboot = parse_extlinux(vol, "/extlinux.conf", dialect=Dialect.PETITBOOT)
    assert grub.entries[0].args == "l=2"
    assert petitboot.entries[0].args == "g=1 l=2"


# -- the interpreter, in both dialects where they agree --------------------------------

SAME = [
    (
        "if/elif/else with [ ] comparisons",
        {
            CFG: "a=2\nif [ $a = 1 ]; then b=one; elif [ $a = 2 ]; then b=two; else b=x; fi\n"
            'menuentry "t $b" { linux /k-$b }\n'
        },
        [("t two", "/k-two", "hd0,msdos1", [], "")],
    ),
    (
        "quoting: double quotes expand, single quotes do not, a backslash escapes",
        {CFG: "x='a b'\nmenuentry \"q\" { linux /k \"$x\" 'lit $x' c\\ d }\n"},
        # GRUB re-quotes an argument containing a space when it builds the cmdline.
        [("q", "/k", "hd0,msdos1", [], '"a b" "lit $x" "c d"')],
    ),
    (
        "load_env reads grubenv next to the config",
        {
            CFG: "load_env\nmenuentry t { linux /k $kopts }\n",
            "/boot/grub/grubenv": grubenv(kopts="ro quiet"),
        },
        [("t", "/k", "hd0,msdos1", [], "ro quiet")],
    ),
    (
        "configfile replaces the menu",
        {
            CFG: "menuentry a { linux /a }\nconfigfile /other.cfg\nmenuentry b { linux /b }\n",
            "/other.cfg": "menuentry o { linux /o }\n",
        },
        [("o", "/o", "hd0,msdos1", [], "")],
    ),
    (
        "source adds to the menu",
        {
            CFG: "menuentry a { linux /a }\nsource /more.cfg\nmenuentry b { linux /b }\n",
            "/more.cfg": "menuentry m { linux /m }\n",
        },
        [
            ("a", "/a", "hd0,msdos1", [], ""),
            ("m", "/m", "hd0,msdos1", [], ""),
            ("b", "/b", "hd0,msdos1", [], ""),
        ],
    ),
    (
        "search --fs-uuid --set=root finds the volume",
        {CFG: f"set root=x\nsearch --fs-uuid --set=root {UUID}\nmenuentry t {{ linux /k }}\n"},
        [("t", "/k", "hd0,msdos1", [], "")],
    ),
    (
        "a while loop ends",
        {CFG: "i=0\nwhile [ $i -lt 2 ]; do i=5; menuentry w { linux /w }; done\n"},
        [("w", "/w", "hd0,msdos1", [], "")],
    ),
]


@pytest.mark.parametrize(("files", "want"), [r[1:] for r in SAME], ids=[r[0] for r in SAME])
@pytest.mark.parametrize("dialect", list(Dialect))
def test_interpreter(
    files: dict[str, str], want: list[tuple[object, ...]], dialect: Dialect
) -> None:
    menu = parse(files, dialect)
    assert boots(menu) == want
    assert not menu.warnings


@pytest.mark.parametrize(
    ("default", "title"),
    [("two", "Two"), ("Two", "Two"), ("1", "Two"), ("0", "one"), ("nothing", "one")],
)
def test_default_by_id_title_or_index(default: str, title: str) -> None:
    text = (
        f"set default={default}\nmenuentry one --id=one {{ linux /1 }}\n"
        "menuentry 'Two' --id two { linux /2 }\n"
    )
    assert select(parse({CFG: text}, Dialect.GRUB), strict=False).title == title
