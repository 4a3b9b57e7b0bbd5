"""redis-py (Debian's python3-redis) against the server on argv[1].

Prints "== case" and one line per reply; keys start with argv[2]. The same
calls run against redis-server and pgmirror, and compat_test.go compares
what they print. The library is used as an application would, with only the
socket path set.
"""
import sys
import threading

import redis
from redis.exceptions import LockError, LockNotOwnedError

SOCKET, PREFIX = sys.argv[1], sys.argv[2]
r = redis.Redis(unix_socket_path=SOCKET, decode_responses=True, socket_timeout=15)
r2 = redis.Redis(unix_socket_path=SOCKET, decode_responses=True, socket_timeout=15)


def k(name):
    return PREFIX + name


def out(*xs):
    print(*xs, flush=True)


def case_basic():
    out(r.set(k("a"), "1"), r.get(k("a")), r.incr(k("a")), r.incrby(k("a"), 5), r.get(k("missing")))
    out(r.set(k("a"), "x", nx=True), r.mget(k("a"), k("missing")), r.exists(k("a"), k("missing")))
    out(r.set(k("t"), "v", ex=60), r.ttl(k("t")) > 50, r.delete(k("a"), k("t")), r.exists(k("a")))
    out(r.mset({k("m1"): "1", k("m2"): "2"}), r.mget([k("m1"), k("m2")]), r.incrbyfloat(k("m1"), 0.5))
    out(r.ping(), r.echo("hi"), r.dbsize() >= 0)


def case_pipeline():
    # pipeline() is transactional by default: MULTI ... EXEC.
    with r.pipeline() as p:
        p.set(k("p"), "1").incr(k("p")).get(k("p")).set(k("p2"), "abc").incr(k("p2")).get(k("p"))
        out(p.execute(raise_on_error=False))
    out(r.mget(k("p"), k("p2")))


def case_pipeline_plain():
    with r.pipeline(transaction=False) as p:
        p.set(k("q"), "1").incr(k("q")).get(k("q")).get(k("missing"))
        out(p.execute())


def case_transaction():
    # transaction() WATCHes the key and retries when EXEC aborts.
    r.set(k("w"), "0")
    calls = []

    def incr(pipe):
        n = int(pipe.get(k("w")))
        if not calls:
            r2.set(k("w"), "100")  # another connection: the first EXEC aborts
        calls.append(n)
        pipe.multi()
        pipe.set(k("w"), str(n + 1))

    out(r.transaction(incr, k("w")), calls, r.get(k("w")))


def case_lock():
    lock = r.lock(k("lock"), timeout=30, blocking_timeout=0.2)
    other = r2.lock(k("lock"), timeout=30, blocking_timeout=0.2)
    out("acquire", lock.acquire(), "second holder", other.acquire(), "owned", lock.owned(), other.owned())
    try:
        other.do_release(b"not-the-token")
    except LockNotOwnedError as e:
        out("release of another token:", type(e).__name__)
    out("extend", lock.extend(10), r.pttl(k("lock")) > 30000)
    lock.release()
    out("released", r.exists(k("lock")), "second holder", other.acquire(), other.locked())
    other.release()
    try:
        other.release()
    except LockError as e:
        out("double release:", type(e).__name__)


def case_script():
    incr_by = r.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    out(incr_by(keys=[k("s")], args=[3]), incr_by(keys=[k("s")], args=[4]))
    out(r.eval("return {KEYS[1], ARGV[1], 1.5, false, 'x'}", 1, k("s"), "a"))
    out(r.script_exists(incr_by.sha, "0" * 40))


def case_scan_iter():
    for i in range(40):
        r.set(k("scan:%d" % i), "v")
    out(sorted(r.scan_iter(match=k("scan:1*"), count=7)))
    out(sorted(r.scan_iter(match=k("scan:2?"))))


def case_everyday_reads():
    r.set(k("r"), "hello world")
    out(r.getrange(k("r"), 2, 5), r.substr(k("r"), 0, 1), r.touch(k("r"), k("missing")))
    out(r.expiretime(k("r")), r.expireat(k("r"), 4102444800), r.expiretime(k("r")))
    seconds, micros = r.time()
    out(seconds > 1700000000, 0 <= micros < 1000000)


def case_everyday_writes():
    r.set(k("w"), "hello world")
    out(r.getset(k("w"), "0123456789"), r.setrange(k("w"), 8, "XYZ"), r.get(k("w")))
    out(r.copy(k("w"), k("w2")), r.rename(k("w2"), k("w3")), r.renamenx(k("w3"), k("w")), r.get(k("w3")))


def case_flushdb():
    r.set(k("f"), "v")
    out(r.flushdb(), r.exists(k("f")), r.dbsize())


CASES = [
    ("basic", case_basic),
    ("pipeline", case_pipeline),
    ("pipeline-plain", case_pipeline_plain),
    ("transaction", case_transaction),
    ("lock", case_lock),
    ("script", case_script),
    ("scan-iter", case_scan_iter),
    ("everyday-reads", case_everyday_reads),
    ("everyday-writes", case_everyday_writes),
    ("flushdb", case_flushdb),
]

for name, fn in CASES:
    out("==", name)
    try:
        fn()
    except Exception as e:  # the error is part of the transcript
        out("error:", type(e).__name__, e)
