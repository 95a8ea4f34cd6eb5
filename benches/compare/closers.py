# Started by run.py as `python closers.py KIND 'JSON'`; not meant to be run by hand.
"""The consumer side of each approach, one process each, so that it can be killed and restarted.

Each one receives due orders the way its approach delivers them, and "closes" them by writing
`C <id> <unix time>` to stdout (flushed after every batch, before acknowledging the batch).
run.py reads those lines: this is the one closer and the one clock for every approach.
A process that talks to PostgreSQL first writes `B <backend pid>` so its backend's CPU counts.
Every loop reconnects after an error: the server it talks to may be killed mid-run.
"""

import json
import sys
import threading
import time

OUT = sys.stdout
OUT_LOCK = threading.Lock()


def emit(ids, tag="C"):
    now = time.time()
    with OUT_LOCK:
        OUT.write("".join(f"{tag} {i} {now:.6f}\n" for i in ids))
        OUT.flush()


def retrying(loop):
    """Run `loop` forever; on any error (server killed, connection reset) wait and start over."""
    while True:
        try:
            loop()
        except Exception as e:  # noqa: BLE001 - any failure of the server means: reconnect
            print(f"closer: {type(e).__name__}: {e}; reconnecting", file=sys.stderr, flush=True)
            time.sleep(0.1)


def pg_connect(dsn):
    import psycopg
    conn = psycopg.connect(dsn, autocommit=True)
    emit([conn.execute("SELECT pg_backend_pid()").fetchone()[0]], tag="B")
    return conn


def cron(c):
    """The cron job: on a fixed schedule, close every pending order whose deadline passed."""
    def loop():
        conn = pg_connect(c["dsn"])
        next_run = time.time()
        while True:
            rows = conn.execute(
                "UPDATE orders SET status = 'closed' "
                "WHERE status = 'pending' AND deadline <= now() RETURNING id").fetchall()
            emit(r[0] for r in rows)
            next_run += c["interval"]
            time.sleep(max(0.0, next_run - time.time()))
    retrying(loop)


def zset(c):
    """Sorted-set poller: every interval, take what is due (1000 at a time) and ZREM it; the
    ZREM that returns 1 owns the order (a payment's ZREM may have won instead)."""
    import redis

    def loop():
        r = redis.Redis(port=c["port"], protocol=2)
        while True:
            started = time.time()
            while True:
                ids = r.zrangebyscore("orders", "-inf", time.time() * 1000, start=0, num=1000)
                if not ids:
                    break
                p = r.pipeline(transaction=False)
                for i in ids:
                    p.zrem("orders", i)
                emit(i.decode() for i, won in zip(ids, p.execute()) if won)
                if len(ids) < 1000:
                    break
            time.sleep(max(0.0, started + c["interval"] - time.time()))
    retrying(loop)


def keyspace(c):
    """Listener on `__keyevent@0__:expired`: each expired `o:<id>` key is an order to close."""
    import redis

    def loop():
        r = redis.Redis(port=c["port"], protocol=2)
        p = r.pubsub(ignore_subscribe_messages=True)
        p.subscribe("__keyevent@0__:expired")
        while True:
            m = p.get_message(timeout=1.0)
            batch = []
            while m:
                batch.append(m["data"].decode()[2:])
                m = p.get_message(timeout=0) if len(batch) < 1000 else None
            if batch:
                emit(batch)
    retrying(loop)


def rabbit(c):
    """Consumer of the dead-letter (close) queue. Payment cannot take a message back, so each
    batch is closed with one status-checked UPDATE; ids it does not return were paid (or already
    closed by an earlier delivery) and are skipped. Acks after the close, so at least once."""
    import pika

    def loop():
        conn = pg_connect(c["dsn"])
        mq = pika.BlockingConnection(pika.ConnectionParameters(port=c["port"], heartbeat=0))
        ch = mq.channel()
        ch.basic_qos(prefetch_count=1000)
        batch, last_tag = [], None
        for method, _props, body in ch.consume("close", inactivity_timeout=0.02):
            if method is not None:
                batch.append(int(body))
                last_tag = method.delivery_tag
            if batch and (method is None or len(batch) >= 500):
                rows = conn.execute(
                    "UPDATE orders SET status = 'closed' "
                    "WHERE id = ANY(%s) AND status = 'pending' RETURNING id", (batch,)).fetchall()
                emit(r[0] for r in rows)
                ch.basic_ack(last_tag, multiple=True)
                batch = []
    retrying(loop)


def stream(c):
    """timewheel --stream consumer: XREADGROUP its own pending entries first, then new ones."""
    import redis

    def loop():
        r = redis.Redis(port=c["port"], protocol=2)
        try:
            r.xgroup_create(c["stream"], "shop", id="0", mkstream=True)
        except redis.ResponseError:
            pass  # BUSYGROUP: the group exists from before a restart
        cursor = "0"  # our pending entries (delivered, not acked) first
        while True:
            got = r.xreadgroup("shop", "closer", {c["stream"]: cursor}, count=1000, block=100)
            entries = got[0][1] if got else []
            if cursor == "0" and not entries:
                cursor = ">"
                continue
            if entries:
                emit(f[b"id"].decode()[2:] for _eid, f in entries)
                r.xack(c["stream"], "shop", *[eid for eid, _f in entries])
    retrying(loop)


def webhook(c):
    """The endpoint timewheel --webhook POSTs each fired order to; 200 means closed."""
    import http.server

    class Close(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the timewheel client expects

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            emit([json.loads(body)["id"][2:]])
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        request_queue_size = 1024  # timewheel opens up to --workers (64) connections at once
        daemon_threads = True

    server = Server(("127.0.0.1", c["port"]), Close)
    server.serve_forever()


if __name__ == "__main__":
    globals()[sys.argv[1]](json.loads(sys.argv[2]))
