"""Dataclass-like records for the boot path, without importing `dataclasses`.

``@dataclass`` costs a boot twice: importing `dataclasses` imports
`inspect` (with ast, dis, tokenize: ~3-5 ms), and each class it makes
compiles five or six generated methods, one ``exec`` each (0.15-0.3 ms a
class; the parser child of a boot makes 34 of them: ~9 ms, measured with
bench/bench_bootloader.py's host interpreter).  `record` makes the same
methods from one ``exec`` per class and imports nothing.

It covers what the boot path uses, with `dataclasses`' semantics:

* fields are the class's annotations in order, after those of a record
  base class; a default (a value, or ``field(default=..)``,
  ``field(default_factory=..)``, ``field(repr=False)``) makes the field
  optional in ``__init__``; ``__post_init__`` runs after it;
  ``field(hash=False)`` leaves a field out of ``__hash__`` (still compared);
* ``__repr__`` (``Name(a=1, b='x')``), ``__eq__`` (same class, equal field
  tuples), ``__match_args__``;
* ``frozen=True``: assigning or deleting a field raises
  `FrozenInstanceError`, and ``__hash__`` hashes the field tuple; without
  it, ``__hash__`` is None (unless the class defines its own), as
  ``@dataclass`` does with ``eq=True``;
* ``slots=True``: the class is rebuilt with ``__slots__`` of its fields.

``ClassVar``/``InitVar`` annotations, ordering, ``kw_only``, and
`dataclasses.fields`/``replace``/``asdict`` are not supported: a class
needing them stays a dataclass.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any, TypeVar, dataclass_transform, overload

    T = TypeVar("T", bound=type)


class FrozenInstanceError(AttributeError):
    """Assignment to a field of a frozen record (as `dataclasses`' error)."""


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class Field:
    """A field's options (what ``dataclasses.field`` takes that we use)."""

    __slots__ = ("default", "default_factory", "hash", "repr")

    def __init__(self, default: Any, default_factory: Any, repr: bool, hash: bool = True) -> None:
        self.default = default
        self.default_factory = default_factory
        self.repr = repr
        self.hash = hash


def field(
    *,
    default: Any = MISSING,
    default_factory: Callable[[], Any] | Any = MISSING,
    repr: bool = True,
    hash: bool = True,
) -> Any:
    if default is not MISSING and default_factory is not MISSING:
        raise ValueError("cannot specify both default and default_factory")
    return Field(default, default_factory, repr, hash)


def _record(
    cls: type | None = None, /, *, frozen: bool = False, slots: bool = False
) -> type | Callable[[type], type]:
    """The class decorator; see the module docstring."""

    def wrap(c: type) -> type:
        return _process(c, frozen, slots)

    return wrap if cls is None else wrap(cls)


# The type checker sees `record` as a typed ``@dataclass_transform`` (checking
# each record's fields and ``__init__`` calls); at run time it is `_record`,
# so that a boot does not import `typing` (~1.7 ms) for these declarations.
if TYPE_CHECKING:

    @overload
    def record(cls: T, /) -> T: ...
    @overload
    def record(*, frozen: bool = False, slots: bool = False) -> Callable[[T], T]: ...

    @dataclass_transform(field_specifiers=(field,))
    def record(cls: Any = None, /, *, frozen: bool = False, slots: bool = False) -> Any:
        return _record(cls, frozen=frozen, slots=slots)

else:
    record = _record


def _process(cls: type, frozen: bool, slots: bool) -> type:
    fields: dict[str, Field] = {}
    for base in reversed(cls.__mro__[1:]):
        fields.update(getattr(base, "__record_fields__", {}))
    # Not inspect.get_annotations: importing inspect is what this module avoids.
    for name in cls.__dict__.get("__annotations__", {}):  # noqa: RUF063
        value = cls.__dict__.get(name, MISSING)
        f = value if isinstance(value, Field) else Field(value, MISSING, True)
        fields[name] = f
        if isinstance(value, Field):  # the class attribute is the default, or nothing
            if f.default is MISSING or slots:
                delattr(cls, name)
            else:
                setattr(cls, name, f.default)
        elif slots and value is not MISSING:
            delattr(cls, name)
    names = list(fields)
    seen_default = False
    for name, f in fields.items():
        if f.default is MISSING and f.default_factory is MISSING:
            if seen_default:
                raise TypeError(f"non-default argument {name!r} follows default argument")
        else:
            seen_default = True
    env: dict[str, Any] = {"__object_setattr": object.__setattr__, "__MISSING": MISSING}
    params = ["self"]
    body = []
    for name, f in fields.items():
        if f.default_factory is not MISSING:
            env[f"__factory_{name}"] = f.default_factory
            params.append(f"{name}=__MISSING")
            value = f"__factory_{name}() if {name} is __MISSING else {name}"
        else:
            if f.default is not MISSING:
                env[f"__default_{name}"] = f.default
                params.append(f"{name}=__default_{name}")
            else:
                params.append(name)
            value = name
        if frozen:
            body.append(f"  __object_setattr(self, {name!r}, {value})")
        else:
            body.append(f"  self.{name} = {value}")
    if "__post_init__" in {k for c in cls.__mro__ for k in c.__dict__}:
        body.append("  self.__post_init__()")
    src = "\n".join([f"def __init__({', '.join(params)}):", *(body or ["  pass"])])
    qual = cls.__qualname__
    get = attrgetter(*names) if len(names) > 1 else _one(names)
    shown = [(n, attrgetter(n)) for n, f in fields.items() if f.repr]
    methods: dict[str, Any] = {}

    def __repr__(self: Any) -> str:
        return f"{self.__class__.__qualname__}({', '.join(f'{n}={g(self)!r}' for n, g in shown)})"

    def __eq__(self: Any, other: object) -> bool:
        if other.__class__ is self.__class__:
            return bool(get(self) == get(other))
        return NotImplemented

    methods["__repr__"] = __repr__
    methods["__eq__"] = __eq__
    if frozen:
        frozen_names = frozenset(names)
        hashed = [n for n, f in fields.items() if f.hash]
        get_hashed = attrgetter(*hashed) if len(hashed) > 1 else _one(hashed)

        def __hash__(self: Any) -> int:
            return hash(get_hashed(self))

        def __setattr__(self: Any, name: str, value: Any) -> None:
            if type(self) is this or name in frozen_names:
                raise FrozenInstanceError(f"cannot assign to field {name!r}")
            super(this, self).__setattr__(name, value)  # type: ignore[arg-type]

        def __delattr__(self: Any, name: str) -> None:
            if type(self) is this or name in frozen_names:
                raise FrozenInstanceError(f"cannot delete field {name!r}")
            super(this, self).__delattr__(name)  # type: ignore[arg-type]

        methods.update(__hash__=__hash__, __setattr__=__setattr__, __delattr__=__delattr__)
    ns: dict[str, Any] = {}
    if slots:
        attrs = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
        attrs["__slots__"] = tuple(n for n in names if n not in _inherited_slots(cls))
        cls = type(cls)(cls.__name__, cls.__bases__, attrs)
    this = cls
    own = cls.__dict__
    if "__init__" not in own:
        ns["__init__"] = _compiled_on_first_call(cls, src, env, f"{qual}.__init__")
    ns.update(methods)
    explicit_hash = own.get("__hash__") is not None and "__eq__" not in own
    for name in ("__init__", "__repr__", "__eq__"):
        if name not in own:  # as @dataclass: a method the class defines stays
            ns[name].__qualname__ = f"{qual}.{name}"
            setattr(cls, name, ns[name])
    if frozen:
        for name in ("__setattr__", "__delattr__"):
            if name in own:
                raise TypeError(f"cannot overwrite attribute {name} in class {qual}")
            ns[name].__qualname__ = f"{qual}.{name}"
            setattr(cls, name, ns[name])
        if not explicit_hash:
            ns["__hash__"].__qualname__ = f"{qual}.__hash__"
            cls.__hash__ = ns["__hash__"]  # type: ignore[method-assign]
    elif not explicit_hash:
        cls.__hash__ = None  # type: ignore[assignment]
    cls.__match_args__ = tuple(names)  # type: ignore[attr-defined,misc]
    cls.__record_fields__ = fields  # type: ignore[attr-defined]
    return cls


def _compiled_on_first_call(
    cls: type, src: str, env: dict[str, Any], qualname: str
) -> Callable[..., None]:
    """*cls*'s ``__init__``, compiled from *src* when it first runs.

    Compiling costs ~45 us a class, and a boot imports many records it
    never makes (error details, other formats' records): the parser child's
    33 classes cost it ~1.5 ms before a byte of the disk was read.  The
    first call replaces itself on the class with the compiled function.
    """

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        ns: dict[str, Any] = {}
        exec(src, env, ns)  # noqa: S102 - our own generated __init__, no guest data
        real = ns["__init__"]
        real.__qualname__ = qualname
        type.__setattr__(cls, "__init__", real)
        real(self, *args, **kwargs)

    return __init__


def _one(names: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    """``attrgetter`` of one name returns the value, not a tuple: make it one."""
    if not names:
        return lambda obj: ()
    get = attrgetter(names[0])
    return lambda obj: (get(obj),)


def _inherited_slots(cls: type) -> set[str]:
    return {s for base in cls.__mro__[1:] for s in getattr(base, "__slots__", ())}
