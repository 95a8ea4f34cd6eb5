"""Checks timewheel against an unmodified redis-py client (protocol 3 by default in redis-py 8).

Run by tests/python_client.rs; by hand:
    python3 tests/python/client_check.py --port 7379 [--password PASS]
Exits 0 and prints "ok" when every check passed; an assertion or a redis error fails it.
"""

import argparse
import sys
import time

import redis
import redis.backoff
import redis.retry


def check_commands(r):
    # redis-py 8 negotiates RESP3 with HELLO 3 unless told otherwise.
    client = r.client_info()
    assert client.get("resp") == "3", client
    assert r.ping() is True

    deadline = r.execute_command("ADD", "py:1", 60000)
    assert isinstance(deadline, int) and deadline > time.time() * 1000, deadline
    pttl = r.execute_command("PTTL", "py:1")
    assert 0 < pttl <= 60000, pttl
    assert r.execute_command("COUNT") == 1
    try:
        r.execute_command("ADD", "py:1", 1000)
        raise AssertionError("a second ADD of py:1 succeeded")
    except redis.exceptions.ResponseError as e:
        assert str(e).startswith("EXISTS"), e
    assert r.execute_command("CANCEL", "py:1") == 1
    assert r.execute_command("CANCEL", "py:1") == 0
    assert r.execute_command("PTTL", "py:1") == -2

    info = r.info()
    for key in ("pending", "fired_total", "cancelled_total", "connected_clients",
                "auth_failures_total", "subscribers", "tick_lag_ms"):
        assert isinstance(info.get(key), int), (key, info.get(key))
    assert info["pending"] == 0, info
    assert info["cancelled_total"] >= 1, info
    assert info["version"], info


def check_cluster_key_lookup(r):
    # RedisCluster finds the key of a command from COMMAND (its CommandsParser):
    # first key, last key and step of each entry.
    from redis._parsers import CommandsParser

    parser = CommandsParser(r)
    for args, keys in [
        (("ADD", "order:1", "1000"), ["order:1"]),
        (("ADDAT", "order:2", "1800000000000", "REPLACE"), ["order:2"]),
        (("CANCEL", "order:3"), ["order:3"]),
        (("PTTL", "order:4"), ["order:4"]),
    ]:
        got = [k.decode() if isinstance(k, bytes) else k for k in parser.get_keys(r, *args)]
        assert got == keys, (args, got)
    assert parser.get_keys(r, "COUNT") is None
    assert parser.get_keys(r, "PING", "x") is None


def check_pubsub(r):
    p = r.pubsub()
    p.subscribe("fired")
    first = p.get_message(timeout=5)
    assert first is not None and first["type"] == "subscribe", first
    assert first["channel"] == b"fired", first

    r.execute_command("ADD", "py:fired", 0)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        message = p.get_message(timeout=1)
        if message is None:
            continue
        assert message["type"] == "message", message
        assert message["channel"] == b"fired", message
        assert message["data"] == b"py:fired", message
        break
    else:
        raise AssertionError("no 'fired' message for py:fired within 10 s")
    p.unsubscribe("fired")
    p.close()


def check_password_required(port, password):
    # Authentication errors are connection errors to redis-py, retried with
    # backoff by default; one attempt is enough here.
    once = redis.retry.Retry(redis.backoff.NoBackoff(), 0)
    try:
        redis.Redis(port=port, retry=once).execute_command("COUNT")
        raise AssertionError("COUNT without a password succeeded")
    except redis.exceptions.AuthenticationError as e:
        # HELLO 3 without AUTH on a protected server: Redis's NOAUTH text.
        assert "already authenticated" in str(e), repr(e)
    try:
        redis.Redis(port=port, password=password + "-wrong", retry=once).ping()
        raise AssertionError("a wrong password was accepted")
    except redis.exceptions.AuthenticationError as e:
        assert "invalid username-password pair" in str(e), repr(e)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--password")
    args = parser.parse_args()

    if args.password is None:
        r = redis.Redis(port=args.port)
    else:
        check_password_required(args.port, args.password)
        r = redis.Redis(port=args.port, password=args.password)
    check_commands(r)
    check_cluster_key_lookup(r)
    check_pubsub(r)
    r.close()
    print("ok", "redis-py", redis.__version__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
