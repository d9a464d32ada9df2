"""Datagrams in batches: Linux recvmmsg(2) and sendmmsg(2), one system call for up to
BATCH datagrams each way, as NSD does. The standard library binds neither, so this calls
libc through ctypes, with every buffer and header allocated once.

``Batches(sock).serve(answer, closing)`` blocks in recvmmsg until at least one datagram
is there (MSG_WAITFORONE), answers each (``answer(query)`` -> replies), and sends all
replies in one sendmmsg without waiting (a full send buffer drops them, as UDP may).
Where libc has no recvmmsg, ``available()`` is False and the caller reads one at a time.
"""

from __future__ import annotations

import ctypes
import socket
from collections.abc import Callable

BATCH = 64  # datagrams per system call
SIZE = 4096  # bytes kept of each query: DNS queries are far smaller
NAME = 28  # sizeof(struct sockaddr_in6), room for either family's address
MSG_WAITFORONE = 0x10000  # recvmmsg: block for the first datagram only
MSG_DONTWAIT = 0x40


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.c_void_p),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ctypes.c_uint)]


_libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols: libc's among them
# where the loop reads and writes headers, in units of the integer it moves
_STRIDE32 = ctypes.sizeof(_Mmsghdr) // 4
_STRIDE64 = ctypes.sizeof(_Mmsghdr) // 8
_NAMELEN = (_Mmsghdr.hdr.offset + _Msghdr.namelen.offset) // 4
_NAMEPTR = (_Mmsghdr.hdr.offset + _Msghdr.name.offset) // 8
_LEN = _Mmsghdr.len.offset // 4
_IOVLEN = _Iovec.len.offset // 8


def available() -> bool:
    return hasattr(_libc, "recvmmsg") and hasattr(_libc, "sendmmsg")


class Batches:
    """Receive and send buffers for one socket, each datagram in a slot of SIZE bytes;
    a reply is copied into its send slot and goes back to its query's address as it was
    received. The loop touches headers through integer views of their memory (ctypes
    objects cost a proxy per access)."""

    def __init__(self, sock: socket.socket) -> None:
        self.fd = sock.fileno()
        self.mem = {
            what: bytearray(size)
            for what, size in (
                ("rx_data", BATCH * SIZE), ("tx_data", BATCH * SIZE),
                ("names", BATCH * NAME),
                ("rx_iov", BATCH * ctypes.sizeof(_Iovec)),
                ("tx_iov", BATCH * ctypes.sizeof(_Iovec)),
                ("rx", BATCH * ctypes.sizeof(_Mmsghdr)),
                ("tx", BATCH * ctypes.sizeof(_Mmsghdr)),
            )
        }  # fmt: skip
        self.rx = (_Mmsghdr * BATCH).from_buffer(self.mem["rx"])
        self.tx = (_Mmsghdr * BATCH).from_buffer(self.mem["tx"])
        rx_iov = (_Iovec * BATCH).from_buffer(self.mem["rx_iov"])
        tx_iov = (_Iovec * BATCH).from_buffer(self.mem["tx_iov"])
        addr = {k: ctypes.addressof(ctypes.c_char.from_buffer(v)) for k, v in self.mem.items()}
        self.names = [addr["names"] + i * NAME for i in range(BATCH)]
        for i in range(BATCH):
            rx_iov[i].base, rx_iov[i].len = addr["rx_data"] + i * SIZE, SIZE
            tx_iov[i].base = addr["tx_data"] + i * SIZE
            rx, tx = self.rx[i].hdr, self.tx[i].hdr
            rx.name, rx.namelen = self.names[i], NAME
            rx.iov, rx.iovlen = ctypes.addressof(rx_iov[i]), 1
            tx.iov, tx.iovlen = ctypes.addressof(tx_iov[i]), 1

    def serve(
        self, answerer: Callable[[], Callable[[bytes], list[bytes]]], closing: Callable[[], bool]
    ) -> None:
        """Answer datagrams until ``closing()`` (check it after waking the socket with
        shutdown(), which makes recvmmsg return at once). ``answerer()`` gives the function
        in force (query -> replies), asked once per batch: a reload may replace it."""
        recvmmsg, sendmmsg, fd, rx, tx = _libc.recvmmsg, _libc.sendmmsg, self.fd, self.rx, self.tx
        view = memoryview(self.mem["rx_data"])
        out_data = memoryview(self.mem["tx_data"])
        rx32 = memoryview(self.mem["rx"]).cast("I")
        tx32 = memoryview(self.mem["tx"]).cast("I")
        tx64 = memoryview(self.mem["tx"]).cast("Q")
        iov64 = memoryview(self.mem["tx_iov"]).cast("Q")
        iov_stride = ctypes.sizeof(_Iovec) // 8
        # per slot, the offsets the loop needs: no arithmetic per datagram
        ins = [
            (i * SIZE, i * _STRIDE32 + _LEN, i * _STRIDE32 + _NAMELEN, self.names[i])
            for i in range(BATCH)
        ]
        outs = [
            (o * SIZE, o * iov_stride + _IOVLEN, o * _STRIDE64 + _NAMEPTR, o * _STRIDE32 + _NAMELEN)
            for o in range(BATCH)
        ]
        size_max, name_size = SIZE, NAME
        while not closing():
            received = recvmmsg(fd, rx, BATCH, MSG_WAITFORONE, None)
            answer = answerer()
            out = 0
            for start, len_at, namelen_at, name in ins[: max(received, 0)]:
                for reply in answer(bytes(view[start : start + rx32[len_at]])):
                    size = len(reply)
                    if size > size_max or out == BATCH:
                        continue  # neither happens: UDP replies fit 1232 bytes, one each
                    at, len_to, name_to, namelen_to = outs[out]
                    out_data[at : at + size] = reply
                    iov64[len_to] = size
                    tx64[name_to] = name
                    tx32[namelen_to] = rx32[namelen_at]
                    out += 1
                rx32[namelen_at] = name_size  # the kernel wrote this address's length
            if out:
                sendmmsg(fd, tx, out, MSG_DONTWAIT)
