"""timewheel from Python with redis-py: ADD, PTTL, CANCEL, the default (MULTI/EXEC) pipeline,
SUBSCRIBE fired, and a consumer of the journal's Redis Stream.

Run by tests/clients/main.rs (cargo test --test clients); by hand:
    python3 tests/clients/python/check.py TIMEWHEEL_PORT REDIS_PORT STREAM
Prints "ok" and exits 0 when every check passed.
"""

import sys
import time

import redis

tw_port, redis_port, stream = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
now = int(time.time() * 1000)
tw = redis.Redis(port=tw_port)

# ADD, PTTL, CANCEL: a deadline in Unix ms, the time left, cancelled.
deadline = tw.execute_command("ADD", "py:1", 60000)
assert isinstance(deadline, int) and deadline >= now + 59000, deadline
assert 0 < tw.execute_command("PTTL", "py:1") <= 60000
assert tw.execute_command("CANCEL", "py:1") == 1
assert tw.execute_command("CANCEL", "py:1") == 0

# The default pipeline: MULTI ... EXEC, replies in order.
pipe = tw.pipeline()
pipe.execute_command("ADD", "py:p1", 60000)
pipe.execute_command("ADD", "py:p2", 60000)
pipe.execute_command("CANCEL", "py:p1")
pipe.execute_command("COUNT")
replies = pipe.execute()
assert isinstance(replies[0], int) and isinstance(replies[1], int), replies
assert replies[2:] == [1, 1], replies

# A pipeline without MULTI/EXEC.
pipe = tw.pipeline(transaction=False)
pipe.execute_command("CANCEL", "py:p2")
pipe.execute_command("COUNT")
assert pipe.execute() == [1, 0]

# SUBSCRIBE fired, then an order due now.
p = tw.pubsub()
p.subscribe("fired")
assert p.get_message(timeout=5)["type"] == "subscribe"
tw.execute_command("ADD", "py:fired", 0)
message = p.get_message(timeout=10)
assert message is not None and message["data"] == b"py:fired", message
p.close()

# The stream consumer: the journal's Redis Stream, read with a consumer group.
r = redis.Redis(port=redis_port, decode_responses=True)
try:
    r.xgroup_create(stream, "shop", id="0", mkstream=True)
except redis.ResponseError:
    pass  # the group exists already
closed = None
end = time.monotonic() + 20
while closed is None and time.monotonic() < end:
    for _, entries in r.xreadgroup("shop", "py-worker", {stream: ">"}, count=100, block=1000):
        for entry_id, order in entries:
            if order["id"] == "py:fired":
                closed = order
            r.xack(stream, "shop", entry_id)
assert closed is not None and int(closed["deadline_ms"]) > 0, closed
assert r.xpending(stream, "shop")["pending"] == 0
print("ok")
