"""xs_wire framing, path and permission rules: round trips and fuzzing."""

from __future__ import annotations

import contextlib
import errno
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvgrub_py.errors import PvgrubError
from pvgrub_py.xenstore import paths
from pvgrub_py.xenstore.errors import XSD_ERROR_NAMES, XSD_ERRORS, XsProtocolError, XsRequestError
from pvgrub_py.xenstore.perms import (
    ALL,
    READ,
    WRITE,
    Caller,
    Perm,
    access_for,
    format_perms,
    parse_perm,
    parse_perms,
)
from pvgrub_py.xenstore.wire import (
    HEADER_SIZE,
    XENSTORE_PAYLOAD_MAX,
    XS_TYPE_COUNT,
    Message,
    MessageReader,
    XsType,
    decode,
    encode,
    error_payload,
    join_strings,
    one_string,
    pack,
    strings,
    type_name,
)

u32 = st.integers(0, 0xFFFFFFFF)
payloads = st.binary(max_size=XENSTORE_PAYLOAD_MAX)
messages = st.builds(Message, u32, u32, u32, payloads)


# -- framing --------------------------------------------------------------------


def test_header_is_16_native_endian_bytes() -> None:
    data = encode(Message(XsType.READ, 7, 3, b"/a\x00"))
    assert data[:HEADER_SIZE] == struct.pack("=IIII", 2, 7, 3, 3)
    assert data[HEADER_SIZE:] == b"/a\x00"


def test_type_numbers_match_xs_wire_h() -> None:
    assert XS_TYPE_COUNT == 27
    assert [t.value for t in XsType if t.value < XS_TYPE_COUNT] == list(range(27))
    assert XsType.DIRECTORY_PART == 22 and XsType.SET_QUOTA == 26
    assert XsType.RESET_WATCHES == 21 and XsType.INVALID == 0xFFFF
    assert type_name(99) == "type#99"


@given(messages)
def test_message_round_trip(msg: Message) -> None:
    assert decode(encode(msg)) == msg


@given(st.lists(messages, max_size=8), st.data())
def test_reader_reassembles_any_chunking(msgs: list[Message], data: st.DataObject) -> None:
    stream = b"".join(encode(m) for m in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    reader = MessageReader()
    out: list[Message] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        reader.feed(stream[start:end])
        while (msg := reader.next_message()) is not None:
            out.append(msg)
    assert out == msgs
    assert reader.pending == 0


def test_payload_limit_is_4096_both_ways() -> None:
    assert len(pack(XsType.WRITE, 1, 0, b"x" * 4096)) == 16 + 4096
    with pytest.raises(XsRequestError) as e:
        pack(XsType.READ, 1, 0, b"x" * 4097)
    assert e.value.name == "E2BIG"
    reader = MessageReader()
    reader.feed(struct.pack("=IIII", XsType.READ, 1, 0, 4097))
    with pytest.raises(XsProtocolError):
        reader.next_message()


def test_decode_rejects_truncated_and_trailing() -> None:
    data = encode(Message(XsType.READ, 1, 0, b"/\x00"))
    with pytest.raises(XsProtocolError):
        decode(data[:-1])
    with pytest.raises(XsProtocolError):
        decode(data + b"x")


def test_message_fields_must_fit_uint32() -> None:
    with pytest.raises(ValueError):
        encode(Message(1 << 32, 0, 0, b""))
    with pytest.raises(ValueError):
        encode(Message(0, -1, 0, b""))


@settings(max_examples=300)
@given(st.binary(max_size=3 * (HEADER_SIZE + 64)))
def test_fuzzed_stream_raises_only_our_errors(data: bytes) -> None:
    reader = MessageReader()
    reader.feed(data)
    try:
        while reader.next_message() is not None:
            pass
    except XsProtocolError:
        pass
    with contextlib.suppress(XsProtocolError):
        decode(data)


@given(st.binary(max_size=200))
def test_fuzzed_fields_raise_only_our_errors(payload: bytes) -> None:
    for parse in (one_string, strings, parse_perm):
        with contextlib.suppress(PvgrubError):
            parse(payload)  # type: ignore[operator]
    with contextlib.suppress(PvgrubError):
        paths.canonicalize(payload, "/local/domain/3", allow_special=True, path_max=2048)


# -- fields ------------------------------------------------------------------------


def test_strings_ignore_unterminated_tail() -> None:
    assert strings(b"a\x00b\x00") == [b"a", b"b"]
    assert strings(b"a\x00tail") == [b"a"]
    assert strings(b"") == []
    assert join_strings([b"a", b""]) == b"a\x00\x00"


@pytest.mark.parametrize("payload", [b"", b"/a", b"/a\x00x", b"/a\x00\x00", b"\x00\x00"])
def test_one_string_wants_exactly_one_trailing_nul(payload: bytes) -> None:
    with pytest.raises(XsRequestError) as e:
        one_string(payload)
    assert e.value.name == "EINVAL"


def test_error_payloads_are_names() -> None:
    assert error_payload(errno.ENOENT) == b"ENOENT\x00"
    assert error_payload(errno.ERANGE) == b"EINVAL\x00"  # not in xsd_errors
    assert len(XSD_ERROR_NAMES) == 16 and set(XSD_ERRORS.values()) == set(XSD_ERROR_NAMES)
    assert XsRequestError(errno.ERANGE).name == "EINVAL"


# -- paths ---------------------------------------------------------------------------

segment = st.text("abcXYZ019-_", min_size=1, max_size=12)


@given(st.lists(segment, min_size=1, max_size=8))
def test_valid_absolute_paths_are_kept(parts: list[str]) -> None:
    path = "/" + "/".join(parts)
    assert paths.canonicalize(path.encode(), "/local/domain/0") == path


@given(st.lists(segment, min_size=1, max_size=8), st.integers(0, 65535))
def test_relative_paths_are_based_at_the_domain_home(parts: list[str], domid: int) -> None:
    rel = "/".join(parts)
    home = paths.domain_home(domid)
    assert paths.canonicalize(rel.encode(), home) == f"{home}/{rel}"
    assert paths.is_relative(rel.encode())


@pytest.mark.parametrize(
    "raw",
    [b"", b"/a/", b"//a", b"/a//b", b"/a b", b"/a\x00", b"/\xff", b"/a.b", b"@introduceDomain"],
)
def test_invalid_paths_are_einval(raw: bytes) -> None:
    with pytest.raises(XsRequestError) as e:
        paths.canonicalize(raw, "/local/domain/0")
    assert e.value.name == "EINVAL"


def test_root_and_specials() -> None:
    assert paths.canonicalize(b"/", "/local/domain/0") == "/"
    got = paths.canonicalize(b"@releaseDomain", "/local/domain/0", allow_special=True)
    assert got == "@releaseDomain"
    assert paths.parent("@releaseDomain") == "/"


def test_path_length_limits() -> None:
    assert paths.canonicalize(b"/" + b"a" * 3071, "/")
    with pytest.raises(XsRequestError):
        paths.canonicalize(b"/" + b"a" * 3072, "/")
    home = "/local/domain/12345"
    # An unprivileged domain gets 2048 bytes below its own home, whatever its domid.
    assert paths.canonicalize(b"a" * 2048, home, path_max=2048)
    with pytest.raises(XsRequestError):
        paths.canonicalize(b"a" * 2049, home, path_max=2048)
    with pytest.raises(XsRequestError):
        paths.canonicalize(b"/elsewhere/" + b"a" * 2040, home, path_max=2048)


def test_path_relations() -> None:
    assert paths.is_child("/a/b", "/a") and paths.is_child("/a", "/a")
    assert not paths.is_child("/ab", "/a") and paths.is_child("/x", "/")
    assert list(paths.self_and_ancestors("/a/b")) == ["/a/b", "/a", "/"]
    assert paths.depth_below("/a/b/c", "/a") == 2 and paths.depth_below("/a", "/") == 1
    assert paths.child("/", "a") == "/a" and paths.basename("/a/b") == "b"


# -- permissions ---------------------------------------------------------------------------


@given(st.sampled_from("nrwb"), st.integers(0, 65535))
def test_perm_round_trip(letter: str, domid: int) -> None:
    text = f"{letter}{domid}".encode()
    assert format_perms((parse_perm(text),)) == [text]


@pytest.mark.parametrize("bad", [b"", b"x1", b"r", b"r-1", b"r65536", b"r1 ", b"R1"])
def test_bad_perms_are_einval(bad: bytes) -> None:
    with pytest.raises(XsRequestError):
        parse_perm(bad)
    with pytest.raises(XsRequestError):
        parse_perms([])


def test_access_rule() -> None:
    perms = (Perm(5, READ), Perm(7, WRITE), Perm(8, 0))
    assert access_for(perms, Caller(0, True)) == ALL  # dom0
    assert access_for(perms, Caller(5, False)) == ALL  # the owner
    assert access_for(perms, Caller(7, False)) == WRITE  # an ACL entry
    assert access_for(perms, Caller(8, False)) == 0
    assert access_for(perms, Caller(9, False)) == READ  # the default
    assert access_for(perms, Caller(9, False, target=7)) == WRITE  # SET_TARGET
    assert access_for(perms, Caller(9, False, target=5)) == ALL
