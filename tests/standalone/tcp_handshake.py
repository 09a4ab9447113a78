"""tcp handshake: while the ranks connect over forced TCP, rank 0 first
opens raw sockets to the listener of the last rank (which accepts from every
lower rank) and sends what must never be trusted: a hello with a wrong token,
garbage, a short header then EOF, a hello with the right token claiming a
rank that may not connect there, and a socket that sends nothing.  Each must
be closed without a reply (the listener logs why, RINGCOMM_DEBUG=WARN); the
real connections must still succeed and an all-reduce must be right.
The hello layout is tcp_hello_t in csrc/transport/tcp.c (native byte order).
Prints TCP-HANDSHAKE-OK per rank.
"""

import os
import socket
import struct
import time

import numpy as np

from ringcomm import bootstrap
from _files import RANK, SIZE, FileExchange

MAGIC, VERSION, HELLO_BYTES = 0x50544352, 1, 104


def hello(rank, token, size=SIZE):
    h = struct.pack("=IHHii48sQIiQQQ", MAGIC, VERSION, HELLO_BYTES, rank, size,
                    token.encode(), 131072, 4, 0, 1024, 0, 8 << 20)
    assert len(h) == HELLO_BYTES
    return h


def listener_of(blob):
    """(family, address) of the tcp listener in an address blob (rc_addr_t.net at byte 208)."""
    fam, port, _scope = struct.unpack_from("=HHI", blob, 208)
    ip = blob[216:232]
    if fam == 6:
        return socket.AF_INET6, (socket.inet_ntop(socket.AF_INET6, ip), port)
    return socket.AF_INET, (socket.inet_ntop(socket.AF_INET, ip[:4]), port)


def expect_closed(s, what):
    """The listener closes the socket and never answers."""
    s.settimeout(10)
    try:
        got = s.recv(200)
    except ConnectionResetError:
        got = b""
    assert got == b"", f"{what}: the listener answered {got!r}"
    s.close()


def attack(blob, token):
    fam, addr = listener_of(blob)
    socks = []

    def open_():
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.connect(addr)
        socks.append(s)
        return s

    s = open_()
    s.sendall(hello(0, "not-the-token"))
    expect_closed(s, "wrong token")
    s = open_()
    s.sendall(os.urandom(HELLO_BYTES))
    expect_closed(s, "garbage")
    s = open_()
    s.sendall(hello(0, token)[:20])
    s.shutdown(socket.SHUT_WR)
    expect_closed(s, "short header")
    s = open_()
    s.sendall(hello(SIZE - 1, token))
    expect_closed(s, "a rank that may not connect there")
    silent = open_()  # says nothing: closed when setup ends
    time.sleep(0.5)   # the listener has handled all of the above before the real hello
    return silent


def main():
    ex = FileExchange("world")
    token = ex.allgather(os.urandom(8).hex())[0]
    silent = []

    def allgather(obj):
        res = ex.allgather(obj)
        if RANK == 0:
            silent.append(attack(res[SIZE - 1][1], token))
        return res

    comm = bootstrap._connect(RANK, SIZE, token, 60, ex.allgather, allgather)
    x = np.arange(100003, dtype=np.float32) * (RANK + 1)
    comm.allreduce(x)
    assert np.allclose(x, np.arange(100003, dtype=np.float32) * (SIZE * (SIZE + 1) // 2))
    comm.barrier()
    if silent:
        expect_closed(silent[0], "silent socket")
    comm.close()
    print(f"TCP-HANDSHAKE-OK rank={RANK}", flush=True)


if __name__ == "__main__":
    main()
