#!/usr/bin/env python3
"""redis-py's RedisCluster, unmodified, against timewheel nodes in cluster mode.

Run by `cargo test --test cluster` (tests/cluster.rs starts the nodes):
    python3 tests/python/cluster_check.py --port PORT --count N

RedisCluster reads CLUSTER SLOTS for the topology and COMMAND for where the
key of ADD, ADDAT, CANCEL and PTTL is, then sends each id to its owner by
itself. Ids py:0 .. py:N-1 are added; every third is cancelled. Prints "ok".
"""
import argparse
import time

from redis.cluster import RedisCluster


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()

    rc = RedisCluster(host="127.0.0.1", port=args.port)
    nodes = {n.port for n in rc.get_primaries()}
    assert len(nodes) >= 2, f"expected several primaries, got {nodes}"
    now_ms = int(time.time() * 1000)
    for i in range(args.count):
        oid = f"py:{i}"
        if i % 2:
            deadline = rc.execute_command("ADD", oid, 600000)
        else:
            deadline = rc.execute_command("ADDAT", oid, now_ms + 600000)
        assert deadline >= now_ms + 600000, (oid, deadline)
        # The client picked the owner itself, from the slot map.
        owner = rc.get_node_from_key(oid)
        assert owner.port in nodes, (oid, owner)
    for i in range(args.count):
        oid = f"py:{i}"
        left = rc.execute_command("PTTL", oid)
        assert 0 < left <= 600000, (oid, left)
        if i % 3 == 0:
            assert rc.execute_command("CANCEL", oid) == 1, oid
    for i in range(0, args.count, 3):
        assert rc.execute_command("PTTL", f"py:{i}") == -2
    rc.close()
    print("ok")


if __name__ == "__main__":
    main()
