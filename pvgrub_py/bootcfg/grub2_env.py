"""GRUB 2's variable environment: contexts, exports and write hooks.

GRUB keeps variables in *contexts* (``grub-core/kern/env.c``,
``grub_env_context_open``): entering a submenu or a ``configfile`` opens a
new context that starts with a copy of the *exported* variables only, which
is why grub-mkconfig writes ``export menuentry_id_option``.  Functions and
menu entry bodies do not open a context; they see and change the same
variables (GRUB has no local variables, only positional parameters).

``root`` has a write hook that drops surrounding parentheses, so
``set root='(hd0,1)'`` stores ``hd0,1`` (``grub_env_write_root`` in
``grub-core/kern/main.c``).

To evaluate every menu entry body against the same final environment
without one body's ``set`` leaking into the next, `Env.overlay` gives a
copy-on-write layer.  Size bounds are checked on every write.
"""

from __future__ import annotations

from collections.abc import Iterator

from pvgrub_py.bootcfg.limits import Limits


class EnvTooLarge(Exception):
    """A variable or the whole environment passed its bound."""


class Env:
    __slots__ = ("_bytes", "_count", "_limits", "_parent", "_vars")

    def __init__(self, limits: Limits, parent: Env | None = None) -> None:
        self._limits = limits
        self._parent = parent
        #: name -> (value, exported); None marks a variable unset in an overlay.
        self._vars: dict[str, tuple[str, bool] | None] = {}
        self._bytes: int = 0 if parent is None else parent._bytes
        self._count: int = 0 if parent is None else parent._count

    def _lookup(self, name: str) -> tuple[str, bool] | None:
        env: Env | None = self
        while env is not None:
            if name in env._vars:
                return env._vars[name]
            env = env._parent
        return None

    def get(self, name: str) -> str | None:
        found = self._lookup(name)
        return None if found is None else found[0]

    def is_exported(self, name: str) -> bool:
        found = self._lookup(name)
        return found is not None and found[1]

    def set(self, name: str, value: str, *, export: bool | None = None) -> None:
        if name == "root" and len(value) >= 2 and value[0] == "(" and value[-1] == ")":
            value = value[1:-1]
        limits = self._limits
        if len(value) > limits.max_value_bytes:
            raise EnvTooLarge(
                f"variable {name[:40]!r} would hold {len(value)} bytes "
                f"(cap {limits.max_value_bytes})"
            )
        old = self._lookup(name)
        if old is None:
            if self._count >= limits.max_variables:
                raise EnvTooLarge(f"more than {limits.max_variables} variables")
            delta = len(name) + len(value)
        else:
            delta = len(value) - len(old[0])
        if self._bytes + delta > limits.max_env_bytes:
            raise EnvTooLarge(f"variables exceed {limits.max_env_bytes} bytes in total")
        exported = old[1] if (export is None and old is not None) else bool(export)
        self._vars[name] = (value, exported)
        self._bytes += delta
        if old is None:
            self._count += 1

    def unset(self, name: str) -> None:
        old = self._lookup(name)
        if old is None:
            return
        self._bytes -= len(name) + len(old[0])
        self._count -= 1
        if self._parent is None:
            del self._vars[name]
        else:
            self._vars[name] = None

    def export(self, name: str) -> None:
        old = self._lookup(name)
        if old is None:
            self.set(name, "", export=True)
        else:
            self._vars[name] = (old[0], True)

    def items(self) -> Iterator[tuple[str, str, bool]]:
        """(name, value, exported) for every visible variable."""
        seen: set[str] = set()
        env: Env | None = self
        while env is not None:
            for name, val in env._vars.items():
                if name in seen:
                    continue
                seen.add(name)
                if val is not None:
                    yield name, val[0], val[1]
            env = env._parent

    def count(self) -> int:
        return self._count

    def as_dict(self) -> dict[str, str]:
        return {name: value for name, value, _ in self.items()}

    def overlay(self) -> Env:
        """A copy-on-write child: writes stay in the child."""
        return Env(self._limits, self)

    def new_context(self) -> Env:
        """A fresh context holding copies of the exported variables only."""
        ctx = Env(self._limits)
        for name, value, exported in self.items():
            if exported:
                ctx.set(name, value, export=True)
        return ctx
