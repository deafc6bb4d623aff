"""A minimal DNS client for the lab: ask one server for a name's A records over UDP, with their TTL.

Used by `lab smoke` and the end-to-end tests to resolve the inventory's domain through the lab's own DNS
servers as a user's resolver would (only ever sent to lab server addresses). No recursion, no EDNS: one
question, one answer, as an authoritative server gives it.
"""

from __future__ import annotations

import secrets
import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

TYPE_A = 1
CLASS_IN = 1
HEADER = struct.Struct("!HHHHHH")


class DnsQueryError(Exception):
    pass


@dataclass(frozen=True)
class Answer:
    addresses: tuple[IPv4Address, ...]  # in the order the server gave them
    ttl: int  # the smallest TTL of the records (0 when none)
    rcode: int  # 0 NOERROR, 3 NXDOMAIN, ...
    authoritative: bool


def encode_query(name: str, ident: int, rtype: int = TYPE_A) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode("ascii") for p in name.rstrip(".").split(".") if p)
    return HEADER.pack(ident, 0, 1, 0, 0, 0) + labels + b"\x00" + struct.pack("!HH", rtype, CLASS_IN)


def _skip_name(data: bytes, pos: int) -> int:
    while True:
        if pos >= len(data):
            raise DnsQueryError("truncated name")
        length = data[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:  # a compression pointer ends the name
            return pos + 2
        pos += 1 + length


def decode_answer(data: bytes, ident: int) -> Answer:
    if len(data) < HEADER.size:
        raise DnsQueryError("short response")
    rid, flags, qdcount, ancount, _ns, _ar = HEADER.unpack_from(data)
    if rid != ident or not flags & 0x8000:
        raise DnsQueryError("not the response to this query")
    pos = HEADER.size
    for _ in range(qdcount):
        pos = _skip_name(data, pos) + 4
    addresses: list[IPv4Address] = []
    ttls: list[int] = []
    for _ in range(ancount):
        pos = _skip_name(data, pos)
        rtype, rclass, ttl, rdlength = struct.unpack_from("!HHIH", data, pos)
        pos += 10
        if rtype == TYPE_A and rclass == CLASS_IN and rdlength == 4:
            addresses.append(IPv4Address(data[pos:pos + 4]))
            ttls.append(ttl)
        pos += rdlength
    return Answer(tuple(addresses), min(ttls, default=0), flags & 0x000F, bool(flags & 0x0400))


def query(server: str, name: str, *, port: int = 53, timeout: float = 2.0) -> Answer:
    """Ask `server` for `name`'s A records; DnsQueryError when it does not answer in time."""
    ident = secrets.randbelow(0x10000)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(encode_query(name, ident), (server, port))
            while True:
                data, _ = sock.recvfrom(4096)
                try:
                    return decode_answer(data, ident)
                except DnsQueryError:
                    continue  # a stray datagram: keep waiting for ours until the timeout
        except OSError as exc:  # timeout, refused, unreachable
            raise DnsQueryError(f"{server}: no answer ({exc})") from exc
