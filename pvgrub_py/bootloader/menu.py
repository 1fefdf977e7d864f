"""The interactive boot menu, on the terminal libxl gives the bootloader.

libxl runs the bootloader on a pty that it relays to the guest console
(Xen tools/libs/light/libxl_bootloader.c, ``bootloader_gotptys``:
``login_tty`` on the pty, ``TERM=vt100``), and pygrub
shows a curses menu there unless ``-q`` or ``--entry`` is given.  This is
that menu, with pygrub's behaviour where an admin would notice it:

* the entries, the highlighted one in reverse video, the default first;
* a countdown from the config's ``timeout`` ("Will boot selected entry in
  N seconds"); any key stops it; no timeout (or a negative one) waits for
  the user; ``timeout`` 0 boots the default without showing anything
  (GRUB's and pygrub's behaviour);
* Up/Down (and ``k``/``j``) move, Home/End jump, Enter boots;
* ``e`` edits the cmdline of this boot only: the line editor starts with
  the cmdline the entry would boot with; Enter boots with the edited line,
  Escape returns to the menu.  The edited cmdline is the one measured into
  PCR 5 and handed to libxl, so the measurement covers what is booted.

The header says whether the boot will be measured.  The menu runs before
the vTPM is opened (`pvgrub_py.bootloader.run`, step 2 before step 3), so
it can only say what the options promise: not measured without
``--vtpm``; measured with ``--require-vtpm`` or ``--vtpm-label`` (or no
boot at all); measured if the vTPM answers otherwise.

libxl appends the pty's output to ``/var/log/xen/bootloader.<domid>.log``
and points the admin there when the bootloader fails.  With
``TERM=vt100`` there is no alternate screen: after ``endwin`` the cursor
sits at the start of the bottom row, which may still show part of the
menu, and the last escape sequences have no newline after them.  So the
menu ends its line once curses is done, and any message that follows
(an error, a warning) starts a line of its own on the screen and in the
log.

Nothing here reads guest data; the menu shows the plan's lines, with
control characters replaced (titles come from the guest's config).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pvgrub_py.bootloader.options import BootloaderOptions
from pvgrub_py.bootloader.plan import BootPlan, MenuLine
from pvgrub_py.disk.errors import one_line
from pvgrub_py.errors import InputError

if TYPE_CHECKING:
    from pvgrub_py.bootloader.guest import Interact, Pick

ESC = 27
#: Longest cmdline the editor accepts (a Linux x86 COMMAND_LINE_SIZE is 2048;
#: Xen PV guests take up to 1024; leave room above both).
MAX_EDIT = 4096


def terminal_menu(
    opts: BootloaderOptions, warn: Callable[[str], object] | None = None
) -> Interact | None:
    """The menu callback, or None when there is no terminal to show it on.

    *warn* gets what the admin should know (default: printed now); the
    bootloader collects it and prints it only if the boot goes ahead.
    """
    if not (os.isatty(0) and os.isatty(1)):
        if opts.interactive_explicit:
            message = ("-i given but stdin/stdout is not a terminal: "
                       "booting the default entry without a menu")  # fmt: skip
            if warn is None:
                print(f"pvgrub-py: warning: {message}", file=sys.stderr)
            else:
                warn(message)
        return None

    title = menu_title(opts)

    def interact(plan: BootPlan) -> Pick:
        return run_menu(plan, title)

    return interact


def menu_title(opts: BootloaderOptions) -> str:
    """The header: what the options promise about measuring this boot."""
    if opts.vtpm is None:
        promise = "not measured: no vTPM given"
    elif opts.measurement_required:
        promise = "measured"  # or not booted (`open_vtpm` fails closed)
    else:
        promise = "measured if the vTPM answers"  # else booted unmeasured, with a warning
    return f"pvgrub-py: choose the guest kernel to boot ({promise})"


def run_menu(plan: BootPlan, title: str) -> Pick:
    """Show the menu under *title*; return (entry index, edited cmdline or None)."""
    if not plan.menu:
        raise InputError(plan.config, "the boot menu has no entries")
    if plan.timeout == 0:
        return plan.default_index, None
    import curses
    import locale

    with contextlib.suppress(locale.Error):
        locale.setlocale(locale.LC_ALL, "")  # wide characters in titles and in the editor
    os.environ.setdefault("ESCDELAY", "25")
    # The pty's own size (TIOCGWINSZ), not LINES/COLUMNS inherited from
    # whoever ran xl (libxl passes its environment through): ncurses prefers
    # those, and a stale 80x24 wraps every line on a smaller console.
    # (curses.use_env(False) would fall back to terminfo's size instead.)
    os.environ.pop("LINES", None)
    os.environ.pop("COLUMNS", None)
    result: list[Pick] = []

    def body(screen: Any) -> None:
        result.append(Menu(screen, plan, title).run())

    try:
        curses.wrapper(body)
    finally:
        _end_line()
    return result[0]


def _end_line() -> None:
    """After ``endwin``: end the line its escape sequences were left on.

    Whatever is printed next (the one-line error of a failed boot, a
    warning) then begins a line of its own, on the terminal and in libxl's
    bootloader log.  stdout is the terminal the menu was drawn on.
    """
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.write("\n")
        sys.stdout.flush()


def _safe(text: str, width: int) -> str:
    return one_line(text, limit=max(4, width))[:width]


def _put(screen: Any, row: int, col: int, text: str, attr: int = 0) -> None:
    """addstr that never fails: a terminal too small for a line just loses it."""
    import curses

    height, width = screen.getmaxyx()
    if not (0 <= row < height and 0 <= col < width):
        return
    with contextlib.suppress(curses.error):  # the bottom-right cell cannot be written
        screen.addstr(row, col, text[: max(0, width - col - 1)], attr)


class Menu:
    """The curses screen: entry list, help text, countdown, line editor."""

    def __init__(self, screen: Any, plan: BootPlan, title: str) -> None:
        self.screen = screen
        self.plan = plan
        self.title = title
        self.lines: tuple[MenuLine, ...] = plan.menu
        self.selected = min(max(plan.default_index, 0), len(plan.menu) - 1)
        self.top = 0

    # -- drawing ---------------------------------------------------------
    def _draw(self, countdown: int | None, status: str = "") -> None:
        import curses

        scr = self.screen
        scr.erase()
        height, width = scr.getmaxyx()
        width = max(width - 1, 10)
        _put(scr, 0, 1, _safe(self.title, width - 1))
        rows = max(1, height - 9)
        if self.selected < self.top:
            self.top = self.selected
        elif self.selected >= self.top + rows:
            self.top = self.selected - rows + 1
        for row, k in enumerate(range(self.top, min(len(self.lines), self.top + rows))):
            line = self.lines[k]
            mark = "" if line.bootable else " (not bootable)"
            text = _safe(f" {line.title}{mark}", width - 2).ljust(width - 2)
            attr = curses.A_REVERSE if k == self.selected else curses.A_NORMAL
            _put(scr, 2 + row, 1, text, attr)
        help_row = 3 + rows
        _put(scr, help_row, 1, _safe("Use the Up and Down keys to select the entry.", width - 1))
        helptext = "Press Enter to boot it, 'e' to edit its kernel command line for this boot."
        _put(scr, help_row + 1, 1, _safe(helptext, width - 1))
        if countdown is not None:
            shown = f"Will boot selected entry in {countdown} seconds"
            _put(scr, help_row + 3, 1, _safe(shown, width - 1))
        if status:
            _put(scr, help_row + 4, 1, _safe(status, width - 1))
        scr.refresh()

    # -- main loop -------------------------------------------------------
    def run(self) -> Pick:
        import curses

        with _quiet_cursor(curses):
            timeout = self.plan.timeout
            deadline = time.monotonic() + timeout if timeout is not None and timeout > 0 else None
            status = ""
            while True:
                countdown = None
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return self.selected, None
                    countdown = int(left + 0.999)
                self._draw(countdown, status)
                self.screen.timeout(200 if deadline is not None else -1)
                key = self._key()
                if key is None:
                    continue
                deadline = None  # any key stops the countdown, as in pygrub
                status = ""
                if key in (curses.KEY_UP, "k"):
                    self.selected = max(0, self.selected - 1)
                elif key in (curses.KEY_DOWN, "j"):
                    self.selected = min(len(self.lines) - 1, self.selected + 1)
                elif key in (curses.KEY_HOME,):
                    self.selected = 0
                elif key in (curses.KEY_END,):
                    self.selected = len(self.lines) - 1
                elif key in (curses.KEY_ENTER, "\n", "\r"):
                    if self.lines[self.selected].bootable:
                        return self.selected, None
                    status = "That entry loads no Linux kernel."
                elif key == "e":
                    if not self.lines[self.selected].bootable:
                        status = "That entry loads no Linux kernel."
                        continue
                    edited = LineEditor(self.screen, self.lines[self.selected].args).run()
                    if edited is not None:
                        return self.selected, edited

    def _key(self) -> int | str | None:
        """The next key: a str for characters, an int for special keys."""
        import curses

        try:
            key = self.screen.get_wch()
        except curses.error:
            return None  # the 200 ms tick of the countdown
        if isinstance(key, str) and len(key) == 1 and ord(key) == ESC:
            return None
        return key  # type: ignore[no-any-return]


class LineEditor:
    """A one-line editor for the cmdline (Emacs keys, as GRUB's editor)."""

    def __init__(self, screen: Any, text: str) -> None:
        self.screen = screen
        self.text = list(text[:MAX_EDIT])
        self.pos = len(self.text)

    def _draw(self) -> None:
        import curses

        scr = self.screen
        scr.erase()
        _, width = scr.getmaxyx()
        width = max(width - 2, 10)
        _put(scr, 0, 1, _safe("Edit the kernel command line of this boot:", width))
        _put(scr, 2, 1, _safe("Enter boots with it, Escape returns to the menu.", width))
        # Show a window of the line that keeps the cursor visible.
        start = max(0, self.pos - width + 2)
        shown = "".join(self.text[start : start + width - 1])
        _put(scr, 4, 1, "".join(c if c.isprintable() else "?" for c in shown))
        with contextlib.suppress(curses.error):
            scr.move(4, 1 + self.pos - start)
        scr.refresh()

    def run(self) -> str | None:
        import curses

        self.screen.timeout(-1)
        with _visible_cursor(curses):
            while True:
                self._draw()
                try:
                    key = self.screen.get_wch()
                except curses.error:
                    continue
                if isinstance(key, str):
                    code = ord(key) if len(key) == 1 else -1
                    if code == ESC:
                        return None
                    if key in ("\n", "\r"):
                        return "".join(self.text)
                    if code in (8, 127):
                        self._backspace()
                    elif code == 1:  # ^A
                        self.pos = 0
                    elif code == 5:  # ^E
                        self.pos = len(self.text)
                    elif code == 4:  # ^D
                        self._delete()
                    elif code == 11:  # ^K
                        del self.text[self.pos :]
                    elif code == 2:  # ^B
                        self.pos = max(0, self.pos - 1)
                    elif code == 6:  # ^F
                        self.pos = min(len(self.text), self.pos + 1)
                    elif key.isprintable() and len(self.text) < MAX_EDIT:
                        self.text.insert(self.pos, key)
                        self.pos += 1
                elif key == curses.KEY_ENTER:
                    return "".join(self.text)
                elif key == curses.KEY_LEFT:
                    self.pos = max(0, self.pos - 1)
                elif key == curses.KEY_RIGHT:
                    self.pos = min(len(self.text), self.pos + 1)
                elif key == curses.KEY_HOME:
                    self.pos = 0
                elif key == curses.KEY_END:
                    self.pos = len(self.text)
                elif key == curses.KEY_BACKSPACE:
                    self._backspace()
                elif key == curses.KEY_DC:
                    self._delete()

    def _backspace(self) -> None:
        if self.pos > 0:
            self.pos -= 1
            del self.text[self.pos]

    def _delete(self) -> None:
        if self.pos < len(self.text):
            del self.text[self.pos]


class _CursorMode:
    def __init__(self, curses: Any, visibility: int) -> None:
        self.curses = curses
        self.visibility = visibility
        self.old: int | None = None

    def __enter__(self) -> None:
        try:
            self.old = self.curses.curs_set(self.visibility)
        except self.curses.error:
            self.old = None

    def __exit__(self, *exc: object) -> None:
        if self.old is not None:
            with contextlib.suppress(self.curses.error):
                self.curses.curs_set(self.old)


def _quiet_cursor(curses: Any) -> _CursorMode:
    return _CursorMode(curses, 0)


def _visible_cursor(curses: Any) -> _CursorMode:
    return _CursorMode(curses, 1)
