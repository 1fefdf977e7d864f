"""Human-readable text for measurements and PCR values.

PCR values are printed the way ``tpm2_pcrread`` prints them (bank, then
``  N : 0xHEX``), so scripts written for tpm2-tools read our output too.
"""

from __future__ import annotations

from collections.abc import Sequence

from pvgrub_py.inputs import format_size
from pvgrub_py.measure.plan import Measurement
from pvgrub_py.measure.predict import PcrValues


def describe(m: Measurement) -> str:
    if m.what == "cmdline":
        return f"cmdline {m.source!r}"
    if m.source is None:
        return f"{m.what} (none: hash of no bytes)"
    return f"{m.what} {m.source} ({format_size(m.length)} measured)"


def format_measurements(measurements: Sequence[Measurement]) -> str:
    lines = []
    for i, m in enumerate(measurements, 1):
        lines.append(f"{i}. PCR {m.pcr} <- {describe(m)}")
        for bank, digest in m.digests.items():
            lines.append(f"     {bank:<7} {digest.hex()}")
    return "\n".join(lines)


def format_pcrs(values: PcrValues) -> str:
    lines = []
    for bank, pcrs in values.items():
        lines.append(f"  {bank}:")
        for pcr, digest in sorted(pcrs.items()):
            lines.append(f"    {pcr:<2}: 0x{digest.hex().upper()}")
    return "\n".join(lines)
