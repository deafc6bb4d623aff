"""The lab's minimal DNS client: the query it sends and the answers it reads (bytes as a server sends them)."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

import pytest

from deploykit.lab.dnsquery import DnsQueryError, decode_answer, encode_query


def test_the_query_asks_one_a_record_without_recursion() -> None:
    assert encode_query("chirp.lab", 0x1234) == (
        b"\x12\x34\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00" b"\x05chirp\x03lab\x00" b"\x00\x01\x00\x01")


def response(ident: int, answers: list[tuple[str, int]], flags: int = 0x8400) -> bytes:
    question = b"\x05chirp\x03lab\x00\x00\x01\x00\x01"
    out = struct.pack("!HHHHHH", ident, flags, 1, len(answers), 0, 0) + question
    for address, ttl in answers:  # the name as a pointer to the question's (offset 12)
        out += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, ttl, 4) + IPv4Address(address).packed
    return out


def test_addresses_in_the_servers_order_and_the_smallest_ttl() -> None:
    got = decode_answer(response(7, [("10.77.2.100", 30), ("10.77.1.100", 20)]), 7)
    assert got.addresses == (IPv4Address("10.77.2.100"), IPv4Address("10.77.1.100"))
    assert (got.ttl, got.rcode, got.authoritative) == (20, 0, True)


def test_an_empty_answer_and_nxdomain() -> None:
    assert decode_answer(response(7, []), 7).addresses == ()
    assert decode_answer(response(7, [], flags=0x8403), 7).rcode == 3


def test_a_response_to_another_query_is_refused() -> None:
    with pytest.raises(DnsQueryError):
        decode_answer(response(8, [("10.77.1.100", 30)]), 7)
    with pytest.raises(DnsQueryError):
        decode_answer(response(7, [("10.77.1.100", 30)], flags=0x0000), 7)  # a query, not a response
