"""One size formatter (`inputs.format_size`) for every message and report that prints a size."""

from __future__ import annotations

import pytest

from pvgrub_py.inputs import format_size
from pvgrub_py.measure.plan import Measurement
from pvgrub_py.measure.report import describe


@pytest.mark.parametrize(
    ("n", "text"),
    [(17, "17 bytes"), (1536, "1.5 KiB"), (1 << 20, "1 MiB"), (2048 << 30, "2048 GiB")],
)
def test_sizes_as_an_admin_reads_them(n: int, text: str) -> None:
    assert format_size(n) == text


def test_keep_zero_prints_whole_numbers_with_their_decimal() -> None:
    assert format_size(3 << 20, keep_zero=True) == "3.0 MiB"
    assert format_size(1536, keep_zero=True) == "1.5 KiB"
    assert format_size(17, keep_zero=True) == "17 bytes"


def test_the_prediction_report_uses_it() -> None:
    m = Measurement(4, "kernel", "/boot/vmlinuz", {}, length=2 << 20)
    assert describe(m) == "kernel /boot/vmlinuz (2 MiB measured)"
