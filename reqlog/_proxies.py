"""The client behind proxies: address, scheme and host from X-Forwarded-* or RFC 7239 Forwarded.

A leaf module: pure functions over header bytes, no reqlog imports. Everything here reads
text a client controls (the left part of every forwarding header is whatever the client
sent), so it runs in time linear in the header's size, keeps at most ``MAX_HOPS`` hops, and
treats anything it cannot read as the end of what can be believed.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Sequence
from typing import Final, NamedTuple

__all__ = ["MAX_HOPS", "Client", "ProxyResolver", "host_name", "parse_networks"]

#: How many hops are walked at most: a hostile client can send thousands.
MAX_HOPS: Final = 32
#: The forwarding headers reqlog reads (``forwarded_header=``), lower case.
HEADERS: Final = ("x-forwarded-for", "forwarded")

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# RFC 7239 obfuscated identifiers ("_hidden", "_SEVKISEK"), and ports that are digits or
# obfuscated too.
_OBFUSCATED = re.compile(r"_[A-Za-z0-9._-]{1,64}")
_PORT = re.compile(r"[0-9]{1,5}|_[A-Za-z0-9._-]{1,64}")
# A forwarded host: a name, an IPv4 address or a bracketed IPv6 one, with an optional port.
_HOST = re.compile(
    r"[A-Za-z0-9._~-]{1,253}(?::[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](?::[0-9]{1,5})?"
)
# No node is longer (a bracketed IPv6 address with a port is 47): longer text is garbage,
# and never reaches the cache.
_MAX_NODE = 80


class Client(NamedTuple):
    """What the trusted proxies say about the client.

    ``ip`` is ``None`` when the forwarding header names the client only as ``unknown`` or by an
    obfuscated identifier; ``node`` is then that name. ``scheme`` and ``host`` are ``None``
    when no trusted proxy said.
    """

    ip: str | None
    scheme: str | None
    host: str | None
    node: str | None = None


class _Hop(NamedTuple):
    address: str | None  # the IP address, canonical; None when the hop names no address
    node: str | None  # "unknown" or an obfuscated identifier (RFC 7239), else None
    raw: str  # the address part as written, to recognise a server's own rewrite
    has_port: bool
    proto: str | None = None  # Forwarded: this element's proto= and host=
    host: str | None = None


_GARBAGE = _Hop(None, None, "", False)


def parse_networks(values: Iterable[str]) -> tuple[_Network, ...]:
    """``trusted_proxies`` as networks; a ``ValueError`` naming the first value that is not one."""
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            msg = (
                f"trusted_proxies: {value!r} is not an IP address or CIDR network "
                "(examples: '10.0.0.1', '10.0.0.0/8', 'fd00::/8')"
            )
            raise ValueError(msg) from None
    return tuple(networks)


def _node(text: str, rfc7239: bool) -> _Hop:
    return _GARBAGE if len(text) > _MAX_NODE else _cached_node(text, rfc7239)


@functools.lru_cache(maxsize=4096)
def _cached_node(text: str, rfc7239: bool) -> _Hop:
    """One hop's node: ``1.2.3.4``, ``1.2.3.4:80``, ``[2001:db8::1]:443``, ``[2001:db8::1]``,
    ``2001:db8::1``; with RFC 7239 also ``unknown`` and ``_obfuscated`` (with or without a port).

    Anything else is garbage: the walk stops there. Cached: the same proxies send the same
    addresses again and again (bounded, so a client cannot grow it).
    """
    host, port = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return _GARBAGE
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                return _GARBAGE
            port = rest[1:]
            if not _PORT.fullmatch(port):
                return _GARBAGE
        try:
            return _Hop(str(ipaddress.IPv6Address(host)), None, host, bool(rest))
        except ValueError:
            return _GARBAGE
    if text.count(":") == 1:  # IPv4 or a name, with a port
        host, port = text.split(":")
        if not _PORT.fullmatch(port):
            return _GARBAGE
    if rfc7239 and (host == "unknown" or _OBFUSCATED.fullmatch(host)):
        return _Hop(None, host, host, bool(port))
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return _GARBAGE
    if port and address.version == 6:
        return _GARBAGE  # a port after an IPv6 address needs the brackets
    return _Hop(str(address), None, host, bool(port))


def _split_values(values: Sequence[bytes]) -> list[str]:
    """Repeated header fields and comma-separated values as one list, the last ``MAX_HOPS``."""
    return [v.strip() for v in b",".join(values).decode("latin-1").split(",")[-MAX_HOPS:]]


def _unquote(value: str) -> str | None:
    """A token or a quoted string's content; ``None`` for an unbalanced or escaped quote."""
    if value.startswith('"'):
        if len(value) < 2 or not value.endswith('"') or '"' in value[1:-1] or "\\" in value:
            return None
        return value[1:-1]
    return None if '"' in value else value


def _forwarded_hops(values: Sequence[bytes]) -> list[_Hop]:
    """RFC 7239 elements (``for=...;proto=...;host=...``), the last ``MAX_HOPS``.

    Elements are split at every comma and pairs at every semicolon: a quoted value that
    itself holds a comma or semicolon is read as malformed, which stops the walk there, the
    safe side. Values that matter here (addresses, schemes, hosts) never need one.
    """
    hops = []
    for element in _split_values(values):
        node: _Hop | None = None
        proto = host = None
        malformed = False
        for pair in element.split(";"):
            name, sep, raw = pair.partition("=")
            value = _unquote(raw.strip()) if sep else None
            if value is None:
                malformed = bool(pair.strip()) or malformed
                continue
            name = name.strip().lower()
            if name == "for":
                node = _node(value, True) if node is None else _GARBAGE  # one for= per element
            elif name == "proto":
                proto = value.lower()
            elif name == "host":
                host = value
        if node is None or malformed:
            hops.append(_GARBAGE)
        else:
            hops.append(node._replace(proto=proto, host=host))
    return hops


def host_name(value: str) -> str:
    """A Host header's (or forwarded host's) name, without its port and IPv6 brackets."""
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    name, sep, port = value.rpartition(":")
    return name if sep and name and ":" not in name and port.isdigit() else value


class ProxyResolver:
    """Walks a forwarding header from the right, through the trusted proxies, to the client.

    Each trusted proxy appends the address it got the request from, so the header is read from
    its right end: the peer must be trusted for the header to be read at all, then every hop
    that is a trusted proxy is passed, and the first that is not is the client. A hop that is
    not an address (garbage a client put there) ends the walk: the last believable hop stands.

    When a server's own proxy-header handling (uvicorn's ``--proxy-headers``) already put a
    hop of the header in ``scope["client"]`` (with port 0, which no real connection has), the
    walk carries on from that hop rather than from the header's end: no hop is read twice.
    """

    __slots__ = ("_cached_check", "_forwarded", "_networks", "header")

    def __init__(self, trusted_proxies: Iterable[str], header: str = "X-Forwarded-For") -> None:
        self._networks = parse_networks(trusted_proxies)
        if not isinstance(header, str) or header.lower() not in HEADERS:
            msg = f"forwarded_header: expected 'X-Forwarded-For' or 'Forwarded', got {header!r}"
            raise ValueError(msg)
        self.header = header.lower().encode("latin-1")
        self._forwarded = self.header == b"forwarded"
        self._cached_check = functools.lru_cache(maxsize=4096)(self._check)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def _is_trusted(self, address: str) -> bool:
        # Bounded before the cache: a long string is no address, and must not be kept.
        return len(address) <= _MAX_NODE and self._cached_check(address)

    def _check(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._networks)

    def resolve(
        self,
        peer: Sequence[object] | None,
        headers: Iterable[tuple[bytes, bytes]],
        ws: bool = False,
    ) -> Client | None:
        """The client as the trusted proxies name it; ``None`` when the peer is not trusted or
        sent no forwarding header (the peer is then the client, and the scope says the rest)."""
        if not peer or not isinstance(peer[0], str) or not self._is_trusted(peer[0]):
            return None
        peer_host, peer_port = peer[0], peer[1] if len(peer) > 1 else None
        wanted = self.header
        fields: list[bytes] = []
        protos: list[bytes] = []
        hosts: list[bytes] = []
        for name, value in headers:
            if name == wanted:
                fields.append(value)
            elif name == b"x-forwarded-proto":
                protos.append(value)
            elif name == b"x-forwarded-host":
                hosts.append(value)
        if self._forwarded:
            hops = _forwarded_hops(fields) if fields else []
            proto_values: list[str] = []
            host_values: list[str] = []
        else:
            hops = [_node(h, False) for h in _split_values(fields)] if fields else []
            proto_values = _split_values(protos) if protos else []
            host_values = _split_values(hosts) if hosts else []
        if not hops and not proto_values and not host_values:
            return None
        start = len(hops)
        if peer_port == 0:
            # A server's proxy-header middleware took this hop for the client already.
            for i in range(start - 1, -1, -1):
                if hops[i].raw == peer_host and not hops[i].has_port:
                    start = i
                    break
        client: str | None = peer_host
        chosen = -1
        node: str | None = None
        for i in range(start - 1, -1, -1):
            hop = hops[i]
            if hop.address is None:
                if hop.node is not None:  # "unknown" or obfuscated: the client is not named
                    client, node, chosen = None, hop.node, i
                break
            client, chosen = hop.address, i
            if not self._is_trusted(client):
                break
        if self._forwarded:
            proto = hops[chosen].proto if chosen >= 0 else None
            host = hops[chosen].host if chosen >= 0 else None
        else:
            # X-Forwarded-Proto/-Host: one value per hop, aligned from the right, or one
            # value for all; the value for the hop taken as the client, else the last.
            from_right = len(hops) - 1 - chosen if chosen >= 0 else 0
            proto = _aligned(proto_values, from_right)
            host = _aligned(host_values, from_right)
        return Client(client, _scheme(proto, ws), _host(host), node)


def _aligned(values: list[str], from_right: int) -> str | None:
    if not values:
        return None
    return values[max(len(values) - 1 - from_right, 0)]


def _scheme(proto: str | None, ws: bool) -> str | None:
    if proto is None:
        return None
    proto = proto.lower()
    if proto not in ("http", "https", "ws", "wss"):
        return None
    if ws:
        return proto.replace("http", "ws")
    return proto.replace("ws", "http")


def _host(host: str | None) -> str | None:
    if host is None or not _HOST.fullmatch(host):
        return None
    return host_name(host)
