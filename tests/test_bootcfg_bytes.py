"""A config's bytes reach the cmdline unchanged, in every dialect (issue 12).

GRUB, syslinux and the BLS readers treat a config as bytes: a byte that is
not UTF-8 stays that byte, valid UTF-8 around it stays what it was, and only
ASCII blanks separate words.  The expected values here are the raw bytes
written into the config, never something our decoder produced.
"""

from __future__ import annotations

import pytest

from pvgrub_py.bootcfg.files import decode_config, encode_config, split_words
from pvgrub_py.bootloader.guest import parse_config_text
from pvgrub_py.bootloader.plan import BootPlan, FileSpec, MenuLine, plan_from_json, plan_to_json
from pvgrub_py.errors import InputError

#: valid UTF-8 (é, U+00A0 NO-BREAK SPACE, U+2028), a lone 0xff, a latin-1 é,
#: a lone 0x85 (NEL in latin-1: Python's split() took it for a blank).
ARGS = b"ro caf\xc3\xa9 nb\xc2\xa0sp ls\xe2\x80\xa8x label=\xff old=caf\xe9 nel=a\x85b"

CONFIGS = {
    "grub.cfg": b"menuentry 'x' {\n linux /vmlinuz " + ARGS + b"\n initrd /initrd\n}\n",
    "menu.lst": b"default 0\ntitle x\n  kernel /vmlinuz " + ARGS + b"\n  initrd /initrd\n",
    "extlinux.conf": b"default x\nlabel x\n  kernel /vmlinuz\n  append " + ARGS + b"\n"
                     b"  initrd /initrd\n",
    "entry.conf": b"title x\nlinux /vmlinuz\ninitrd /initrd\noptions " + ARGS + b"\n",
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_dialect_keeps_the_cmdline_bytes(name: str) -> None:
    menu = parse_config_text(CONFIGS[name], name)
    (entry,) = menu.entries
    assert encode_config(entry.args) == ARGS
    assert entry.kernel is not None and entry.kernel.path == "/vmlinuz"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_title_keeps_its_bytes(name: str) -> None:
    data = CONFIGS[name].replace(b"title x", b"title caf\xc3\xa9 \xff").replace(
        b"menuentry 'x'", b"menuentry 'caf\xc3\xa9 \xff'").replace(
        b"label x\n", b"label x\n  menu label caf\xc3\xa9 \xff\n")  # fmt: skip
    (entry,) = parse_config_text(data, name).entries
    assert encode_config(entry.title) == b"caf\xc3\xa9 \xff"


def test_decode_is_per_byte_and_round_trips() -> None:
    data = b"caf\xc3\xa9 \xff \xe9\x80"
    text = decode_config(data)
    assert text.startswith("caf\u00e9 ")  # the valid UTF-8 is not double-encoded
    assert encode_config(text) == data


def test_only_ascii_blanks_split_words() -> None:
    assert split_words(" a\u00a0b\tc\u2028d\x85e \n") == ["a\u00a0b", "c\u2028d\x85e"]
    assert split_words(" \t ") == []


def _plan(args: str) -> BootPlan:
    return BootPlan("cfg", (MenuLine("t", args, True),), 0, None, 0,
                    FileSpec("/k", "disk: /k"), (), args)  # fmt: skip


def test_the_sandbox_wire_carries_the_bytes() -> None:
    import json

    args = decode_config(ARGS)
    doc = json.loads(json.dumps(plan_to_json(_plan(args))).encode("utf-8").decode("utf-8"))
    assert encode_config(plan_from_json(doc, "child").args) == ARGS


def test_the_wire_refuses_a_surrogate_that_is_no_byte() -> None:
    doc = plan_to_json(_plan("ok"))
    doc["args"] = "a\ud800b"
    with pytest.raises(InputError, match="args holds a character that stands for no byte"):
        plan_from_json(doc, "child")


@pytest.mark.parametrize("name", ["entry.conf", "extlinux.conf", "menu.lst"])
def test_a_unicode_space_in_a_utf8_config_is_not_a_blank(name: str) -> None:
    # All valid UTF-8: U+00A0 and U+2028 are bytes of a word to GRUB and syslinux.
    args = b"a\xc2\xa0b c\xe2\x80\xa8d"
    data = CONFIGS[name].replace(ARGS, args)
    (entry,) = parse_config_text(data, name).entries
    assert encode_config(entry.args) == args
