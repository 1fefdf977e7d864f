"""An interpreter for the GRUB 2 script subset that distributions generate.

This is not a regex scraper: grub.cfg is executed the way GRUB's normal
mode executes it (GRUB manual, "Shell-like scripting", "menuentry",
"submenu", "default"), with variables, quoting, ``if``/``for``/``while``,
functions, ``source``, ``load_env``, ``search`` and ``blscfg``, against
read-only guest volumes (`files.VolumeSet`).

Execution model, as in GRUB:

1. The config runs top to bottom.  ``menuentry``/``submenu`` only *record*
   an item: its arguments (title first), options and body.  A syntax error
   skips to the next line; an unknown command is a warning and sets ``$?``
   to non-zero.
2. After the script, each entry body is run the way GRUB runs it when the
   entry is booted: in the final environment of its menu, with ``$1`` =
   title and ``$2``... = the extra ``menuentry`` arguments (GRUB prefixes
   the body with ``setparams``).  Bodies run on a copy-on-write overlay so
   one entry cannot leak variables into the next.  ``linux``/``initrd``
   there fill in the `BootEntry`.
3. A ``submenu`` body runs in a new variable context holding only exported
   variables (``grub_env_context_open``) and records the submenu's items,
   which are then evaluated the same way.  Entries are listed flattened,
   with index paths ``"1>2"`` and title paths ``"Sub>Entry"``.
4. ``configfile`` (and ``normal FILE``) opens a new context and a new menu;
   if that menu has entries it replaces the current one, as GRUB shows it
   and boots from it.

Where GRUB and petitboot read a config differently, `dialect.Dialect`
picks one (GRUB by default); `Dialect.PETITBOOT` runs a ``menuentry`` body
where it stands (step 2 happens during step 1) and stops nested ``source``
at petitboot's depth instead of failing.

Everything is bounded by `limits.Limits`; passing a bound raises a
one-line `BootConfigError` with the file and line.  Nothing here writes to
a volume: ``save_env`` changes the block in memory only (a later
``load_env`` sees it) and the menu lists it in ``env_writes``.
"""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import Mapping, Sequence

from pvgrub_py.bootcfg.dialect import PETITBOOT_SOURCE_LEVELS, Dialect
from pvgrub_py.bootcfg.entry import BootEntry, BootMenu, SubmenuInfo
from pvgrub_py.bootcfg.errors import BootConfigError
from pvgrub_py.bootcfg.files import (
    VolumeSet,
    decode_config,
    normalize_path,
    read_capped,
    split_device_path,
)
from pvgrub_py.bootcfg.grub2_env import Env, EnvTooLarge
from pvgrub_py.bootcfg.grub2_expand import ArgvTooLarge, expand_words
from pvgrub_py.bootcfg.grub2_parser import (
    ForCommand,
    FunctionDef,
    IfCommand,
    NestingTooDeep,
    NotCommand,
    Script,
    SimpleCommand,
    Stmt,
    WhileCommand,
    Word,
    parse_script,
)
from pvgrub_py.bootcfg.grub2_state import (
    EntryState,
    Frame,
    FunctionReturn,
    LoopBreak,
    MenuItem,
    MenuReplaced,
    ScriptExit,
)
from pvgrub_py.bootcfg.grub_strtoul import strtosl
from pvgrub_py.bootcfg.limits import DEFAULT_LIMITS, Limits
from pvgrub_py.bootcfg.select import default_index

TYPE_CHECKING = False

if TYPE_CHECKING:
    from pvgrub_py.bootcfg.files import ConfigFiles

    # A contract for the type checker only: nothing imports it at run time.
    from pvgrub_py.bootcfg.grub2_shell import CommandTable

#: Features GRUB's normal mode announces (``grub-core/normal/main.c``);
#: grub-mkconfig output tests them to pick modern syntax.
FEATURES = (
    "feature_chainloader_bpb",
    "feature_ntldr",
    "feature_platform_search_hint",
    "feature_default_font_path",
    "feature_all_video_module",
    "feature_menuentry_id",
    "feature_menuentry_options",
    "feature_200_final",
    "feature_nativedisk_cmd",
    "feature_timeout_style",
)


class Interpreter:
    """Runs one grub.cfg against a `VolumeSet`; see the module docstring.

    *commands* is the command table (`grub2_commands.COMMANDS`); each
    handler sees this interpreter as a `grub2_shell.Shell`.
    """

    def __init__(
        self,
        volumes: VolumeSet,
        commands: CommandTable,
        *,
        limits: Limits = DEFAULT_LIMITS,
        dialect: Dialect = Dialect.GRUB,
    ) -> None:
        self.commands = commands
        self.volumes = volumes
        self.limits = limits
        self.dialect = dialect
        self.env = Env(limits)
        self.frames: list[Frame] = [Frame([])]
        self.functions: dict[str, tuple[tuple[Stmt, ...], str]] = {}
        self.menu: list[MenuItem] | None = []
        self.entry: EntryState | None = None
        self.status = 0
        self.file = ""
        self.line = 0
        self.warnings: list[str] = []
        self.dropped_warnings = 0
        self._statements = 0
        self._nesting = 0
        self._source_depth = 0
        self._call_depth = 0
        self._loop_depth = 0
        self._file_loads = 0
        self._bytes_lexed = 0
        self._items = 0
        self._probes = 0
        self._cache: dict[tuple[int, str], Script] = {}
        self._entries: list[BootEntry] = []
        #: grubenv blocks ``save_env`` changed, by volume and path, and their names.
        self.env_writes: dict[str, bytes] = {}
        self.env_shown: dict[str, str] = {}
        self._submenus: list[SubmenuInfo] = []

    # -- diagnostics and bounds ------------------------------------------------

    def warn(self, message: str, *, line: int | None = None) -> None:
        text = f"{self.file}:{self.line if line is None else line}: {message}"
        if self.entry is not None and len(self.entry.warnings) < self.limits.max_warnings:
            self.entry.warnings.append(_clip(text))
        self.record(text)

    def record(self, text: str) -> None:
        """Keep a menu-level warning, up to `Limits.max_warnings`."""
        if len(self.warnings) < self.limits.max_warnings:
            self.warnings.append(_clip(text))
        else:
            self.dropped_warnings += 1

    def fail(self, problem: str) -> BootConfigError:
        return BootConfigError(self.file, problem, self.line)

    def count_item(self) -> None:
        self._items += 1
        if self._items > self.limits.max_entries:
            raise self.fail(f"more than {self.limits.max_entries} menu entries")

    def count_probe(self) -> None:
        self._probes += 1
        if self._probes > self.limits.max_file_probes:
            raise self.fail(f"more than {self.limits.max_file_probes} file lookups")

    # -- files -------------------------------------------------------------------

    def volume_for(self, device: str | None) -> ConfigFiles | None:
        """The volume for an explicit device, or ``$root`` when *device* is None."""
        if device is None or device == "":
            device = self.env.get("root")
        return self.volumes.resolve(device)

    def display_path(self, volume: ConfigFiles, path: str) -> str:
        if volume is self.volumes.primary:
            return normalize_path(path)
        return f"({volume.identity.name}){normalize_path(path)}"

    def load_script(self, spec: str) -> tuple[Script, str] | None:
        """Read and parse a GRUB file name (``(dev)/path`` or ``/path`` on $root)."""
        split = split_device_path(spec)
        if split is None:
            self.warn(f"invalid file name {spec!r}")
            return None
        device, path = split
        volume = self.volume_for(device)
        if volume is None:
            self.warn(f"no volume for {spec!r}")
            return None
        self._file_loads += 1
        if self._file_loads > self.limits.max_file_loads:
            raise self.fail(f"more than {self.limits.max_file_loads} script files loaded")
        shown = self.display_path(volume, path)
        script = self._parse_file(volume, path, shown, what="script")
        if script is None:
            self.warn(f"file {spec!r} not found")
            return None
        return script, shown

    def _parse_file(
        self, volume: ConfigFiles, path: str, shown: str, *, what: str
    ) -> Script | None:
        """Read, decode and parse a file once per run (cached); None if missing.

        Syntax errors are warnings, as GRUB skips to the next line; the
        bytes count towards `Limits.max_total_bytes`.
        """
        key = (id(volume), normalize_path(path))
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        data = read_capped(volume, path, max_bytes=self.limits.max_file_bytes, what=what)
        if data is None:
            return None
        self._bytes_lexed += len(data)
        if self._bytes_lexed > self.limits.max_total_bytes:
            raise self.fail(f"more than {self.limits.max_total_bytes} bytes of scripts")
        text = decode_config(data).replace("\r", "")
        try:
            script = parse_script(text, max_nesting=self.limits.max_nesting)
        except NestingTooDeep as exc:
            raise BootConfigError(shown, str(exc), exc.line) from None
        for line, message in script.errors:
            self.record(f"{shown}:{line}: {message}")
        self._cache[key] = script
        return script

    def run_file(self, script: Script, shown: str) -> None:
        """Execute a parsed file in the current context (``source`` semantics)."""
        self._source_depth += 1
        if self.dialect is Dialect.PETITBOOT:
            # petitboot skips the file past its depth and keeps what it has.
            if self._source_depth > 1 + PETITBOOT_SOURCE_LEVELS:
                self._source_depth -= 1
                self.warn(f"{shown} nested deeper than {PETITBOOT_SOURCE_LEVELS} levels; not read")
                self.status = 1
                return
        elif self._source_depth > self.limits.max_source_depth:
            raise self.fail(f"files nested deeper than {self.limits.max_source_depth} levels")
        saved = self.file, self.line
        self.file = shown
        try:
            self.exec_block(script.stmts)
        finally:
            self.file, self.line = saved
            self._source_depth -= 1

    # -- execution -----------------------------------------------------------------

    def exec_block(self, stmts: Sequence[Stmt]) -> None:
        self._nesting += 1
        if self._nesting > self.limits.max_nesting:
            raise self.fail(f"execution nested deeper than {self.limits.max_nesting} levels")
        try:
            for stmt in stmts:
                self.exec_stmt(stmt)
        finally:
            self._nesting -= 1

    def exec_stmt(self, stmt: Stmt) -> None:
        self._statements += 1
        self.line = stmt.line
        if self._statements > self.limits.max_statements:
            raise self.fail(f"more than {self.limits.max_statements} statements executed")
        try:
            if isinstance(stmt, SimpleCommand):
                self.exec_simple(stmt)
            elif isinstance(stmt, IfCommand):
                self.exec_if(stmt)
            elif isinstance(stmt, ForCommand):
                self.exec_for(stmt)
            elif isinstance(stmt, WhileCommand):
                self.exec_while(stmt)
            elif isinstance(stmt, FunctionDef):
                self.functions[stmt.name] = (stmt.body, self.file)
                self.status = 0
            else:
                self.exec_not(stmt)
        except (EnvTooLarge, ArgvTooLarge) as exc:
            raise BootConfigError(self.file, str(exc), stmt.line) from None

    def expand(self, words: Sequence[Word]) -> list[str]:
        return expand_words(
            words, self.env.get, self.frames[-1].args, self.status, self.limits.max_argv_bytes
        )

    def exec_simple(self, stmt: SimpleCommand) -> None:
        argv = self.expand(stmt.words)
        if not argv:
            self.status = 0
            return
        name = argv[0]
        handler = self.commands.get(name)
        if handler is not None:
            self.status = handler(self, argv, stmt)
            return
        if stmt.block is not None:
            self.warn(f"block after {name[:40]!r} ignored")
        if name in self.functions:
            self.status = self.call_function(name, argv[1:])
            return
        ignored = IGNORED_COMMANDS.get(name)
        if ignored is not None:
            self.status = ignored
            return
        if "=" in name:
            var, value = name.split("=", 1)
            if var:
                self.env.set(var, value)
                self.status = 0
            else:
                self.warn("assignment to an empty name ignored")
                self.status = 1
            return
        self.warn(f"unknown command {name[:60]!r} ignored")
        self.status = 1

    def exec_if(self, stmt: IfCommand) -> None:
        for cond, body in stmt.branches:
            self.exec_block(cond)
            if self.status == 0:
                self.exec_block(body)
                return
        if stmt.orelse is not None:
            self.exec_block(stmt.orelse)
        else:
            self.status = 0

    def exec_for(self, stmt: ForCommand) -> None:
        values = self.expand(stmt.words)
        self.status = 0
        self._loop_depth += 1
        try:
            for value in values:
                self.env.set(stmt.var, value)
                if not self._loop_body(stmt.body):
                    break
        finally:
            self._loop_depth -= 1

    def exec_while(self, stmt: WhileCommand) -> None:
        self._loop_depth += 1
        try:
            while True:
                self.exec_block(stmt.cond)
                ok = self.status == 0
                if ok == stmt.until:
                    break
                if not self._loop_body(stmt.body):
                    break
        finally:
            self._loop_depth -= 1
        self.status = 0

    def _loop_body(self, body: Sequence[Stmt]) -> bool:
        """Run one iteration; False when a ``break`` ends this loop.

        ``break N``/``continue N`` with N > 1 leave this loop and go on to
        the enclosing one with N - 1.
        """
        try:
            self.exec_block(body)
        except LoopBreak as brk:
            if brk.levels > 1:
                raise LoopBreak(brk.levels - 1, brk.is_continue) from None
            return brk.is_continue
        return True

    def exec_not(self, stmt: NotCommand) -> None:
        self.exec_stmt(stmt.cmd)
        self.status = 0 if self.status != 0 else 1

    def call_function(self, name: str, args: list[str]) -> int:
        body, defined_in = self.functions[name]
        self._call_depth += 1
        if self._call_depth > self.limits.max_call_depth:
            raise self.fail(f"function calls nested deeper than {self.limits.max_call_depth}")
        self.frames.append(Frame(list(args), in_function=True))
        saved = self.file, self.line, self._loop_depth
        self.file = defined_in
        self._loop_depth = 0
        try:
            self.exec_block(body)
        except FunctionReturn as ret:
            self.status = ret.status
        finally:
            self.frames.pop()
            self.file, self.line, self._loop_depth = saved
            self._call_depth -= 1
        return self.status

    # -- what a command may do (grub2_shell.Shell) ---------------------------------

    @property
    def frame(self) -> Frame:
        return self.frames[-1]

    @property
    def menu_open(self) -> bool:
        return self.menu is not None

    @property
    def in_function(self) -> bool:
        return self.frames[-1].in_function

    @property
    def in_loop(self) -> bool:
        return self._loop_depth > 0

    def source(self, spec: str) -> int:
        loaded = self.load_script(spec)
        if loaded is None:
            return 1
        self.run_file(*loaded)
        return self.status

    def configfile(self, spec: str) -> int:
        loaded = self.load_script(spec)
        if loaded is None:
            return 1
        saved_env, saved_menu = self.env, self.menu
        self.env = self.new_context(self.env)
        self.menu = []
        try:
            with contextlib.suppress(ScriptExit):
                self.run_file(*loaded)
            items, env = self.menu, self.env
        finally:
            self.env, self.menu = saved_env, saved_menu
        if items:
            raise MenuReplaced(items, env)
        return 0

    def add_item(self, item: MenuItem) -> None:
        if self.menu is None:
            raise self.fail("menu item recorded inside a menu entry body")
        self.count_item()
        self.menu.append(item)
        if not item.submenu and self.dialect is Dialect.PETITBOOT:
            self.evaluate_in_place(item)

    def env_block(self, key: str) -> bytes | None:
        return self.env_writes.get(key)

    def save_env_block(self, key: str, shown: str, data: bytes) -> None:
        self.env_writes[key] = data
        self.env_shown[key] = shown

    # -- whole config -----------------------------------------------------------------

    def setup_env(self, config_path: str, presets: Mapping[str, str]) -> None:
        """The variables GRUB's normal mode sets before reading grub.cfg."""
        primary = self.volumes.primary.identity.name
        directory = posixpath.dirname(normalize_path(config_path))
        if directory == "/":
            directory = ""
        env = self.env
        env.set("root", primary, export=True)
        env.set("prefix", f"({primary}){directory}", export=True)
        env.set("config_directory", f"({primary}){directory}", export=True)
        env.set("config_file", f"({primary}){normalize_path(config_path)}", export=True)
        env.set("grub_platform", "xen", export=True)
        env.set("grub_cpu", "x86_64", export=True)
        for feature in FEATURES:
            env.set(feature, "y", export=True)
        for name, value in presets.items():
            env.set(name, value, export=True)

    def run(self, config_path: str, presets: Mapping[str, str] | None = None) -> BootMenu:
        """Execute the config at *config_path* on the primary volume; build the menu."""
        try:
            return self._run(config_path, presets or {})
        except (EnvTooLarge, ArgvTooLarge) as exc:
            # Writes outside a statement (presets, $chosen for a huge title).
            raise BootConfigError(self.file, str(exc), self.line) from None

    def _run(self, config_path: str, presets: Mapping[str, str]) -> BootMenu:
        volume = self.volumes.primary
        shown = normalize_path(config_path)
        self.file = shown
        self.setup_env(config_path, presets)
        script = self._parse_file(volume, config_path, shown, what="config")
        if script is None:
            raise BootConfigError(shown, "config file not found")
        items: list[MenuItem]
        env = self.env
        try:
            self.run_file(script, shown)
            items = self.menu if self.menu is not None else []
        except MenuReplaced as replaced:
            items, env = replaced.items, replaced.env
        except ScriptExit:
            items = self.menu if self.menu is not None else []
        self.env = env
        self.evaluate_menu(items, env, "", "", 0)
        spec = env.get("default")
        timeout_text = env.get("timeout")
        timeout = None
        if timeout_text is not None and timeout_text.strip():
            timeout = strtosl(timeout_text)
        entries = tuple(self._entries)
        submenus = tuple(self._submenus)
        warnings = list(self.warnings)
        if self.dropped_warnings:
            warnings.append(f"... and {self.dropped_warnings} more warnings")
        return BootMenu(
            entries=entries,
            source=shown,
            format="grub2",
            default=spec,
            default_index=default_index(entries, submenus, spec),
            timeout=timeout,
            fallback=env.get("fallback"),
            submenus=submenus,
            env=env.as_dict(),
            warnings=tuple(warnings),
            env_writes=tuple((self.env_shown[k], v) for k, v in self.env_writes.items()),
        )

    # -- menu evaluation ------------------------------------------------------------

    def new_context(self, env: Env) -> Env:
        """`Env.new_context`, charging each copied variable to the statement budget."""
        ctx = env.new_context()
        self._statements += ctx.count()
        if self._statements > self.limits.max_statements:
            raise self.fail(f"more than {self.limits.max_statements} statements executed")
        return ctx

    def run_body(
        self,
        item: MenuItem,
        env: Env,
        entry: EntryState | None,
        params: Sequence[str] | None = None,
    ) -> tuple[list[MenuItem], Env]:
        """Run an entry or submenu body as GRUB does when it is chosen.

        Returns the items a submenu body recorded and the environment they
        are booted in (a ``configfile`` in the body replaces both).  The
        positional parameters are the ``menuentry`` arguments unless
        *params* says otherwise.
        """
        saved = (self.env, self.menu, self.entry, self.frames, self.file, self.line)
        saved_loops = self._loop_depth
        self.env = env
        self.menu = [] if item.submenu else None
        self.entry = entry
        self.frames = [Frame(list(item.args if params is None else params))]
        self.file = item.file
        self.line = item.line
        self._loop_depth = 0
        try:
            try:
                self.exec_block(item.body)
            except ScriptExit:
                pass
            except FunctionReturn:
                self.warn("return outside a function")
            except LoopBreak:
                pass
            except MenuReplaced as replaced:
                if item.submenu:
                    self.env = replaced.env
                    self.menu = replaced.items
                elif entry is not None:
                    entry.loader = "configfile"
                    entry.kernel = None
            return (self.menu or []), self.env
        finally:
            (self.env, self.menu, self.entry, self.frames, self.file, self.line) = saved
            self._loop_depth = saved_loops

    def evaluate_in_place(self, item: MenuItem) -> None:
        """`Dialect.PETITBOOT`: run an entry body now, in the current
        variables and positional parameters; its ``set`` stays visible."""
        state = EntryState(root=self.env.get("root"))
        self.run_body(item, self.env, state, self.frames[-1].args)
        item.evaluated = state

    def _set_chosen(self, env: Env, value: str) -> None:
        """GRUB sets ``$chosen`` before running a body; skip absurdly long ids."""
        if len(value) <= self.limits.max_value_bytes // 4:
            env.set("chosen", value, export=True)

    def evaluate_menu(
        self, items: list[MenuItem], env: Env, idx_prefix: str, title_prefix: str, depth: int
    ) -> None:
        for i, item in enumerate(items):
            title = item.args[0]
            index_path = f"{idx_prefix}>{i}" if idx_prefix else str(i)
            title_path = f"{title_prefix}>{title}" if idx_prefix else title
            self.file, self.line = item.file, item.line
            if item.submenu:
                if depth + 1 > self.limits.max_submenu_depth:
                    raise self.fail(
                        f"submenus nested deeper than {self.limits.max_submenu_depth} levels"
                    )
                self._submenus.append(SubmenuInfo(title, item.id, index_path, title_path))
                ctx = self.new_context(env)
                self._set_chosen(ctx, item.id or title)
                sub_items, final_env = self.run_body(item, ctx, None)
                self.evaluate_menu(sub_items, final_env, index_path, title_path, depth + 1)
                continue
            state = item.evaluated
            if state is None:
                overlay = env.overlay()
                self._set_chosen(overlay, item.id or title)
                state = EntryState(root=overlay.get("root"))
                self.run_body(item, overlay, state)
            self._entries.append(
                BootEntry(
                    title=title,
                    kernel=state.kernel,
                    initrds=tuple(state.initrds),
                    args=state.args,
                    id=item.id,
                    root=state.root,
                    index_path=index_path,
                    title_path=title_path,
                    source=item.file,
                    line=item.line,
                    classes=item.classes,
                    loader=state.loader,
                    warnings=tuple(state.warnings[: self.limits.max_warnings]),
                )
            )


def _clip(text: str, limit: int = 300) -> str:
    """Warnings quote config text, which may be a megabyte long."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: GRUB commands that do not affect which kernel is booted, with the status
#: they leave in ``$?``.  Functions of the same name defined by the config
#: take precedence (grub-mkconfig defines ``load_video``, ``savedefault``).
IGNORED_COMMANDS: dict[str, int] = {
    **dict.fromkeys(
        (
            "insmod",
            "rmmod",
            "lsmod",
            "echo",
            "terminal_input",
            "terminal_output",
            "terminal",
            "terminfo",
            "font",
            "loadfont",
            "background_image",
            "background_color",
            "clear",
            "serial",
            "play",
            "sleep",
            "list_env",
            "password",
            "password_pbkdf2",
            "lsfonts",
            "videoinfo",
            "boot",
            "true",
            "fwsetup",
            "gfxmode",
            "nativedisk",
            "cutmem",
            "badram",
            "acpi",
            "gettext",
            "ls",
            "cat",
            "set_gfxpayload",
            "cpuid",
            "loopback",
            "tpm",
            "trust",
            "distrust",
            "verify_detached",
            "devicetree",
        ),
        0,
    ),
    **dict.fromkeys(("false", "hwmatch", "smbios", "keystatus"), 1),
}
