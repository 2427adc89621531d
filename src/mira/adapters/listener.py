"""The listening socket, engine-independent: bind it, refuse new handshakes, see its queue."""

from __future__ import annotations

import ctypes
import errno
import socket
import struct
import sys
import time

import structlog

from mira.adapters.listen_address import address_family

log = structlog.get_logger("mira.server")

#: After new SYNs are dropped, how long handshakes already under way get to complete (one round
#: trip) before the backlog is emptied for the last time.
HANDSHAKE_GRACE = 0.05
_SO_ATTACH_FILTER = 26  # linux/asm-generic/socket.h; absent from the socket module
#: struct tcp_info: 8 bytes of u8 fields, then u32 rto, ato, snd_mss, rcv_mss, unacked, sacked;
#: on a listening socket `unacked` is the accept queue's length now (`sacked` its limit).
_TCP_INFO_UNACKED = 24


class PortInUseError(OSError):
    """The listen address is already taken by another socket."""


def listen(host: str, port: int, backlog: int) -> socket.socket:
    """A listening TCP socket, or an OSError that names the address and what went wrong."""
    family, address, dual = address_family(host)
    try:
        return socket.create_server(
            (address, port), family=family, backlog=backlog, dualstack_ipv6=dual
        )
    except OSError as exc:
        raise _named(exc, host, port) from None


def _named(exc: OSError, host: str, port: int) -> OSError:
    """The bind's failure, naming the address (PortInUseError when it is taken)."""
    family, address, _ = address_family(host)
    where = f"[{address}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return PortInUseError(exc.errno, f"cannot listen on {where}: address already in use")
    return OSError(f"cannot listen on {where}: {exc.strerror or exc}")


def listen_group(host: str, port: int, backlog: int, count: int) -> list[socket.socket]:
    """`count` listening sockets on one address (SO_REUSEPORT), one per worker process: the
    kernel spreads new connections over them by a hash of the client's address and port.

    One socket shared by every worker lets whichever is awake first accept a whole burst of
    connections (measured: 32 connections opened at once, 26/6 and 32/0 between two workers;
    keep-alive connections then stay where they landed). A plain bind first makes an address
    in use fail as it does for one process, and since our sockets then hold the address, a
    second Mira started on it fails the same way instead of joining the group."""
    probe = listen(host, port, backlog)
    bound_port = int(probe.getsockname()[1])
    probe.close()
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sockets.append(join_group(host, bound_port, backlog))
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def join_group(host: str, port: int, backlog: int, listening: bool = True) -> socket.socket:
    """One more SO_REUSEPORT socket on the group's address. Not `listening`: bound only, so
    the kernel gives it no connections until its engine listens (granian does when it starts
    serving), and closing it resets nothing."""
    family, address, dual = address_family(host)
    try:
        if listening:
            return socket.create_server(
                (address, port),
                family=family,
                backlog=backlog,
                reuse_port=True,
                dualstack_ipv6=dual,
            )
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:  # as create_server sets it for the listening ones
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual else 1)
            sock.bind((address, port))
        except OSError:
            sock.close()
            raise
        return sock
    except OSError as exc:
        raise _named(exc, host, port) from None


#: A classic BPF program for the listening socket: drop a packet with SYN and without ACK (a new
#: connection), keep everything else, in particular the ACK that completes a handshake already
#: under way: dropping that one too left such a connection half-open and reset it at close.
#: A TCP socket filter sees the TCP header at offset 0; byte 13 holds the flags.
_SYN_ONLY = (
    (0x30, 0, 0, 13),  # ldb [13]
    (0x45, 2, 0, 0x10),  # jset #ACK -> keep
    (0x45, 0, 1, 0x02),  # jset #SYN -> drop, else keep
    (0x06, 0, 0, 0),  # ret #0: drop
    (0x06, 0, 0, 0xFFFFFFFF),  # ret #-1: keep the whole packet
)


def refuse_new_handshakes(sock: socket.socket) -> None:
    """On Linux, drop new SYNs so the backlog stops growing while it is emptied.

    Without this, a handshake completing between the last accept() and close() is reset.
    Dropped SYNs are retransmitted by the client and then meet the closed port: refused.
    The filter belongs to the socket itself, so it holds in every process sharing it.
    """
    if not sys.platform.startswith("linux"):
        return
    code = b"".join(struct.pack("HBBI", *instruction) for instruction in _SYN_ONLY)
    buffer = ctypes.create_string_buffer(code, len(code))
    program = struct.pack("HP", len(_SYN_ONLY), ctypes.addressof(buffer))  # struct sock_fprog
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, program)
    except OSError:
        log.warning("listener_filter_unavailable", exc_info=True)


def queued(sock: socket.socket) -> int | None:
    """Connections in the listening socket's accept queue now (None where it cannot be read)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except (OSError, AttributeError):
        return None
    if len(info) < _TCP_INFO_UNACKED + 4:
        return None
    value: int = struct.unpack_from("I", info, _TCP_INFO_UNACKED)[0]
    return value


def wait_backlog_taken(sock: socket.socket, timeout: float) -> int:
    """After refuse_new_handshakes: wait (up to timeout) until the engine has accepted every
    connection already queued; how many are still queued."""
    time.sleep(HANDSHAKE_GRACE)  # handshakes under way land in the backlog
    deadline = time.monotonic() + timeout
    while (waiting := queued(sock)) and time.monotonic() < deadline:
        time.sleep(0.005)
    return waiting or 0
