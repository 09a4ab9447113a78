"""Fuzzing every check that bytes from another process go through (address
blobs, the shared-memory segment header, collective and point-to-point
descriptors) with Hypothesis: on arbitrary bytes each returns a verdict and
never crashes (the sanitizer run, make test-sanitize, also catches any read
outside the input); on structured inputs the verdict equals an independent
Python model of the rules.  Bounded example counts keep it quick in CI."""

import struct

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import ringcomm
from ringcomm._core import _fuzz_check

ADDRESSES, SHM_HEADER, COLL_DESC, P2P_DESC = 0, 1, 2, 3
VERDICTS = {"RC_OK", "RC_ERR_MISMATCH", "RC_ERR_INTERNAL", "RC_ERR_INVALID_ARG"}
# derandomize: CI sees the same examples every run (a failure is reproducible)
FAST = settings(max_examples=400, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

# rc_desc_t: seq, coll, dtype, op, algo, count, root, bytes (24 bytes)
DESC = struct.Struct("<IBBBBQiI")
DTYPE_SIZES = [4, 8, 2, 2, 1, 1, 4, 8, 1]
SEND = 10


@FAST
@given(kind=st.integers(0, 3), data=st.binary(max_size=6000))
def test_arbitrary_bytes_get_a_verdict(kind, data):
    assert _fuzz_check(kind, data) in VERDICTS


# ---- collective descriptors: used only when equal to the call and sized right

desc_fields = st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 255), st.integers(0, 255),
                        st.integers(0, 255), st.integers(0, 255), st.integers(0, 2**64 - 1),
                        st.integers(-2**31, 2**31 - 1), st.integers(0, 2**32 - 1))


@FAST
@given(got=desc_fields, cur=desc_fields, want=st.integers(0, 2**64 - 1),
       same=st.booleans())
def test_coll_desc(got, cur, want, same):
    if same:  # the interesting case: everything but the payload size agrees
        got = cur[:7] + (got[7],)
        want = got[7] if want % 2 else want
    verdict = _fuzz_check(COLL_DESC, DESC.pack(*got) + DESC.pack(*cur) + struct.pack("<Q", want))
    ok = got[:7] == cur[:7] and got[7] == want
    assert verdict == ("RC_OK" if ok else "RC_ERR_MISMATCH")


# ---- point-to-point descriptors against the receiver's stream state

P2P_STATE = struct.Struct("<IiQQiI")


def p2p_model(d, expect, mid, cur_bytes, cur_off, cur_tag, chunk):
    seq, coll, dtype, _, algo, count, tag, nbytes = d
    if coll != SEND or seq != expect or dtype >= len(DTYPE_SIZES):
        return False
    es = DTYPE_SIZES[dtype]
    if count > (2**64 - 1) // 4 // es or tag < 0 or algo > 1:
        return False
    if algo == 1:  # by address: one 16-byte chunk {address, length}
        return not mid and nbytes == 16
    total = count * es
    if mid and (total != cur_bytes or tag != cur_tag or cur_off >= cur_bytes):
        return False
    left = cur_bytes - cur_off if mid else total
    return nbytes == min(left, chunk)


@FAST
@given(seq=st.integers(0, 5), dtype=st.integers(0, 10), count=st.one_of(
           st.integers(0, 3000), st.integers(0, 2**64 - 1)),
       tag=st.integers(-3, 3), nbytes=st.integers(0, 5000), coll=st.sampled_from([SEND, 11, 1]),
       mid=st.booleans(), cur_off=st.integers(0, 9000), cur_tag=st.integers(-1, 3),
       chunk=st.sampled_from([64, 256, 1024, 4096]), exact=st.booleans(),
       algo=st.sampled_from([0, 0, 1, 2]))
def test_p2p_desc(seq, dtype, count, tag, nbytes, coll, mid, cur_off, cur_tag, chunk, exact,
                  algo):
    expect = 2
    es = DTYPE_SIZES[dtype] if dtype < len(DTYPE_SIZES) else 1
    cur_bytes = count * es if count < 2**40 else 1000
    if exact and dtype < len(DTYPE_SIZES) and count < 2**40:  # steer towards valid chunks
        seq, coll, tag = expect, SEND, abs(tag)
        cur_tag = tag
        mid = mid and cur_bytes > 0   # an empty message has no middle
        cur_off = min(cur_off, cur_bytes - 1) if mid else cur_off
        nbytes = 16 if algo == 1 else min((cur_bytes - cur_off) if mid else count * es, chunk)
    d = (seq, coll, dtype, 0, algo, count, tag, nbytes)
    data = DESC.pack(*d) + P2P_STATE.pack(expect, int(mid), cur_bytes, cur_off, cur_tag, chunk)
    verdict = _fuzz_check(P2P_DESC, data)
    want = p2p_model(d, expect, mid, cur_bytes, cur_off, cur_tag, chunk)
    assert verdict == ("RC_OK" if want else "RC_ERR_INTERNAL"), (d, mid, cur_bytes, cur_off)


# ---- the shared-memory segment header (rank 0 writes it, the others check it)

HDR = struct.Struct("<QIIQQQQi4xQQQIiii1024s")
# rc_algo_t values 0 .. NUM_ALGOS-1: "auto" and every algorithm of every collective
NUM_ALGOS = 1 + len({a for c in ("allreduce", "broadcast", "reduce", "allgather",
                                 "reduce_scatter", "alltoall", "gather", "scatter", "barrier")
                     for a in ringcomm.algorithms(c)})
MAGIC = 0x3330484D53435252  # "RRCSMH03"


def layout(p, nslots, chunk, cells=(16, 8)):
    """csrc/transport/shm.h: cell stride, FIFO bytes, segment bytes."""
    stride = (chunk + 63) // 64 * 64
    fifo = 256 + nslots * 32
    up = lambda x: (x + 4095) // 4096 * 4096  # noqa: E731
    pool = up(2 * 64 + (cells[0] + cells[1]) * stride)
    # header, rank info, acks, one-line outboxes (8 lines + consumed + waiters),
    # FIFOs (2 lanes x p x p), then every rank's pools (page aligned)
    return stride, fifo, up(4096 + p * 64 + p * p * 64 + p * 640 + 2 * p * p * fifo) + p * pool


@FAST
@example(p=2, nslots=2, chunk=64, algo=NUM_ALGOS - 1, hdr_p=2, tweak="none")  # the last algorithm
@example(p=2, nslots=2, chunk=64, algo=NUM_ALGOS, hdr_p=2, tweak="none")      # one past it
@given(p=st.integers(1, 8), nslots=st.integers(0, 1100), chunk=st.sampled_from(
           [0, 32, 64, 100, 128, 4096, 131072, 2**30, 2**31]),
       algo=st.integers(-2, 12), hdr_p=st.integers(0, 9), tweak=st.sampled_from(
           ["none", "magic", "stride", "chan", "total", "mapped"]))
def test_shm_header(p, nslots, chunk, algo, hdr_p, tweak):
    stride, chan, total = layout(p, nslots, chunk)
    magic = MAGIC ^ (tweak == "magic")
    stride += 64 * (tweak == "stride")
    chan += tweak == "chan"
    total += 4096 * (tweak == "total")
    mapped = total + 64 * (tweak == "mapped")
    hdr = HDR.pack(magic, hdr_p, nslots, chunk, stride, chan, total, algo, 16, 8, 0, 0, 0, 0, 0,
                   b"")
    # the check sees the header at the start of a mapping of `mapped` bytes;
    # only the header bytes are passed, the size travels separately
    data = struct.pack("<i", p) + hdr + bytes(min(mapped, 1 << 16) - len(hdr)) \
        if mapped <= (1 << 16) else None
    if data is None:
        return  # the mapping size cannot be expressed without allocating it
    verdict = _fuzz_check(SHM_HEADER, data)
    valid = (tweak == "none" and hdr_p == p and 2 <= nslots <= 1024 and 64 <= chunk <= 2**30
             and chunk % 64 == 0 and 0 <= algo < NUM_ALGOS)
    assert verdict == ("RC_OK" if valid else "RC_ERR_MISMATCH"), (p, nslots, chunk, algo, tweak)


# ---- address blobs

with ringcomm.init() as _one:       # one rank: how many "auto" thresholds this build has
    NUM_TUNE = len(_one.thresholds())
# magic, rank, size, pid, token, host, net, then rank 0's tuning: chunk, nslots,
# algo, ntune, stream_min, the thresholds {v[NUM_TUNE], from[NUM_TUNE], source[240]}
# ..., stream_min, machine[40], cpus[128], chunk_given, pad[3], shm_free_mib,
# tune (384 bytes), then the per-feature area from 832: topo bits, topo_pad,
# package, numa, l3 (uint16 each: any value is a valid sort key, csrc/topo.c),
# strag_every (u16) at 840, strag_pad, strag_ms (u32) at 844, spare[176]
ADDR = struct.Struct("<Iiii64s128s48xIHbBQ40s128sB7x384sBxHHHH2xI176x")
TUNE_T = struct.Struct(f"<{NUM_TUNE}Q{NUM_TUNE}B240s")


@FAST
@given(size=st.integers(1, 6), bad_rank=st.integers(-1, 5), field=st.sampled_from(
           ["none", "magic", "rank", "size", "token", "unterminated", "chunk", "nslots",
            "algo", "ntune", "origin", "source"]))
def test_addresses(size, bad_rank, field):
    blobs = []
    for r in range(size):
        magic, rank, sz, token, host = 0x52434144, r, size, b"fuzz", b"host"
        chunk, nslots, algo, ntune = 131072, 4, 0, NUM_TUNE
        origins, source = [0] * NUM_TUNE, b"built-in defaults"
        if r == bad_rank:
            if field == "magic":
                magic ^= 1
            elif field == "rank":
                rank = (r + 1) % (size + 1)
            elif field == "size":
                sz = size + 1
            elif field == "token":
                token = b"fuzZ"
            elif field == "unterminated":
                token, host = b"fuzz", b"h" * 128   # no NUL: must not be read past
            elif field == "source":
                source = b"s" * 240                 # no NUL either
            elif field == "chunk":                  # the tuning rank 0's address carries
                chunk = 100
            elif field == "nslots":
                nslots = 1
            elif field == "algo":
                algo = NUM_ALGOS
            elif field == "ntune":
                ntune = NUM_TUNE + 1                # another build's threshold table
            elif field == "origin":
                origins[-1] = 3
        tune = TUNE_T.pack(*([1024] * NUM_TUNE), *origins, source)
        blobs.append(ADDR.pack(magic, rank, sz, 1234, token, host, chunk, nslots, algo, ntune,
                               8 << 20, b"machine", b"\x03", 0, tune, 1, r, 0xFFFF, 7 * r, 0, 0))
    assert len(blobs[0]) == 1024
    verdict = _fuzz_check(ADDRESSES, struct.pack("<i", size) + b"".join(blobs))
    broken = 0 <= bad_rank < size and field not in ("none", "unterminated", "source")
    assert verdict == ("RC_ERR_MISMATCH" if broken else "RC_OK"), (size, bad_rank, field)
