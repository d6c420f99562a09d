"""The client behind proxies: X-Forwarded-For hop shapes, RFC 7239 Forwarded, scheme and host,
a server's own rewrite, and hostile headers (reqlog/_proxies.py, through the middleware too)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reqlog
from reqlog._proxies import MAX_HOPS, Client, ProxyResolver, host_name
from tests.conftest import LogOutput
from tests.test_middleware import call_asgi, make_app


def resolve(
    trusted: Any,
    headers: list[tuple[bytes, bytes]],
    peer: tuple[str, int] = ("127.0.0.1", 123),
    header: str = "X-Forwarded-For",
) -> Client | None:
    return ProxyResolver(trusted, header).resolve(peer, headers)


def xff(value: str, proto: str | None = "https") -> list[tuple[bytes, bytes]]:
    headers = [(b"x-forwarded-for", value.encode("latin-1"))]
    if proto is not None:
        headers.append((b"x-forwarded-proto", proto.encode()))
    return headers


# -- X-Forwarded-For: the hop shapes proxies send (uvicorn's proxy-header cases) ---------------


@pytest.mark.parametrize(
    ("forwarded_for", "client"),
    [
        ("1.2.3.4", "1.2.3.4"),
        ("1.2.3.4:1234", "1.2.3.4"),  # Azure Application Gateway
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("2001:DB8:0::1", "2001:db8::1"),
        # Not an address: the walk stops, the trusted peer stands.
        ("1.2.3.4:notaport", "127.0.0.1"),
        ("[2001:db8::1]:notaport", "127.0.0.1"),
        ("[2001:db8::1]extra", "127.0.0.1"),
        ("[2001:db8::1", "127.0.0.1"),
        ("2001:db8::1:443", "2001:db8::1:443"),  # a bare IPv6 address, read as written
        ("unknown", "127.0.0.1"),
    ],
)
def test_hop_shapes(forwarded_for: str, client: str) -> None:
    found = resolve(["127.0.0.1"], xff(forwarded_for))
    assert found is not None
    assert (found.ip, found.scheme) == (client, "https")


@pytest.mark.parametrize(
    ("trusted", "expected"),
    [
        (["127.0.0.1", "2001:db8::1", "192.168.0.2"], "1.2.3.4"),
        (["192.168.0.2", "127.0.0.1"], "2001:db8::1"),
        (["127.0.0.1", "2001:db8::/32", "192.168.0.2"], "1.2.3.4"),
    ],
)
def test_several_proxies_with_ports(trusted: list[str], expected: str) -> None:
    found = resolve(trusted, xff("1.2.3.4:1234, [2001:db8::1]:8080, 192.168.0.2:9000"))
    assert found is not None
    assert found.ip == expected


@pytest.mark.parametrize(
    ("forwarded_for", "expected"),
    [
        (" , ", "127.0.0.1"),
        (" , 10.0.0.1", "10.0.0.1"),  # the last believable hop
        ("9.9.9.9 , , , 10.0.0.1", "10.0.0.1"),
        (", , 9.9.9.9", "9.9.9.9"),
        ("1.2.3.4, \xf0\xfd\xfd\xfd, unix:, ::1", "::1"),  # the first hop not trusted
    ],
)
def test_malformed_hops_stop_the_walk(forwarded_for: str, expected: str) -> None:
    found = resolve(["127.0.0.1", "10.0.0.0/8"], xff(forwarded_for))
    assert found is not None
    assert found.ip == expected


def test_untrusted_peer_and_no_header_say_nothing() -> None:
    assert resolve(["10.0.0.0/8"], xff("1.2.3.4")) is None  # the peer is 127.0.0.1
    assert resolve(["127.0.0.1"], []) is None
    assert resolve(["127.0.0.1"], xff("1.2.3.4"), peer=("not-an-ip", 1)) is None


def test_repeated_fields_are_one_list_and_only_the_last_hops_are_read() -> None:
    headers = [
        (b"x-forwarded-for", b"203.0.113.66, 198.51.100.23"),
        (b"x-forwarded-for", b"10.0.0.1"),
    ]
    found = resolve(["127.0.0.1", "10.0.0.0/8"], headers)
    assert found is not None
    assert found.ip == "198.51.100.23"
    # A trusted chain longer than MAX_HOPS ends at the oldest hop read.
    chain = ", ".join(["1.2.3.4"] + ["10.0.0.9"] * (MAX_HOPS + 5))
    found = resolve(["127.0.0.1", "10.0.0.0/8"], xff(chain))
    assert found is not None
    assert found.ip == "10.0.0.9"


# -- scheme and host -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "scheme", "host"),
    [
        (
            [(b"x-forwarded-proto", b"https"), (b"x-forwarded-host", b"shop.example")],
            "https",
            "shop.example",
        ),
        ([(b"x-forwarded-proto", b"HTTPS")], "https", None),
        ([(b"x-forwarded-proto", b"gopher")], None, None),
        ([(b"x-forwarded-host", b"shop.example:8443")], None, "shop.example"),
        ([(b"x-forwarded-host", b"[2001:db8::1]:8443")], None, "2001:db8::1"),
        ([(b"x-forwarded-host", b"bad host\r\nx")], None, None),
        # One value per proxy, aligned from the right: the client's is the outermost.
        ([(b"x-forwarded-proto", b"https, http")], "https", None),
    ],
)
def test_scheme_and_host_from_trusted_proxies(
    headers: list[tuple[bytes, bytes]], scheme: str | None, host: str | None
) -> None:
    found = resolve(
        ["127.0.0.1", "10.0.0.0/8"], [(b"x-forwarded-for", b"1.2.3.4, 10.0.0.2"), *headers]
    )
    assert found == Client("1.2.3.4", scheme, host)


def test_websocket_schemes() -> None:
    resolver = ProxyResolver(["127.0.0.1"])
    found = resolver.resolve(("127.0.0.1", 1), xff("1.2.3.4", "https"), ws=True)
    assert found is not None
    assert found.scheme == "wss"


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("example.com", "example.com"),
        ("example.com:8080", "example.com"),
        ("[::1]:8000", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("host:port", "host:port"),
    ],
)
def test_host_name(value: str, name: str) -> None:
    assert host_name(value) == name


# -- RFC 7239 Forwarded ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "for=192.0.2.60;proto=https;host=shop.example",
            Client("192.0.2.60", "https", "shop.example"),
        ),
        ('for="[2001:db8:cafe::17]:4711"', Client("2001:db8:cafe::17", None, None)),
        ('For="[2001:db8:cafe::17]"; Proto=HTTPS', Client("2001:db8:cafe::17", "https", None)),
        ('for="192.0.2.43:47011"', Client("192.0.2.43", None, None)),
        ("for=unknown;proto=https", Client(None, "https", None, "unknown")),
        ("for=_hidden, for=10.0.0.2", Client(None, None, None, "_hidden")),
        ('for="_gazonk:_port"', Client(None, None, None, "_gazonk")),
        # Elements from each proxy; the client's is the first not trusted, from the right.
        (
            "for=6.6.6.6, for=192.0.2.60;proto=https, for=10.0.0.2;proto=http",
            Client("192.0.2.60", "https", None),
        ),
        # Malformed elements end the walk at the last believable hop.
        ('for="[2001:db8::1;proto=https, for=10.0.0.2', Client("10.0.0.2", None, None)),
        ("for=1.2.3.4;for=5.6.7.8, for=10.0.0.2", Client("10.0.0.2", None, None)),
        ('for="a,b", for=10.0.0.2', Client("10.0.0.2", None, None)),
        ("proto=https", Client("127.0.0.1", None, None)),
    ],
)
def test_forwarded(value: str, expected: Client) -> None:
    found = resolve(
        ["127.0.0.1", "10.0.0.0/8"], [(b"forwarded", value.encode())], header="Forwarded"
    )
    assert found == expected


def test_forwarded_is_opt_in_and_exclusive() -> None:
    headers = [(b"forwarded", b"for=192.0.2.60"), (b"x-forwarded-for", b"6.6.6.6")]
    assert resolve(["127.0.0.1"], headers) == Client("6.6.6.6", None, None)
    assert resolve(["127.0.0.1"], headers, header="Forwarded") == Client("192.0.2.60", None, None)
    with pytest.raises(ValueError, match="forwarded_header"):
        ProxyResolver(["127.0.0.1"], "X-Real-IP")


# -- a server that already read the header ---------------------------------------------------


def test_a_server_rewrite_is_continued_not_repeated() -> None:
    # uvicorn trusting 127.0.0.1 took 10.0.0.5 as the client (port 0); reqlog trusts the
    # balancer's 10.0.0.0/8 and carries on from that hop: the local 127.0.0.1 hop uvicorn
    # already passed is not read a second time.
    headers = xff("1.2.3.4, 10.0.0.5, 127.0.0.1")
    found = resolve(["10.0.0.0/8"], headers, peer=("10.0.0.5", 0))
    assert found is not None
    assert found.ip == "1.2.3.4"
    # A real connection never has port 0: the same peer with a port walks from the end.
    found = resolve(["10.0.0.0/8"], headers, peer=("10.0.0.5", 5000))
    assert found is not None
    assert found.ip == "127.0.0.1"


# -- hostile input ---------------------------------------------------------------------------

_hops = st.one_of(
    st.ip_addresses().map(str),
    st.ip_addresses(v=6).map(lambda ip: f"[{ip}]:{443}"),
    st.sampled_from(["unknown", "_hidden", "", " ", "[", "]", ":", '"', ";", "="]),
    st.text(alphabet=st.characters(codec="latin-1"), max_size=20),
)


@settings(max_examples=300, deadline=None)
@given(
    hops=st.lists(_hops, max_size=40),
    proto=st.text(alphabet=st.characters(codec="latin-1"), max_size=10),
    forwarded=st.booleans(),
)
def test_any_header_gives_the_peer_a_hop_or_nothing(
    hops: list[str], proto: str, forwarded: bool
) -> None:
    if forwarded:
        value = ", ".join(f"for={h};proto={proto}" for h in hops)
        headers = [(b"forwarded", value.encode("latin-1"))]
    else:
        headers = [(b"x-forwarded-for", ", ".join(hops).encode("latin-1"))]
        headers.append((b"x-forwarded-proto", proto.encode("latin-1")))
    resolver = ProxyResolver(
        ["127.0.0.0/8", "10.0.0.0/8", "fd00::/8"], "Forwarded" if forwarded else "X-Forwarded-For"
    )
    found = resolver.resolve(("127.0.0.1", 1), headers)
    if found is None:
        return
    assert found.scheme in (None, "http", "https")
    if found.ip is None:
        assert found.node in ("unknown", "_hidden") or (found.node or "").startswith("_")
    else:
        assert str(ipaddress.ip_address(found.ip)) == found.ip


def test_a_huge_header_is_read_in_linear_time() -> None:
    # Only the last MAX_HOPS hops are looked at; splitting is the only pass over the rest.
    value = "1.2.3.4, " * 200_000 + "10.0.0.1"
    found = resolve(["127.0.0.1", "10.0.0.0/8"], xff(value))
    assert found is not None
    assert found.ip == "1.2.3.4"
    garbage = '"' * 300_000 + ";for=" * 1000
    assert resolve(["127.0.0.1"], [(b"forwarded", garbage.encode())], header="Forwarded") == Client(
        "127.0.0.1", None, None
    )


# -- through the middleware ------------------------------------------------------------------


async def test_access_event_carries_the_forwarded_scheme_and_host(log_output: LogOutput) -> None:
    log_output.configure(schema="ecs")
    app = make_app(trusted_proxies=["10.0.0.0/8"])
    headers = [
        (b"x-forwarded-for", b"[2001:db8::7]:51000"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"shop.example"),
    ]
    await call_asgi(app, headers=headers, client=("10.0.0.1", 5000))
    [event] = [e for e in log_output.events() if e["message"] == "request_completed"]
    assert event["client"] == {"ip": "2001:db8::7"}
    assert event["url"] == {"path": "/", "query": "", "scheme": "https", "domain": "shop.example"}


async def test_otel_schema_names_scheme_and_host(log_output: LogOutput) -> None:
    log_output.configure(schema="otel")
    app = make_app(trusted_proxies=["10.0.0.0/8"], forwarded_header="Forwarded")
    headers = [(b"forwarded", b'for="[2001:db8::7]:51000";proto=https;host=shop.example')]
    await call_asgi(app, headers=headers, client=("10.0.0.1", 5000))
    [event] = log_output.access()
    assert (event["client.address"], event["url.scheme"], event["server.address"]) == (
        "2001:db8::7",
        "https",
        "shop.example",
    )


async def test_an_unnamed_client_is_logged_as_such(log_output: LogOutput) -> None:
    log_output.configure()
    app = make_app(trusted_proxies=["10.0.0.0/8"], forwarded_header="forwarded")
    log = reqlog.get_logger("app")

    @app.get("/")
    async def root() -> dict[str, str]:
        log.info("inside")
        return {}

    await call_asgi(app, headers=[(b"forwarded", b"for=_hidden")], client=("10.0.0.1", 5000))
    inside, access = log_output.events()
    assert inside["client_ip"] is None
    assert (access["client_ip"], access["client_node"]) == (None, "_hidden")


async def test_without_trusted_proxies_no_scheme_or_host_is_added(log_output: LogOutput) -> None:
    log_output.configure()
    headers = [(b"x-forwarded-for", b"1.2.3.4"), (b"x-forwarded-proto", b"https")]
    await call_asgi(make_app(), headers=headers, client=("10.0.0.1", 5000))
    [event] = log_output.access()
    assert event["client_ip"] == "10.0.0.1"
    assert "scheme" not in event
    assert "host" not in event
