"""Which socket a listen address gets: IPv4, IPv6, or IPv6 taking IPv4 too ("::")."""

from __future__ import annotations

import socket

import pytest

from mira.adapters.listen_address import address_family
from mira.adapters.listener import PortInUseError, listen


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("0.0.0.0", (socket.AF_INET, "0.0.0.0", False)),
        ("127.0.0.1", (socket.AF_INET, "127.0.0.1", False)),
        ("localhost", (socket.AF_INET, "localhost", False)),
        ("", (socket.AF_INET, "", False)),
        ("::", (socket.AF_INET6, "::", socket.has_dualstack_ipv6())),
        ("[::]", (socket.AF_INET6, "::", socket.has_dualstack_ipv6())),
        ("::1", (socket.AF_INET6, "::1", False)),
        (" [fd00::5] ", (socket.AF_INET6, "fd00::5", False)),
    ],
)
def test_the_family_follows_the_address(
    host: str, expected: tuple[socket.AddressFamily, str, bool]
) -> None:
    assert address_family(host) == expected


def test_an_ipv6_address_in_use_is_named_in_brackets() -> None:
    with listen("::1", 0, 8) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=rf"cannot listen on \[::1\]:{port}: address"):
            listen("::1", port, 8)
