"""`NamedTuple` for class syntax, without importing `typing` at run time.

Every module a ``--runas`` boot imports before the parser child sends its
plan is on the critical path (bench/bench_bootloader.py).  ``import typing``
costs ~1.7 ms there and each ``class X(typing.NamedTuple)`` ~0.1 ms, against
~0.035 ms for `collections.namedtuple`.  So the records on that path write
``from pvgrub_py.named_tuple import NamedTuple``:

* for the type checker it *is* `typing.NamedTuple` (the re-export below),
  so field types, defaults and methods are checked as usual;
* at run time it is a base class whose metaclass turns the class body into
  a `collections.namedtuple`: the annotated names, in order, are the fields;
  those given a value are the defaults (a field without one may not follow
  one with one); everything else in the body (docstring, methods,
  properties, classmethods, constants) is set on the new class.  The class
  is a plain tuple subclass with ``__slots__ = ()`` (no instance
  ``__dict__``), ``_fields``, ``_field_defaults``, ``_make``, ``_replace``
  and ``_asdict``, and ``__module__``/``__qualname__`` of the class
  statement, so it pickles and prints as the typing version does.

Only class syntax is supported (the functional form is not used here), and
no other base class besides `NamedTuple`.  Annotations stay strings (every
module uses ``from __future__ import annotations``).
"""

from __future__ import annotations

import collections
from collections.abc import Callable

TYPE_CHECKING = False

# Called through a plain name: mypy would otherwise analyse the call as a
# namedtuple definition and want literal fields.
_namedtuple: Callable[..., type] = collections.namedtuple

# What a body may not define: namedtuple's own machinery.
_RESERVED = frozenset(
    {"__new__", "__init__", "__slots__", "__getnewargs__", "_fields", "_field_defaults",
     "_make", "_replace", "_asdict", "_source"}
)  # fmt: skip
# Class-statement bookkeeping that namedtuple sets itself or that is not an attribute.
_SKIPPED = frozenset({"__module__", "__qualname__", "__annotations__", "__classcell__"})


class _NamedTupleMaker(type):
    """Builds each ``class X(NamedTuple)`` as a `collections.namedtuple`."""

    def __new__(mcls, name: str, bases: tuple[type, ...], namespace: dict[str, object]) -> type:
        if not bases:  # `_NamedTupleBase` itself
            return super().__new__(mcls, name, bases, namespace)
        if bases != (_NamedTupleBase,):
            raise TypeError(f"{name}: a NamedTuple can have no other base class")
        annotations = namespace.get("__annotations__", {})
        assert isinstance(annotations, dict)
        fields = list(annotations)
        defaults = []
        for field in fields:
            if field in namespace:
                defaults.append(namespace[field])
            elif defaults:
                raise TypeError(f"{name}: field {field!r} without a default follows one with one")
        module = str(namespace.get("__module__", __name__))
        cls: type = _namedtuple(name, fields, defaults=defaults, module=module)
        cls.__qualname__ = str(namespace.get("__qualname__", name))
        cls.__annotations__ = dict(annotations)
        for key, value in namespace.items():
            if key in _RESERVED:
                raise AttributeError(f"{name}: cannot overwrite NamedTuple attribute {key}")
            if key in _SKIPPED or key in fields:
                continue
            setattr(cls, key, value)
            set_name = getattr(type(value), "__set_name__", None)
            if set_name is not None:
                set_name(value, cls, key)
        cell = namespace.get("__classcell__")
        if cell is not None:  # a method uses super() or __class__
            cell.cell_contents = cls  # type: ignore[attr-defined]
        return cls


class _NamedTupleBase(metaclass=_NamedTupleMaker):
    """What ``class X(NamedTuple)`` derives from at run time (see the module)."""

    __slots__ = ()


if TYPE_CHECKING:
    from typing import NamedTuple as NamedTuple
else:
    NamedTuple = _NamedTupleBase
