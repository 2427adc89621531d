"""How a listen address is read (which family, dual-stack or not): the listener binds by it
and `mira healthcheck` probes by it, which must stay light to import (socket only)."""

from __future__ import annotations

import socket


def address_family(host: str) -> tuple[socket.AddressFamily, str, bool]:
    """(family, address, dual-stack) of a listen address: IPv6 for one with a colon ("::",
    "::1", "[fd00::5]"), where "::" takes IPv4 connections too (as 0.0.0.0 and :: together
    would) when the kernel allows it; else IPv4 (a hostname resolves to its IPv4 address)."""
    address = host.strip()
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    if ":" in address:
        return socket.AF_INET6, address, address == "::" and socket.has_dualstack_ipv6()
    return socket.AF_INET, address, False
