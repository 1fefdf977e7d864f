"""What a GRUB 2 command may do to the interpreter that runs it.

A command handler (`grub2_commands`) gets a `Shell`, the expanded argv
(command name first) and the statement, and returns the status GRUB would
leave in ``$?``.  `Shell` is the whole surface a command sees: read and
set variables (`Shell.env`), the positional parameters (`Shell.frame`),
the volumes, warnings and budgets, running another file (``source``,
``configfile``), recording a menu item and the in-memory grubenv blocks.
Everything else in `grub2_interp.Interpreter` is its own business.

`CommandTable` is the immutable name -> handler mapping the interpreter is
built with (`grub2.parse_grub2` wires `grub2_commands.COMMANDS` in), so
neither the interpreter nor the commands import each other.

A contract for the type checker: the interpreter and the commands import
this module under ``TYPE_CHECKING`` only (a `typing.Protocol` costs a
millisecond to build, and the bootloader's start-up time is counted).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from pvgrub_py.bootcfg.dialect import Dialect
from pvgrub_py.bootcfg.files import ConfigFiles, VolumeSet
from pvgrub_py.bootcfg.grub2_env import Env
from pvgrub_py.bootcfg.grub2_parser import SimpleCommand
from pvgrub_py.bootcfg.grub2_state import EntryState, Frame, MenuItem
from pvgrub_py.bootcfg.limits import Limits


class Shell(Protocol):
    """The interpreter as a command sees it."""

    @property
    def dialect(self) -> Dialect: ...
    @property
    def limits(self) -> Limits: ...
    @property
    def volumes(self) -> VolumeSet: ...
    @property
    def env(self) -> Env:
        """The variables in force: `Env.get`, `Env.set`, `Env.unset`, `Env.export`."""

    @property
    def status(self) -> int:
        """``$?`` before this command."""

    @property
    def file(self) -> str:
        """The file of the statement running, as messages show it."""

    @property
    def line(self) -> int:
        """The line of the statement running."""

    @property
    def frame(self) -> Frame:
        """The positional parameters of the innermost function call or body."""

    @property
    def entry(self) -> EntryState | None:
        """The menu entry body being run, or None outside one."""

    @property
    def in_function(self) -> bool: ...
    @property
    def in_loop(self) -> bool: ...
    @property
    def menu_open(self) -> bool:
        """Whether a ``menuentry`` here records an item (not inside an entry body)."""

    def warn(self, message: str, *, line: int | None = None) -> None: ...
    def count_probe(self) -> None:
        """Charge one file or device lookup to `Limits.max_file_probes`."""

    def volume_for(self, device: str | None) -> ConfigFiles | None:
        """The volume for an explicit device, or ``$root`` when *device* is None."""

    def display_path(self, volume: ConfigFiles, path: str) -> str: ...
    def source(self, spec: str) -> int:
        """Run the file *spec* in the current context (``source``); its status."""

    def configfile(self, spec: str) -> int:
        """Run *spec* in a new context and menu (``configfile``): raises
        `grub2_state.MenuReplaced` when it recorded items, else its status."""

    def add_item(self, item: MenuItem) -> None:
        """Record a menu item (`menu_open` must be true); petitboot evaluates
        an entry at once."""

    def env_block(self, key: str) -> bytes | None:
        """A grubenv block ``save_env`` changed in this run, or None."""

    def save_env_block(self, key: str, shown: str, data: bytes) -> None:
        """Keep the block ``save_env`` computed (never written to the disk)."""


Handler = Callable[[Shell, list[str], SimpleCommand], int]
CommandTable = Mapping[str, Handler]
