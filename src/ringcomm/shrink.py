"""comm.shrink(): the survivors of a lost rank agree on who is left and build
a new communicator of them, without the old one (docs/stragglers.md,
"Shrink").

Every communicator of more than one rank holds a listening TCP socket (the
control socket: one fd, no thread, nothing is read from it until a shrink),
whose address went around with the address blobs at connect.  The kernel
closes it when the process dies, so "can I connect to rank r's control
socket" tells a live process from a dead one without the old communicator,
MPI or any launcher - which may all be unusable once a rank died.

Agreement (a coordinator protocol in rounds):

1. every survivor takes as coordinator the lowest rank it does not know to
   be dead, and connects to its control socket; refused (the process is
   gone) or dropped -> that rank is dead, next one;
2. the coordinator accepts the others' hellos until every rank it does not
   know to be dead has said hello or is found dead (it re-probes the silent
   ones); past the timeout it raises TimeoutError naming them (so do the
   members waiting on it);
3. it sends the member list (ranks that said hello, and itself, in old rank
   order) and a fresh token to every member; then the new communicator is
   built by the usual two-phase connect (bootstrap._connect), its two
   all-gathers relayed through the coordinator;
4. a member that drops out before the end (it died) makes the coordinator
   tell the others to start a new round without it; a coordinator that
   drops out makes each member start a new round without it.  Survivors
   thus never return communicators of different member sets; a rank that
   dies after the agreement is in the new communicator, whose next call
   fails with RC_ERR_PEER_LOST, and it can be shrunk again.

The one window not covered: the coordinator dying after it relayed the
last all-gather to some members but not all - those return the new
communicator (which then fails at its first call), the others raise
TimeoutError.  ULFM closes that window with a fault-tolerant consensus.
"""
import base64
import json
import os
import secrets
import socket
import struct
import time

from ringcomm import _core

DEFAULT_TIMEOUT = 60.0


# ---------------------------------------------------------------- addresses

def _boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _ipv4_addresses():
    """This host's IPv4 addresses (not loopback), for peers on other hosts."""
    import fcntl
    out = []
    try:
        names = [n for _, n in socket.if_nameindex()]
    except OSError:
        names = []
    for name in names:
        if name == "lo":
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            raw = fcntl.ioctl(s.fileno(), 0x8915,  # SIOCGIFADDR
                              struct.pack("256s", name.encode()[:15]))
            out.append(socket.inet_ntoa(raw[20:24]))
        except OSError:
            pass
        finally:
            s.close()
    return out


def _where():
    return "%s/%s" % (_boot_id(), socket.gethostname())


def listen():
    """The control socket and its address (for bootstrap._connect)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", 0))
    sock.listen(128)
    return sock, {"where": _where(), "ips": _ipv4_addresses(), "port": sock.getsockname()[1],
                  "pid": os.getpid()}


# ---------------------------------------------------------------- messages

def _send(conn, obj):
    data = json.dumps(obj).encode()
    conn.sendall(struct.pack("!I", len(data)) + data)


def _recv_exact(conn, n, deadline):
    buf = b""
    while len(buf) < n:
        conn.settimeout(max(0.05, min(0.5, deadline - time.monotonic())))
        try:
            part = conn.recv(n - len(buf))
        except socket.timeout:
            if time.monotonic() > deadline:
                raise TimeoutError("no answer") from None
            continue
        if not part:
            raise ConnectionError("closed")
        buf += part
    return buf


def _recv(conn, deadline):
    (n,) = struct.unpack("!I", _recv_exact(conn, 4, deadline))
    if n > 64 << 20:
        raise ConnectionError("oversized message")
    return json.loads(_recv_exact(conn, n, deadline))


def _connect_to(ctl, deadline):
    """A connection to a peer's control socket, or None when its process is gone."""
    same = ctl["where"] == _where()
    for ip in (["127.0.0.1"] if same else ctl["ips"]):
        try:
            return socket.create_connection((ip, ctl["port"]),
                                            timeout=max(0.1, min(2.0, deadline - time.monotonic())))
        except OSError:
            continue
    return None


def _alive(ctl, deadline):
    conn = _connect_to(ctl, deadline)
    if conn is None:
        return False
    try:
        _send(conn, {"probe": 1})
    except OSError:
        pass
    conn.close()
    return True


# ---------------------------------------------------------------- the protocol

class _Restart(Exception):
    def __init__(self, dead):
        super().__init__("restart")
        self.dead = set(dead)


def _check(comm, timeout):
    _core._check_timeout(timeout)
    if comm.closed:
        raise _core.RingcommError(-1, "shrink: the communicator is closed")
    st, msg = comm._failure()
    if st == 0:
        raise _core.RingcommError(-1, "shrink on rank %d: the communicator has not failed (shrink "
                                  "needs a call that raised RC_ERR_PEER_LOST or RC_ERR_TIMEOUT)"
                                  % comm.rank)
    ft = comm._ft
    if ft is None or "peers" not in ft:
        raise _core.RingcommError(-2, "shrink on rank %d: this communicator has no control "
                                  "addresses (made by a bootstrap without them)" % comm.rank)
    return ft


def shrink(comm, timeout=None):
    ft = _check(comm, timeout)
    t = float(timeout) if timeout is not None else (comm._timeout or DEFAULT_TIMEOUT)
    deadline = time.monotonic() + t
    dead = set(ft.get("dead", ()))
    me, peers = comm.rank, ft["peers"]
    while True:
        coord = min(r for r in range(comm.size) if r not in dead)
        try:
            if coord == me:
                members, relay = _coordinate(comm, ft, dead, deadline)
            else:
                members, relay = _join(comm, coord, peers[coord], dead, deadline)
        except _Restart as e:
            dead |= e.dead
            continue
        ft["dead"] = sorted(set(range(comm.size)) - set(members))
        token, allgather, done = relay
        try:
            new = _bootstrap_connect(members.index(me), len(members), token, comm._timeout,
                                     allgather)
        except _Restart as e:
            dead |= e.dead
            continue
        done()
        ft["survivors"] = members
        return new


def _bootstrap_connect(rank, size, token, timeout, allgather):
    from ringcomm.bootstrap import _connect
    return _connect(rank, size, token, timeout, allgather, allgather)


def _absent_error(comm, silent, t):
    return TimeoutError("shrink on rank %d: ranks %s neither joined nor died within %.1f s "
                        "(they must call shrink() too)" % (comm.rank, sorted(silent), t))


def _coordinate(comm, ft, dead, deadline):
    me, peers, sock = comm.rank, ft["peers"], ft["sock"]
    expect = {r for r in range(comm.size) if r != me and r not in dead}
    conns = {}
    sock.settimeout(0.2)
    next_probe = 0.0
    while expect - set(conns):
        now = time.monotonic()
        if now > deadline:
            for c in conns.values():
                c.close()
            raise _absent_error(comm, expect - set(conns), deadline - now)
        try:
            conn, _ = sock.accept()
        except socket.timeout:
            conn = None
        if conn is not None:
            try:
                hello = _recv(conn, min(deadline, time.monotonic() + 2))
            except (OSError, ValueError, TimeoutError, ConnectionError):
                conn.close()
                continue
            r = hello.get("hello")
            if r is None or hello.get("token") != ft["token"] or r not in expect:
                conn.close()       # a probe, or a rank from another round
                continue
            if r in conns:
                conns[r].close()
            conns[r] = conn
        if time.monotonic() >= next_probe:
            next_probe = time.monotonic() + 0.5
            for r in sorted(expect - set(conns)):
                if not _alive(peers[r], deadline):
                    expect.discard(r)
                    dead.add(r)
    members = sorted(set(conns) | {me})
    token = secrets.token_hex(12)
    lost = set()
    for r, c in conns.items():
        try:
            _send(c, {"members": members, "token": token})
        except OSError:
            lost.add(r)
    if lost:
        _tell_restart(conns, lost, dead)
    rounds = [0]

    def allgather(obj):
        rounds[0] += 1
        got = {me: obj}
        bad = set()
        for r, c in conns.items():
            try:
                msg = _recv(c, deadline)
                got[r] = _decode(msg["ag"])
            except (OSError, ValueError, TimeoutError, ConnectionError, KeyError):
                bad.add(r)
        if bad:
            _tell_restart(conns, bad, dead)
        out = [got[r] for r in members]
        enc = _encode(out)
        for r, c in conns.items():
            try:
                _send(c, {"all": enc})
            except OSError:
                bad.add(r)
        if bad:
            _tell_restart(conns, bad, dead)
        return out

    def done():
        for c in conns.values():
            c.close()

    return members, (token, allgather, done)


def _tell_restart(conns, bad, dead):
    newdead = set(dead) | set(bad)
    for r, c in conns.items():
        if r not in bad:
            try:
                _send(c, {"restart": sorted(newdead)})
            except OSError:
                pass
        c.close()
    raise _Restart(newdead)


def _join(comm, coord, ctl, dead, deadline):
    me = comm.rank
    conn = _connect_to(ctl, deadline)
    if conn is None:
        raise _Restart({coord})
    try:
        _send(conn, {"hello": me, "token": comm._ft["token"]})
        msg = _recv(conn, deadline)
    except TimeoutError:
        conn.close()
        raise _absent_error(comm, [coord], 0) from None
    except (OSError, ValueError, ConnectionError):
        conn.close()
        raise _Restart({coord}) from None
    if "restart" in msg:
        conn.close()
        raise _Restart(msg["restart"])
    members = msg["members"]

    def allgather(obj):
        try:
            _send(conn, {"ag": _encode(obj)})
            reply = _recv(conn, deadline)
        except TimeoutError:
            conn.close()
            raise _absent_error(comm, [coord], 0) from None
        except (OSError, ValueError, ConnectionError):
            conn.close()
            raise _Restart({coord}) from None
        if "restart" in reply:
            conn.close()
            raise _Restart(reply["restart"])
        return _decode(reply["all"])

    return members, (msg["token"], allgather, conn.close)


def _to_json(obj):
    if isinstance(obj, (bytes, bytearray)):
        return {"b64": base64.b64encode(bytes(obj)).decode()}
    if isinstance(obj, (list, tuple)):
        return [_to_json(x) for x in obj]
    if isinstance(obj, dict):
        return {"d": [[k, _to_json(v)] for k, v in obj.items()]}
    return obj


def _from_json(obj):
    if isinstance(obj, list):
        return [_from_json(x) for x in obj]
    if isinstance(obj, dict):
        if "b64" in obj:
            return base64.b64decode(obj["b64"])
        return {k: _from_json(v) for k, v in obj["d"]}
    return obj


# the bootstrap's payloads (errors, address blobs, control addresses) as
# JSON: nothing a peer sends is unpickled
def _encode(obj):
    return _to_json(obj)


def _decode(obj):
    return _from_json(obj)


def failed_ranks(comm):
    """After shrink: the ranks it left out; before: the ranks whose process
    is gone (their control socket refuses)."""
    ft = comm._ft
    if ft is None or "peers" not in ft:
        return []
    if "survivors" in ft:
        return list(ft["dead"])
    deadline = time.monotonic() + 5
    return [r for r in range(comm.size)
            if r != comm.rank and not _alive(ft["peers"][r], deadline)]
