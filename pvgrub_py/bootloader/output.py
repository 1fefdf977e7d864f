"""The result records libxl (and older toolstacks) read from a bootloader.

``simple0`` is the only format libxl parses (``parse_bootloader_result``):
NUL-terminated ``kernel <path>``, ``ramdisk <path>``, ``args <cmdline>``
items, then one more NUL.  ``simple`` is the same with newlines; ``sxp`` is
pygrub's S-expression for xend-era tools.

A value that contains the record separator would let a guest-controlled
cmdline inject a second record (say a ``kernel`` of its choice): that is the
XSA-198 class of bug, so such a value is refused outright.
"""

from __future__ import annotations

from pvgrub_py.errors import InputError

TYPE_CHECKING = False

if TYPE_CHECKING:
    from pvgrub_py.bootloader.options import OutputFormat


def _records(kernel: str, ramdisk: str | None, args: str | None) -> list[tuple[str, str]]:
    records = [("kernel", kernel)]
    if ramdisk:
        records.append(("ramdisk", ramdisk))
    if args:
        records.append(("args", args))
    return records


def format_simple(kernel: str, ramdisk: str | None, args: str | None, sep: str) -> str:
    out = []
    for key, value in _records(kernel, ramdisk, args):
        if sep in value:
            shown = "NUL" if sep == "\0" else "newline"
            raise InputError(key, f"the chosen {key} contains a {shown}, the record separator")
        out.append(f"{key} {value}{sep}")
    return "".join(out) + sep


def _sxp_quote(value: str) -> str:
    """A single-quoted atom as pygrub wrote it (Python repr of a str)."""
    return repr(value)


def format_sxp(kernel: str, ramdisk: str | None, args: str | None) -> str:
    out = f"linux (kernel {_sxp_quote(kernel)})"
    if ramdisk:
        out += f"(ramdisk {_sxp_quote(ramdisk)})"
    if args:
        out += f"(args {_sxp_quote(args)})"
    return out


def format_result(fmt: OutputFormat, kernel: str, ramdisk: str | None, args: str | None) -> bytes:
    if fmt == "simple0":
        text = format_simple(kernel, ramdisk, args, "\0")
    elif fmt == "simple":
        text = format_simple(kernel, ramdisk, args, "\n")
    else:
        text = format_sxp(kernel, ramdisk, args)
    return text.encode("utf-8", "surrogateescape")
