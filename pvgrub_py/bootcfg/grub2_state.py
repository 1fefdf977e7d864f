"""What the GRUB 2 interpreter and its commands share: the records and the
control-flow signals.

`MenuItem` is a recorded ``menuentry``/``submenu`` (or BLS entry),
`EntryState` what a menu entry body has loaded, `Frame` the positional
parameters of a function call or entry body.  The exceptions carry GRUB's
non-local control flow (``exit``, ``return``, ``break``/``continue``,
``configfile``) from a command up to the statement that ends it.  This
module imports nothing of the interpreter or the commands, so both can
import it.
"""

from __future__ import annotations

from pvgrub_py.bootcfg.entry import FileRef
from pvgrub_py.bootcfg.grub2_env import Env
from pvgrub_py.bootcfg.grub2_parser import Stmt
from pvgrub_py.record import field, record


class ScriptExit(Exception):
    """``exit`` (or ``reboot``/``halt``): stop the current script or body."""


class FunctionReturn(Exception):
    """``return N`` inside a function body."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class LoopBreak(Exception):
    """``break N`` / ``continue N``: leave (or restart) the N-th enclosing loop."""

    def __init__(self, levels: int, is_continue: bool) -> None:
        super().__init__(levels)
        self.levels = levels
        self.is_continue = is_continue


@record
class EntryState:
    """What a menu entry body loaded so far."""

    kernel: FileRef | None = None
    args: str = ""
    initrds: list[FileRef] = field(default_factory=list)
    loader: str | None = None
    root: str | None = None
    warnings: list[str] = field(default_factory=list)


@record
class MenuItem:
    """A recorded ``menuentry``/``submenu`` (or BLS entry) awaiting evaluation."""

    args: tuple[str, ...]
    body: tuple[Stmt, ...]
    submenu: bool
    file: str
    line: int
    id: str | None = None
    classes: tuple[str, ...] = ()
    #: `Dialect.PETITBOOT`: what the body loaded where the entry was defined.
    evaluated: EntryState | None = None


class MenuReplaced(Exception):
    """``configfile`` produced a menu that replaces the current one."""

    def __init__(self, items: list[MenuItem], env: Env) -> None:
        super().__init__("configfile")
        self.items = items
        self.env = env


@record
class Frame:
    """Positional parameters of a function call or entry body."""

    args: list[str]
    in_function: bool = False
