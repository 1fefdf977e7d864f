"""The GRUB 2 commands whose effect the interpreter models.

Each handler takes the interpreter as a `grub2_shell.Shell`, the expanded
argv (command name first) and the statement, and returns the exit status
GRUB would leave in ``$?``.  `COMMANDS` is the table, built once and
read-only; `grub2.parse_grub2` hands it to the interpreter.
Sources: the GRUB manual's command reference ("set", "unset", "export",
"source", "configfile", "load_env", "search", "probe", "test", "linux",
"initrd", "menuentry", "submenu", "return", "break", "continue", "shift",
"setparams") and, where the manual is vague, the command's source in
``grub-core/commands`` / ``grub-core/loader``.
"""

from __future__ import annotations

from types import MappingProxyType

from pvgrub_py.bootcfg.dialect import Dialect
from pvgrub_py.bootcfg.entry import FileRef
from pvgrub_py.bootcfg.files import normalize_path, read_capped, split_device_path
from pvgrub_py.bootcfg.grub2_expand import grub_cmdline
from pvgrub_py.bootcfg.grub2_parser import SimpleCommand, parse_script
from pvgrub_py.bootcfg.grub2_state import FunctionReturn, LoopBreak, MenuItem, ScriptExit
from pvgrub_py.bootcfg.grub2_testcmd import Probe, evaluate
from pvgrub_py.bootcfg.grub_strtoul import strtoul
from pvgrub_py.bootcfg.grubenv import STANDARD_SIZE, EnvBlock, parse_envblk, set_envblk_var
from pvgrub_py.named_tuple import NamedTuple
from pvgrub_py.record import field, record

TYPE_CHECKING = False

if TYPE_CHECKING:
    # A contract for the type checker only: nothing imports it at run time.
    from pvgrub_py.bootcfg.grub2_shell import CommandTable, Handler, Shell

# -- option parsing (grub_arg_parse, grub-core/lib/arg.c) -------------------------


@record
class Options:
    values: dict[str, list[str]] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    args: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def last(self, name: str) -> str | None:
        vals = self.values.get(name)
        return vals[-1] if vals else None


def parse_options(
    argv: list[str],
    *,
    with_value: dict[str, str],
    flags: dict[str, str],
    optional_value: frozenset[str] = frozenset(),
    accept_dash: bool = False,
) -> Options | str:
    """Parse GRUB extcmd options; returns `Options` or an error message.

    *with_value* and *flags* map every accepted spelling (``--id``, ``-s``)
    to a canonical name.  A long option takes ``--opt=value`` or the next
    argument when that does not start with ``-``; an option whose value is
    optional may go without.  With *accept_dash* unknown options are plain
    arguments (``menuentry``).  A value that is missing is recorded in
    ``missing`` instead of failing: RHEL 8 writes ``--users $grub_users``
    with an unset variable, and GRUB builds that boot anyway.
    """
    opts = Options()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            opts.args.extend(argv[i + 1 :])
            break
        if not arg.startswith("-") or len(arg) == 1:
            opts.args.append(arg)
            i += 1
            continue
        name, eq, inline = arg.partition("=")
        if not arg.startswith("--"):
            name, eq, inline = arg, "", ""
            cluster = [f"-{ch}" for ch in arg[1:]]
            if len(cluster) > 1 and all(c in flags for c in cluster[:-1]):
                # "-nu" is "-n -u"; only the last one may take a value.
                opts.flags.update(flags[c] for c in cluster[:-1])
                name = cluster[-1]
        if name in flags:
            if eq:
                return f"option {name} takes no value"
            opts.flags.add(flags[name])
        elif name in with_value:
            canon = with_value[name]
            if eq:
                opts.values.setdefault(canon, []).append(inline)
            elif i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                opts.values.setdefault(canon, []).append(argv[i + 1])
                i += 1
            elif canon in optional_value:
                opts.values.setdefault(canon, [])
            else:
                opts.missing.append(name)
        elif accept_dash:
            opts.args.append(arg)
        else:
            return f"unknown argument {arg[:40]!r}"
        i += 1
    return opts


# -- variables -------------------------------------------------------------------


def cmd_set(it: Shell, argv: list[str], stmt: SimpleCommand) -> int:
    # Only the first argument counts (grub_core_cmd_set): `set a=b c` sets a=b.
    # petitboot joins the words: a="b c".
    if len(argv) < 2:
        return 0
    assignment = argv[1]
    if it.dialect is Dialect.PETITBOOT:
        assignment = " ".join(argv[1:])
    name, eq, value = assignment.partition("=")
    if not eq:
        it.warn(f"set: {assignment[:40]!r} is not an assignment")
        return 1
    if not name:
        it.warn("set: empty variable name")
        return 1
    it.env.set(name, value)
    return 0


def cmd_unset(it: Shell, argv: list[str], stmt: SimpleCommand) -> int:
    for name in argv[1:]:
        it.env.unset(name)
    return 0


def cmd_export(it: Shell, argv: list[str], stmt: SimpleCommand) -> int:
    for name in argv[1:]:
        it.env.export(name)
    return 0


# -- control flow ------------------------------------------------------------------


def cmd_return(it: Shell, argv: list[str], stmt: SimpleCommand) -> int:
    if not it.in_function:
        it.warn("return: not in a function body")
        return 1
    status = strtoul(argv[1]) if len(argv) > 1 else it.status
    raise FunctionReturn(status & 0xFF)


def _loop_control(it: Shell, argv: list[str], is_continue: bool) -> int:
    levels = strtoul(argv[1]) if len(argv) > 1 else 1
    if not it.in_loop or levels < 1:
        return 0
    raise LoopBreak(levels, is_continue)


def cmd_break(it: Shell, argv: list[str], stmt: SimpleCommand) -> int:
    return _loop_control(it, argv, False)


def cmd_continue(it: Shell, argv: list[str], stmt: SimpleCommand) -> int:
    return _loop_control(it, argv, True)


def cmd_shift(it: Shell, argv: list[str], stmt: SimpleCommand) -> int:
    count = strtoul(argv[1]) if len(argv) > 1 else 1
    frame = it.frame
    if count > len(frame.args):
        return 1
    del frame.args[:count]
    return 0


def cmd_setparams(it: Shell, argv: list[str], stmt: SimpleCommand) -> int:
    it.frame.args = list(argv[1:])
    return 0


def cmd_exit(it: Shell, argv: list[str], stmt: SimpleCommand) -> int:
    raise ScriptExit()


# -- files and tests ------------------------------------------------------------


def probe_path(it: Shell, spec: str) -> Probe:
    """What GRUB's test.c ``get_fileinfo`` (and ``-s``'s file open) see."""
    it.count_probe()
    missing = Probe(False, False, None)
    if not spec and it.dialect is Dialect.PETITBOOT:
        return missing  # petitboot stat()s "", which does not exist
    if spec.startswith("("):
        close = spec.find(")")
        if close < 0:
            return missing
        device: str | None = spec[1:close]
        path = spec[close + 1 :]
    else:
        device, path = None, spec
    volume = it.volume_for(device)
    if volume is None:
        return missing
    if not path.rstrip("/"):
        return Probe(True, True, 1 if it.dialect is Dialect.PETITBOOT else None)
    info = volume.stat(normalize_path(path))
    if info is None:
        return missing
    if info.is_dir and it.dialect is Dialect.PETITBOOT:
        # petitboot stat()s: a directory's size is its (non-zero) block size.
        return Probe(True, True, 1)
    return Probe(True, info.is_dir, None if info.is_dir else info.size)


def cmd_test(it: Shell, argv: list[str], stmt: SimpleCommand) -> int:
    return 0 if evaluate(argv[1:], lambda p: probe_path(it, p)) else 1


def cmd_source(it: Shell, argv: list[str], stmt: SimpleCommand) -> int:
    if len(argv) != 2:
        it.warn(f"{argv[0]}: one file name expected")
        return 1
    return it.source(argv[1])


def cmd_configfile(it: Shell, argv: list[str], stmt: SimpleCommand) -> int:
    if len(argv) != 2:
        it.warn(f"{argv[0]}: one file name expected")
        return 1
    if it.entry is not None:
        it.warn(f"{argv[0]} in a menu entry body is not followed")
        it.entry.loader = "configfile"
        it.entry.kernel = None
        raise ScriptExit()
    return it.configfile(argv[1])


class _EnvFile(NamedTuple):
    """A grubenv block as ``load_env``/``save_env`` see it."""

    opts: Options
    #: The file name as given (for messages) and as shown in `BootMenu.env_writes`.
    name: str
    shown: str
    #: Which block this is: the volume and the path on it.
    key: str
    data: bytes
    block: EnvBlock


def _env_file(it: Shell, argv: list[str], flags: dict[str, str]) -> _EnvFile | None:
    """The block ``load_env``/``save_env`` (*argv*) work on, or None (warned).

    The default is ``$prefix/grubenv``; petitboot also reads a relative
    ``-f`` name under ``$prefix``.  A block ``save_env`` changed earlier in
    this run is seen as changed.
    """
    command = argv[0]
    opts = parse_options(argv[1:], with_value={"--file": "file", "-f": "file"}, flags=flags)
    if isinstance(opts, str):
        it.warn(f"{command}: {opts}")
        return None
    name = opts.last("file")
    if name is None or (it.dialect is Dialect.PETITBOOT and not name.startswith(("/", "("))):
        prefix = it.env.get("prefix")
        if prefix is None:
            it.warn(f"{command}: $prefix is not set")
            return None
        name = f"{prefix}/{name or 'grubenv'}"
    split = split_device_path(name)
    volume = it.volume_for(split[0]) if split is not None else None
    if split is None or volume is None:
        it.warn(f"{command}: cannot open {name!r}")
        return None
    it.count_probe()
    key = f"{id(volume)}:{normalize_path(split[1])}"
    data = it.env_block(key)
    if data is None:
        data = read_capped(volume, split[1], max_bytes=it.limits.max_file_bytes, what="grubenv")
    if data is None:
        it.warn(f"{command}: {name!r} not found")
        return None
    block = parse_envblk(data)
    if block is None:
        it.warn(f"{command}: {name!r} is not a GRUB environment block")
        return None
    return _EnvFile(opts, name, it.display_path(volume, split[1]), key, data, block)


def cmd_load_env(it: Shell, argv: list[str], stmt: SimpleCommand) -> int:
    env_file = _env_file(it, argv, {"--skip-sig": "skip-sig", "-s": "skip-sig"})
    if env_file is None:
        return 1
    block = env_file.block
    if not block.standard_size:
        it.warn(f"load_env: {env_file.name!r} is {block.size} bytes, not {STANDARD_SIZE}")
    wanted = set(env_file.opts.args)
    for name, value in block.variables.items():
        if not wanted or name in wanted:
            it.env.set(name, value)
    return 0


def cmd_save_env(it: Shell, argv: list[str], stmt: SimpleCommand) -> int:
    """Compute the block GRUB would write; keep it in memory, never on the disk.

    Inside a menu entry body (grub-mkconfig's ``savedefault``) it is not
    modelled: GRUB runs only the booted entry's body, we run them all.
    """
    if it.entry is not None:
        return 0
    env_file = _env_file(it, argv, {})
    if env_file is None:
        return 1
    data = env_file.data
    for name in env_file.opts.args:
        updated = set_envblk_var(data, name, it.env.get(name) or "")
        if updated is None:
            it.warn(f"save_env: no room for {name[:40]!r} in {env_file.name!r}; not saved")
            return 1
        data = updated
    it.save_env_block(env_file.key, env_file.shown, data)
    return 0


# -- devices: search and probe ------------------------------------------------------

_SEARCH_VALUE = {
    "--set": "set",
    "-s": "set",
    "--hint": "hint",
    "-h": "hint",
    "--hint-bios": "hint",
    "--hint-efi": "hint",
    "--hint-baremetal": "hint",
    "--hint-ieee1275": "hint",
    "--hint-arc": "hint",
    "--hint-uboot": "hint",
    "--hint-coreboot": "hint",
}
_SEARCH_FLAGS = {
    "--file": "file",
    "-f": "file",
    "--label": "label",
    "-l": "label",
    "--fs-uuid": "fs-uuid",
    "-u": "fs-uuid",
    "--part-label": "part-label",
    "--part-uuid": "part-uuid",
    "--disk-uuid": "disk-uuid",
    "--no-floppy": "no-floppy",
    "-n": "no-floppy",
    "--efidisk-only": "efidisk-only",
    "--cryptodisk-only": "cryptodisk-only",
}


def _search(it: Shell, kind: str, key: str, var: str | None, hints: list[str]) -> int:
    candidates = [v for h in hints if (v := it.volumes.resolve(h)) is not None]
    candidates.extend(it.volumes)
    found = None
    for volume in candidates:
        it.count_probe()
        ident = volume.identity
        if kind == "fs-uuid":
            ok = ident.uuid is not None and ident.uuid.lower() == key.lower()
        elif kind == "label":
            ok = ident.label == key
        else:
            info = volume.stat(normalize_path(key))
            ok = info is not None and not info.is_dir
        if ok:
            found = volume
            break
    if found is None:
        if it.dialect is Dialect.PETITBOOT and kind == "fs-uuid" and var is not None:
            # petitboot keeps the UUID, which resolves once such a device appears.
            it.env.set(var, key)
            return 0
        # GRUB: "no such device", the variable keeps its value.
        it.warn(f"search: no volume with {kind} {key!r}")
        return 1
    if var is not None:
        it.env.set(var, found.identity.name)
    return 0


def cmd_search(it: Shell, argv: list[str], stmt: SimpleCommand) -> int:
    opts = parse_options(
        argv[1:],
        with_value=_SEARCH_VALUE,
        flags=_SEARCH_FLAGS,
        optional_value=frozenset({"set"}),
    )
    if isinstance(opts, str):
        it.warn(f"search: {opts}")
        return 1
    petitboot = it.dialect is Dialect.PETITBOOT
    if petitboot and opts.values.get("set") == [] and len(opts.args) == 2:
        # petitboot also reads `--set VAR KEY` (GRUB needs `--set=VAR`).
        opts.values["set"] = [opts.args.pop(0)]
    if len(opts.args) != 1:
        it.warn("search: one argument expected")
        return 1
    kinds = [k for k in ("label", "fs-uuid", "file") if k in opts.flags]
    if not kinds and petitboot:
        kinds = ["fs-uuid"]  # petitboot's default search type
    if not kinds:
        for unsupported in ("part-label", "part-uuid", "disk-uuid"):
            if unsupported in opts.flags:
                it.warn(f"search --{unsupported} is not supported")
                return 1
        it.warn("search: unspecified search type")
        return 1
    var: str | None = "root" if petitboot else None
    if "set" in opts.values:
        var = opts.last("set") or "root"
    return _search(it, kinds[0], opts.args[0], var, opts.values.get("hint", []))


def _search_shorthand(kind: str) -> Handler:
    def handler(it: Shell, argv: list[str], stmt: SimpleCommand) -> int:
        opts = parse_options(argv[1:], with_value=_SEARCH_VALUE, flags=_SEARCH_FLAGS)
        if isinstance(opts, str) or not opts.args:
            it.warn(f"{argv[0]}: bad arguments")
            return 1
        var = opts.args[1] if len(opts.args) > 1 else None
        hints = opts.values.get("hint", []) + opts.args[2:]
        return _search(it, kind, opts.args[0], var, hints)

    return handler


def cmd_probe(it: Shell, argv: list[str], stmt: SimpleCommand) -> int:
    opts = parse_options(
        argv[1:],
        with_value={"--set": "set", "-s": "set"},
        flags={
            "--fs-uuid": "uuid",
            "-u": "uuid",
            "--label": "label",
            "-l": "label",
            "--fs": "fs",
            "-f": "fs",
            "--driver": "driver",
            "-d": "driver",
            "--partmap": "partmap",
            "-p": "partmap",
        },
    )
    if isinstance(opts, str) or len(opts.args) != 1:
        it.warn("probe: bad arguments")
        return 1
    it.count_probe()
    volume = it.volumes.resolve(opts.args[0])
    if volume is None:
        it.warn(f"probe: no volume {opts.args[0]!r}")
        return 1
    ident = volume.identity
    value: str | None
    if "uuid" in opts.flags:
        value = ident.uuid
    elif "label" in opts.flags:
        value = ident.label
    elif "fs" in opts.flags:
        value = ident.fs_type
    else:
        it.warn("probe: only --fs-uuid, --label and --fs are modelled")
        return 1
    if value is None:
        return 1
    var = opts.last("set")
    if var:
        it.env.set(var, value)
    return 0


# -- menu entries ------------------------------------------------------------------

_MENU_VALUE = {
    "--class": "class",
    "--users": "users",
    "--hotkey": "hotkey",
    "--source": "source",
    "--id": "id",
}


def cmd_menuentry(it: Shell, argv: list[str], stmt: SimpleCommand) -> int:
    submenu = argv[0] == "submenu"
    opts = parse_options(
        argv[1:],
        with_value=_MENU_VALUE,
        flags={"--unrestricted": "unrestricted"},
        accept_dash=True,
    )
    if isinstance(opts, str):
        # `--unrestricted=yes`: GRUB's option parser fails the command.
        it.warn(f"{argv[0]}: {opts}; not added")
        return 1
    for name in opts.missing:
        it.warn(f"{argv[0]}: {name} has no value; ignored")
    if not opts.args:
        it.warn(f"{argv[0]} is missing a title; not added")
        return 1
    body = stmt.block
    source = opts.last("source")
    if body is not None and source is not None:
        it.warn(f"{argv[0]}: both a block and --source; not added")
        return 1
    if body is None:
        if source is None:
            it.warn(f"{argv[0]} has no body; not added")
            return 1
        parsed = parse_script(source, max_nesting=it.limits.max_nesting)
        for line, message in parsed.errors:
            it.warn(f"--source: {message}", line=it.line + line - 1)
        body = parsed.stmts
    if not it.menu_open:
        it.warn(f"{argv[0]} inside a menu entry body ignored")
        return 1
    item = MenuItem(
        args=tuple(opts.args),
        body=body,
        submenu=submenu,
        file=it.file,
        line=stmt.line,
        id=opts.last("id"),
        classes=tuple(opts.values.get("class", [])),
    )
    it.add_item(item)
    return 0


def cmd_blscfg(it: Shell, argv: list[str], stmt: SimpleCommand) -> int:
    if len(argv) > 1:
        it.warn(f"{argv[0]} {argv[1][:40]!r}: filtering is not modelled, all entries added")
    if not it.menu_open:
        it.warn(f"{argv[0]} inside a menu entry body ignored")
        return 1
    volume = it.volume_for(None)
    if volume is None:
        it.warn(f"{argv[0]}: $root names no volume")
        return 1
    it.count_probe()
    # Imported by the configs that use it (~1.5 ms a boot otherwise).
    import pvgrub_py.bootcfg.bls as bls

    _directory, entries = bls.load_entries(
        volume, it.env.get("blsdir"), limits=it.limits, warn=it.warn
    )
    petitboot = it.dialect is Dialect.PETITBOOT
    for entry in entries:
        script = bls.entry_script(entry, it.env.get, split_initrd=petitboot)
        shown = it.display_path(volume, entry.path)
        if script is None:
            it.warn(f"{shown}: no 'linux' key; skipped (as GRUB)")
            continue
        parsed = parse_script(script, max_nesting=it.limits.max_nesting)
        for _line, message in parsed.errors:
            it.warn(f"{shown}: {message}")
        title = entry.title if entry.title is not None else (entry.linux or "")
        if petitboot and entry.title is not None:
            title = bls.expand_options(title, it.env.get).rstrip()
        item = MenuItem(
            args=(title, *entry.get_all("grub_arg")),
            body=parsed.stmts,
            submenu=False,
            file=shown,
            line=0,
            id=entry.filename,
            classes=tuple(entry.get_all("grub_class")),
        )
        it.add_item(item)
    return 0


# -- loaders ---------------------------------------------------------------------


def file_ref(it: Shell, spec: str) -> FileRef | None:
    """A kernel/initrd name as a `FileRef` on its device (``$root`` by default)."""
    split = split_device_path(spec)
    if split is None:
        it.warn(f"invalid file name {spec[:80]!r}")
        return None
    device, path = split
    if not device:
        device = it.env.get("root")
    if not path.startswith("/"):
        it.warn(f"relative path {path[:80]!r} taken from the volume root")
        path = "/" + path
    return FileRef(path, device)


def cmd_linux(it: Shell, argv: list[str], stmt: SimpleCommand) -> int:
    entry = it.entry
    if entry is None:
        it.warn(f"{argv[0]} outside a menu entry ignored")
        return 0
    if len(argv) < 2:
        it.warn(f"{argv[0]}: filename expected")
        return 1
    ref = file_ref(it, argv[1])
    entry.kernel = None
    entry.initrds = []
    if ref is None:
        return 1
    entry.kernel = ref
    entry.args = grub_cmdline(argv[2:])
    entry.loader = "linux"
    entry.root = it.env.get("root")
    return 0


def cmd_initrd(it: Shell, argv: list[str], stmt: SimpleCommand) -> int:
    entry = it.entry
    if entry is None:
        it.warn(f"{argv[0]} outside a menu entry ignored")
        return 0
    if entry.kernel is None or entry.loader != "linux":
        it.warn(f"{argv[0]}: you need to load the kernel first")
        return 1
    refs: list[FileRef] = []
    for arg in argv[1:]:
        if arg.startswith("--"):
            continue
        name = arg
        if name.startswith("newc:"):
            _, _, name = name[5:].partition(":")
        ref = file_ref(it, name)
        if ref is None:
            entry.initrds = []
            return 1
        refs.append(ref)
    if not refs:
        it.warn(f"{argv[0]}: filename expected")
        return 1
    entry.initrds = refs
    return 0


def _other_loader(it: Shell, argv: list[str], stmt: SimpleCommand) -> int:
    entry = it.entry
    if entry is None:
        it.warn(f"{argv[0]} outside a menu entry ignored")
        return 0
    if argv[0] in ("module", "module2", "xen_module") and entry.loader not in (None, "linux"):
        return 0
    entry.loader = argv[0]
    entry.kernel = None
    entry.initrds = []
    entry.args = ""
    return 0


def _stop(it: Shell, argv: list[str], stmt: SimpleCommand) -> int:
    if it.entry is not None:
        it.entry.loader = argv[0]
        it.entry.kernel = None
    raise ScriptExit()


OTHER_LOADERS = (
    "chainloader",
    "multiboot",
    "multiboot2",
    "module",
    "module2",
    "xen_hypervisor",
    "xen_module",
    "kfreebsd",
    "knetbsd",
    "kopenbsd",
    "appleloader",
    "ntldr",
    "freedos",
    "truecrypt",
    "plan9",
    "xnu_kernel",
    "xnu_kernel64",
    "legacy_kernel",
    "efi",
)

#: The command table, read-only: one for every interpreter.
COMMANDS: CommandTable = MappingProxyType(
    {
        "set": cmd_set,
        "unset": cmd_unset,
        "export": cmd_export,
        "return": cmd_return,
        "break": cmd_break,
        "continue": cmd_continue,
        "shift": cmd_shift,
        "setparams": cmd_setparams,
        "exit": cmd_exit,
        "[": cmd_test,
        "test": cmd_test,
        "source": cmd_source,
        ".": cmd_source,
        "configfile": cmd_configfile,
        "normal": cmd_configfile,
        "load_env": cmd_load_env,
        "search": cmd_search,
        "search.fs_uuid": _search_shorthand("fs-uuid"),
        "search.fs_label": _search_shorthand("label"),
        "search.file": _search_shorthand("file"),
        "probe": cmd_probe,
        "menuentry": cmd_menuentry,
        "save_env": cmd_save_env,
        "submenu": cmd_menuentry,
        "blscfg": cmd_blscfg,
        "bls_import": cmd_blscfg,
        "linux": cmd_linux,
        "linux16": cmd_linux,
        "linuxefi": cmd_linux,
        "initrd": cmd_initrd,
        "initrd16": cmd_initrd,
        "initrdefi": cmd_initrd,
        "reboot": _stop,
        "halt": _stop,
        **dict.fromkeys(OTHER_LOADERS, _other_loader),
    }
)
