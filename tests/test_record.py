"""`pvgrub_py.record` behaves as ``@dataclass`` where the boot path uses it,
and the boot path's modules make no dataclass (each cost ~0.25 ms at import)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from pvgrub_py.record import FrozenInstanceError, field, record


def _pair(frozen: bool, slots: bool = False) -> tuple[type, type]:
    def body() -> dict[str, object]:
        return {"__annotations__": {"a": "int", "b": "str", "c": "list[int]", "d": "int"},
                "b": "x", "c": dataclasses.field(default_factory=list), "d": 4}  # fmt: skip

    dc = dataclasses.dataclass(frozen=frozen, slots=slots)(type("P", (), body()))
    rb = body()
    rb["c"] = field(default_factory=list)
    rc = record(frozen=frozen, slots=slots)(type("P", (), rb))
    return dc, rc


@pytest.mark.parametrize(("frozen", "slots"), [(False, False), (True, False), (False, True)])
def test_record_matches_dataclass(frozen: bool, slots: bool) -> None:
    dc, rc = _pair(frozen, slots)
    for cls in (dc, rc):
        one, two = cls(1), cls(1, "y", [2], d=5)
        assert (one.a, one.b, one.c, one.d) == (1, "x", [], 4)
        assert (two.a, two.b, two.c, two.d) == (1, "y", [2], 5)
        assert cls(1).c is not cls(1).c  # a fresh default each time
    assert repr(rc(1, "y", [2])) == repr(dc(1, "y", [2]))
    assert rc(1) == rc(1) and rc(1) != rc(2) and rc(1) != dc(1)
    assert rc.__match_args__ == dc.__match_args__
    assert hasattr(rc(1), "__dict__") == hasattr(dc(1), "__dict__")
    if frozen:
        assert hash(rc(1, c=())) == hash(rc(1, c=()))  # type: ignore[arg-type]
        with pytest.raises(FrozenInstanceError):
            rc(1).a = 2
        with pytest.raises(AttributeError):
            del rc(1).a
    else:
        assert rc.__hash__ is None and dc.__hash__ is None
        x = rc(1)
        x.a = 3
        assert x.a == 3
    with pytest.raises(TypeError):
        rc()


def test_record_inherits_fields_and_runs_post_init() -> None:
    seen: list[int] = []

    @record
    class Base:
        a: int
        b: int = 2

        def __post_init__(self) -> None:
            seen.append(self.a)

    @record
    class Sub(Base):
        c: int = 3

    s = Sub(1, c=5)
    assert (s.a, s.b, s.c) == (1, 2, 5) and seen == [1]
    assert repr(s) == "test_record_inherits_fields_and_runs_post_init.<locals>.Sub(a=1, b=2, c=5)"
    assert Base(1) != Sub(1)


def test_record_keeps_a_method_the_class_defines_and_hides_repr_false() -> None:
    @record
    class C:
        a: int
        b: int = field(default=0, repr=False)

        def __repr__(self) -> str:
            return "mine"

    @record
    class D:
        a: int
        b: int = field(default=0, repr=False)

    assert repr(C(1)) == "mine"
    assert repr(D(1, 2)).endswith("D(a=1)")
    assert D.b == 0  # the default stays a class attribute, as with @dataclass


#: Imports what the parser child of a boot imports (guest side, the GRUB 2
#: interpreter, the ext4 reader, the sandbox) and prints the pvgrub_py
#: classes `dataclasses` made meanwhile.
CHILD_PATH = r"""
import dataclasses
made = []
real = dataclasses._process_class
def process(cls, *a, **k):
    made.append(f"{cls.__module__}.{cls.__qualname__}")
    return real(cls, *a, **k)
dataclasses._process_class = process
import pvgrub_py.bootloader.options, pvgrub_py.bootloader.depriv, pvgrub_py.bootloader.guest
import pvgrub_py.bootloader.sandbox, pvgrub_py.bootcfg.grub2, pvgrub_py.bootcfg.bls
import pvgrub_py.bootcfg.extlinux, pvgrub_py.disk.readers.ext4, pvgrub_py.disk.extents
print("\n".join(m for m in made if m.startswith("pvgrub_py.")))
"""


def test_the_parser_child_makes_no_dataclass() -> None:
    r = subprocess.run([sys.executable, "-c", CHILD_PATH], capture_output=True, text=True,
                       timeout=60, check=True)  # fmt: skip
    assert r.stdout.split() == []


def test_a_field_left_out_of_the_hash_as_dataclasses_does() -> None:
    """``field(hash=False)``: an unhashable field (a dict of digests) is
    compared but not hashed, as with `dataclasses.field`."""

    def body(f: object) -> dict[str, object]:
        return {"__annotations__": {"name": "str", "digests": "dict[str, bytes]"}, "digests": f}

    dc = dataclasses.dataclass(frozen=True)(type("M", (), body(dataclasses.field(hash=False))))
    rc = record(frozen=True)(type("M", (), body(field(hash=False))))
    for cls in (dc, rc):
        one, two = cls("k", {"sha1": b"1"}), cls("k", {"sha1": b"2"})
        assert hash(one) == hash(two) == hash(cls("k", {}))
        assert one != two and one == cls("k", {"sha1": b"1"})
    assert hash(rc("k", {})) == hash(dc("k", {}))


#: The modules the bootloader's parent imports on a measured boot (its vTPM
#: client, extraction, event log), and whether `dataclasses` came with them.
HOST_PATH = r"""
import sys
import pvgrub_py.cli.bootloader, pvgrub_py.program, pvgrub_py.bootloader.run
import pvgrub_py.bootloader.depriv, pvgrub_py.cli.connect, pvgrub_py.measure.vtpm
import pvgrub_py.bootloader.extract, pvgrub_py.bootloader.outdir, pvgrub_py.bootloader.output
import pvgrub_py.measure.boot_files, pvgrub_py.measure.extend, pvgrub_py.eventlog.builder
import pvgrub_py.eventlog.codec, pvgrub_py.eventlog.nv_channel
print("dataclasses" in sys.modules)
"""


def test_the_measuring_parent_imports_no_dataclasses() -> None:
    """Its vTPM client and event log records are `record`s: `dataclasses`
    (with inspect) and 20 generated classes cost the parent ~4 ms, the
    slower side of a plain boot."""
    r = subprocess.run([sys.executable, "-c", HOST_PATH], capture_output=True, text=True,
                       timeout=60, check=True)  # fmt: skip
    assert r.stdout.split() == ["False"]
