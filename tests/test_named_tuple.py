"""`pvgrub_py.named_tuple.NamedTuple` behaves as `typing.NamedTuple` does.

Each test builds the same class body on both bases and compares what the
bootloader's records rely on.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import types
import typing
from collections.abc import Callable

import pytest

from pvgrub_py import named_tuple


def _point(base: typing.Any) -> typing.Any:
    class Point(base):  # type: ignore[misc, valid-type]
        """A point."""

        x: int
        y: int
        label: str = "origin"
        tags: tuple[str, ...] = ()

        LIMIT = 10

        @property
        def norm1(self) -> int:
            return abs(self.x) + abs(self.y)

        def moved(self, dx: int) -> Point:
            return self._replace(x=self.x + dx)  # type: ignore[no-any-return]

        @classmethod
        def origin(cls) -> Point:
            return cls(0, 0)  # type: ignore[no-any-return]

        @staticmethod
        def unit() -> int:
            return 1

    return Point


def _plain(base: typing.Any) -> typing.Any:
    class Plain(base):  # type: ignore[misc, valid-type]
        a: int
        b: bytes

    return Plain


BASES = [typing.NamedTuple, named_tuple.NamedTuple]


class TypingPair(typing.NamedTuple):
    a: int
    b: str = "b"


class OursPair(named_tuple.NamedTuple):
    a: int
    b: str = "b"


def _both(make: Callable[[typing.Any], typing.Any]) -> tuple[typing.Any, typing.Any]:
    return make(typing.NamedTuple), make(named_tuple.NamedTuple)


def test_the_class_is_the_same_kind_of_tuple() -> None:
    for ref, ours in (_both(_point), _both(_plain)):
        assert ours.__mro__[1:] == ref.__mro__[1:] == (tuple, object)
        assert type(ours) is type(ref) is type
        for attr in ("_fields", "_field_defaults", "__match_args__", "__slots__", "__doc__",
                     "__module__", "__qualname__", "__name__"):  # fmt: skip
            assert getattr(ours, attr) == getattr(ref, attr), attr
        assert list(ours.__annotations__) == list(ref.__annotations__)


def test_instances_behave_alike() -> None:
    ref, ours = _both(_point)
    for cls in (ref, ours):
        p = cls(3, -4)
        assert p == (3, -4, "origin", ())
        assert repr(p) == "Point(x=3, y=-4, label='origin', tags=())"
        assert p.norm1 == 7
        assert p.moved(2) == cls(5, -4)
        assert type(p.moved(2)) is cls
        assert cls.origin() == (0, 0, "origin", ())
        assert cls.unit() == 1 and cls.LIMIT == 10
        assert p._asdict() == {"x": 3, "y": -4, "label": "origin", "tags": ()}
        assert cls._make([1, 2, "l", ("t",)]).tags == ("t",)
        assert cls(x=1, y=2, label="l") == (1, 2, "l", ())
        assert hash(p) == hash((3, -4, "origin", ()))
        assert not hasattr(p, "__dict__")
        with pytest.raises(AttributeError):
            p.x = 1
        with pytest.raises(AttributeError):
            p.other = 1  # no __dict__: __slots__ = ()
        with pytest.raises(TypeError):
            cls(1)  # y has no default
        with pytest.raises(ValueError):
            p._replace(z=1)
        match p:
            case cls(a, b):
                assert (a, b) == (3, -4)
            case _:
                pytest.fail("no match")


def _body(
    annotations: dict[str, str], names: dict[str, object]
) -> Callable[[dict[str, object]], None]:
    def fill(ns: dict[str, object]) -> None:
        ns.update(names, __annotations__=annotations, __module__=__name__)

    return fill


def test_the_same_definitions_are_refused() -> None:
    for base in BASES:
        with pytest.raises(TypeError):

            class Bad(base):  # type: ignore[misc, valid-type]
                a: int = 0
                b: int

        for reserved in ("_replace", "_asdict", "_fields", "__new__", "__init__", "__slots__"):
            with pytest.raises(AttributeError):
                types.new_class("Bad", (base,), exec_body=_body({"a": "int"}, {reserved: 1}))


def test_it_pickles_as_a_module_level_class() -> None:
    for cls in (TypingPair, OursPair):
        p = cls(1)
        assert pickle.loads(pickle.dumps(p)) == p
        assert type(pickle.loads(pickle.dumps(p))) is cls
    assert OursPair.__module__ == __name__ and OursPair.__qualname__ == "OursPair"


def test_super_and_subclasses_work() -> None:
    class Ours(named_tuple.NamedTuple):
        a: int

        def __repr__(self) -> str:
            return "<" + super().__repr__() + ">"

    class Child(Ours):
        @property
        def double(self) -> int:
            return self.a * 2

    # super() works (the class cell is filled) and means tuple's, as in any
    # namedtuple: the overridden __repr__ was this class's own.
    assert repr(Ours(1)) == "<(1,)>"
    assert Child(2).double == 4 and Child(2) == (2,)


def test_importing_it_imports_no_typing() -> None:
    code = "import sys, pvgrub_py.named_tuple; print('typing' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    assert out.strip() == "False"
