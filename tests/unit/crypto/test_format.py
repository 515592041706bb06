"""The v1 header: byte layout as docs/format.md specifies it, one encoding, clear refusals."""

from __future__ import annotations

import io
import struct
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mdm.crypto import (
    FORMAT_VERSION,
    MAGIC,
    SCHEME_NONE,
    SCHEME_SHAMIR_GF256,
    Header,
    read_header,
)
from mdm.crypto.format import MAX_HEADER_LEN, MAX_PLAINTEXT_LEN, TLV_CRITICAL
from mdm.errors import UnsupportedFormat, UsageError

KEY_ID = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
GUID = uuid.UUID("ffeeddcc-bbaa-9988-7766-554433221100")


def sample(**changes: object) -> Header:
    fields: dict[str, object] = {
        "key_id": KEY_ID,
        "file_guid": GUID,
        "plaintext_len": 0x000A0B0C0D0E0F10,
        "share_scheme": SCHEME_SHAMIR_GF256,
        "k": 3,
        "n": 5,
        "keyserver_set_id": 0xA1B2C3D4,
    }
    fields.update(changes)
    return Header(**fields)  # type: ignore[arg-type]


def test_fixed_layout_matches_the_specification() -> None:
    raw = sample().pack()
    assert len(raw) == 64
    assert raw[0:8] == b"\x89MDMENC\n" == MAGIC
    assert raw[8] == FORMAT_VERSION == 1
    assert raw[9] == 1  # Cobblestone-256
    assert raw[10:12] == b"\x00\x00"  # flags
    assert raw[12:16] == (64).to_bytes(4, "big")  # header_len
    assert raw[16:32] == KEY_ID.bytes
    assert raw[32:48] == GUID.bytes
    assert raw[48:56] == bytes.fromhex("000a0b0c0d0e0f10")
    assert raw[56:60] == bytes([1, 3, 5, 0])  # scheme, k, n, reserved
    assert raw[60:64] == bytes.fromhex("a1b2c3d4")


def test_tlvs_follow_the_fixed_part_and_count_in_header_len() -> None:
    header = sample(tlvs=((0x0001, b"abc"), (0x0102, b"")))
    raw = header.pack()
    assert header.header_len == len(raw) == 64 + 4 + 3 + 4
    assert raw[12:16] == len(raw).to_bytes(4, "big")
    assert raw[64:] == b"\x00\x01\x00\x03abc\x01\x02\x00\x00"
    assert Header.unpack(raw) == header


@given(
    length=st.integers(0, MAX_PLAINTEXT_LEN),
    kn=st.one_of(
        st.just((SCHEME_NONE, 0, 0)),
        st.integers(2, 255).flatmap(
            lambda n: st.integers(2, n).map(lambda k: (SCHEME_SHAMIR_GF256, k, n))
        ),
    ),
    ks_set=st.integers(0, 2**32 - 1),
    ids=st.tuples(st.uuids(), st.uuids()),
    tlvs=st.lists(st.tuples(st.integers(1, TLV_CRITICAL - 1), st.binary(max_size=40)), max_size=4),
)
def test_pack_unpack_round_trip(
    length: int,
    kn: tuple[int, int, int],
    ks_set: int,
    ids: tuple[uuid.UUID, uuid.UUID],
    tlvs: list[tuple[int, bytes]],
) -> None:
    scheme, k, n = kn
    header = Header(ids[0], ids[1], length, scheme, k, n, ks_set, tuple(tlvs))
    raw = header.pack()
    assert Header.unpack(raw) == header
    assert read_header(io.BytesIO(raw + b"body")) == header


def test_new_draws_ids_and_picks_the_scheme() -> None:
    plain = Header.new(10)
    assert (plain.share_scheme, plain.k, plain.n) == (SCHEME_NONE, 0, 0)
    split = Header.new(10, k=3, n=5)
    assert (split.share_scheme, split.k, split.n) == (SCHEME_SHAMIR_GF256, 3, 5)
    assert plain.key_id != split.key_id
    assert plain.file_guid != split.file_guid


def test_read_header_stops_at_the_body() -> None:
    header = sample(tlvs=((7, b"xyz"),))
    src = io.BytesIO(header.pack() + b"BODY")
    assert read_header(src) == header
    assert src.read() == b"BODY"


def _patched(offset: int, value: bytes, raw: bytes | None = None) -> bytes:
    raw = raw if raw is not None else sample().pack()
    return raw[:offset] + value + raw[offset + len(value) :]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "too short"),
        (b"GIF89a....", "bad magic"),
        (_patched(0, b"\x89MDMENC\r"), "bad magic"),
        (MAGIC + b"\x01\x01", "too short"),
        (_patched(8, b"\x02"), "version 2 is not supported"),
        (_patched(8, b"\x00"), "version 0 is not supported"),
        (_patched(9, b"\x07"), "unknown algorithm id 7"),
        (_patched(10, b"\x80\x00"), "unknown flag bits 0x8000"),
        (_patched(12, (63).to_bytes(4, "big")), "header_len 63 outside"),
        (_patched(12, (MAX_HEADER_LEN + 1).to_bytes(4, "big")), "outside"),
        (_patched(12, (70).to_bytes(4, "big")), "is 70 bytes"),
        (_patched(56, b"\x02"), "unknown share scheme 2"),
        (_patched(57, b"\x06"), "k=6, n=5"),
        (_patched(57, b"\x01"), "k=1, n=5"),
        (_patched(56, b"\x00"), "share scheme none"),
        (_patched(59, b"\x01"), "reserved byte 59"),
        (_patched(48, (MAX_PLAINTEXT_LEN + 1).to_bytes(8, "big")), "out of range"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_unpack_refuses_with_a_message_naming_the_problem(raw: bytes, message: str) -> None:
    with pytest.raises(UnsupportedFormat, match=message):
        Header.unpack(raw)


def _with_tlv_area(area: bytes) -> bytes:
    raw = sample().pack() + area
    return raw[:12] + struct.pack(">I", len(raw)) + raw[16:]


@pytest.mark.parametrize(
    ("area", "message"),
    [
        (b"\x00\x01\x00", "truncated TLV"),
        (b"\x00\x01\x00\x05abc", "malformed TLV"),
        (b"\x00\x00\x00\x00", "malformed TLV"),
        (b"\x80\x01\x00\x00", "critical TLV type 0x8001"),
    ],
)
def test_tlv_area_must_parse_exactly(area: bytes, message: str) -> None:
    with pytest.raises(UnsupportedFormat, match=message):
        Header.unpack(_with_tlv_area(area))


def test_unknown_noncritical_tlvs_are_kept() -> None:
    header = Header.unpack(_with_tlv_area(b"\x12\x34\x00\x02hi"))
    assert header.tlvs == ((0x1234, b"hi"),)


def test_read_header_on_a_file_ending_inside_the_header() -> None:
    raw = sample(tlvs=((1, b"0123456789"),)).pack()
    with pytest.raises(UnsupportedFormat, match="ends inside the MDM header"):
        read_header(io.BytesIO(raw[:-1]))


@pytest.mark.parametrize(
    "changes",
    [
        {"k": 4, "n": 3},
        {"k": 0, "n": 5},
        {"share_scheme": SCHEME_NONE, "k": 2, "n": 3},
        {"plaintext_len": -1},
        {"keyserver_set_id": 2**32},
        {"tlvs": ((0, b""),)},
        {"tlvs": ((1, b"x" * MAX_HEADER_LEN),)},
        {"version": 2},
        {"flags": 1},
    ],
)
def test_building_an_invalid_header_is_a_usage_error(changes: dict[str, object]) -> None:
    with pytest.raises(UsageError, match="invalid MDM header"):
        sample(**changes)


def test_ids_must_be_uuids_and_tlvs_are_normalized() -> None:
    with pytest.raises(UsageError, match="uuid"):
        sample(key_id="00112233-4455-6677-8899-aabbccddeeff")
    header = sample(tlvs=[(1, bytearray(b"ab"))])
    assert header.tlvs == ((1, b"ab"),)
    assert hash(header) == hash(sample(tlvs=((1, b"ab"),)))
