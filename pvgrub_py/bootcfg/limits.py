"""Resource bounds shared by every boot-config parser.

A guest disk is untrusted input read in dom0, so each parser runs under
explicit budgets instead of trusting the config to terminate.  The numbers
are generous for real distribution configs (a large grub-mkconfig output
executes a few thousand statements and defines a few dozen entries) and
small enough that a hostile config fails in well under a second.

pygrub reads only the first 1 MiB of a config (``tools/pygrub/src/pygrub``);
Fedora's ``blscfg`` skips BLS snippets larger than 1 MiB.  We use the same
cap per file but, unlike pygrub, refuse an oversized file instead of
silently parsing a truncated prefix.
"""

from __future__ import annotations

from pvgrub_py.record import record

MIB = 1024 * 1024

#: Largest config file (grub.cfg, sourced script, grubenv, BLS snippet,
#: menu.lst, extlinux.conf) any parser reads.
MAX_CONFIG_BYTES = MIB


@record(frozen=True)
class Limits:
    """Budgets for one parse.  Exceeding any raises `BootConfigError`."""

    max_file_bytes: int = MAX_CONFIG_BYTES
    #: Statements executed in total: top level, bodies, functions, loops.
    max_statements: int = 100_000
    #: Nested `source`/`configfile`/`INCLUDE` files.
    max_source_depth: int = 8
    #: Files parsed in total (each `source` of the same file counts once
    #: for parsing, every call counts here).
    max_file_loads: int = 512
    #: Bytes of config text lexed in total (after caching).
    max_total_bytes: int = 8 * MIB
    #: Nested function calls.
    max_call_depth: int = 32
    #: Combined nesting of blocks, compound commands, calls and sourced
    #: files; keeps the interpreter far below Python's recursion limit.
    max_nesting: int = 120
    #: Nested `submenu` levels.
    max_submenu_depth: int = 8
    #: Menu items (entries and submenus) across all menus.
    max_entries: int = 1024
    #: Variables in one environment context.
    max_variables: int = 4096
    #: Bytes in a single variable value.
    max_value_bytes: int = 64 * 1024
    #: Bytes of all variable names and values in one context.
    max_env_bytes: int = MIB
    #: Bytes of one expanded command line (all arguments together).
    max_argv_bytes: int = MIB
    #: File lookups (``[ -f ]``, ``search``, ``probe``) in total.
    max_file_probes: int = 20_000
    #: Directory entries looked at in one `loader/entries` listing.
    max_dir_entries: int = 4096
    #: Warnings kept; later ones are only counted.
    max_warnings: int = 200


DEFAULT_LIMITS = Limits()


def small_int(text: str, *, max_digits: int = 18) -> int | None:
    """An ASCII decimal number of at most *max_digits* digits, else None.

    Config numbers (``default``, ``timeout``, ``--entry``) are parsed with
    this so a Unicode digit or a 5000-digit "number" is simply not a number
    instead of a ``ValueError`` (Python caps ``int()`` on long strings).
    """
    s = text.strip()
    neg = s.startswith("-")
    if neg:
        s = s[1:]
    if not s or len(s) > max_digits or not (s.isascii() and s.isdigit()):
        return None
    value = int(s)
    return -value if neg else value
