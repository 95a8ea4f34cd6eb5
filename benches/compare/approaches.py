# Imported by run.py (python3 benches/compare/run.py)
"""The five ways to close unpaid orders, each set up the way its advocates describe it.

An approach owns its private servers (a redis-server on a free port in a temp dir, a table in
the run's own PostgreSQL database, the run's own RabbitMQ node, a timewheel server), and gives
the driver three calls: `create(orders)`, `pay(ids) -> accepted ids`, `reconnect()`. The closer
side lives in closers.py (`closer_kind`, `closer_conf()`), started and stopped by run.py.
`kill_timers()` / `restart_timers()` are the crash scenario: kill -9 of whatever holds the
timers. `measured()` lists the pids whose CPU and memory are the approach's cost.
"""

import os
import signal
import socket
import subprocess
import time

import pika
import psycopg
import redis

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEWHEEL = os.path.join(ROOT, "target", "release", "timewheel")


STARTED = []  # every server process started, so that the run can end them all


def start(args, **kw):
    proc = subprocess.Popen(args, **kw)
    STARTED.append(proc)
    return proc


def end_all():
    for p in STARTED:
        if p.poll() is None:
            p.kill()
            p.wait()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=60.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


class RedisServer:
    """A private redis-server with the journal settings every approach gets: AOF, fsync every
    second (the usual production setting), no RDB snapshots."""

    def __init__(self, tmp, *extra):
        self.dir = os.path.join(tmp, f"redis-{free_port()}")
        os.makedirs(self.dir)
        self.port = free_port()
        self.args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                     "--dir", self.dir, "--appendonly", "yes", "--appendfsync", "everysec",
                     "--save", "", *extra]
        self.start()

    def start(self):
        self.proc = start(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        while True:  # after a restart, wait until the AOF is loaded
            try:
                redis.Redis(port=self.port).ping()
                return
            except redis.BusyLoadingError:
                time.sleep(0.05)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class RabbitNode:
    """The run's own RabbitMQ node (rabbitmq-server with its own name, ports and data dir), so
    that it can be killed for the crash scenario and its CPU and memory are ours alone."""

    def __init__(self, tmp):
        self.dir = os.path.join(tmp, "rabbit")
        os.makedirs(self.dir)
        self.port = free_port()
        with open(os.path.join(self.dir, "plugins"), "w") as f:
            f.write("[].\n")
        open(os.path.join(self.dir, "rabbitmq.conf"), "w").close()
        self.env = dict(os.environ,
                        RABBITMQ_NODENAME=f"twcompare{self.port}@localhost",
                        RABBITMQ_NODE_PORT=str(self.port),
                        RABBITMQ_DIST_PORT=str(free_port()),
                        RABBITMQ_MNESIA_BASE=os.path.join(self.dir, "mnesia"),
                        RABBITMQ_LOG_BASE=os.path.join(self.dir, "log"),
                        RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(self.dir, "plugins"),
                        RABBITMQ_CONFIG_FILE=os.path.join(self.dir, "rabbitmq"),
                        RABBITMQ_PID_FILE=os.path.join(self.dir, "pid"))
        self.start()

    def start(self):
        self.proc = start(["/usr/lib/rabbitmq/bin/rabbitmq-server"], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        wait_port(self.port, timeout=180)
        self.pid = int(open(self.env["RABBITMQ_PID_FILE"]).read())

    def kill(self):
        os.kill(self.pid, signal.SIGKILL)
        self.proc.wait()
        self.reap()

    def stop(self):
        os.kill(self.pid, signal.SIGTERM)
        self.proc.wait()
        self.reap()

    def reap(self):
        try:  # erl_child_setup and friends, if still there
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Approach:
    closer_kind = None
    poller_is_closer = False  # the closer process is part of the approach (cron, sorted set)
    crash_kills = "the server"
    create_rate = 20_000  # orders/s the driver sustains (flash sale lead time), conservative
    interval = 0  # a poller's period: the run waits this much longer for the last orders

    def __init__(self, label, setting, usual):
        self.label, self.setting, self.usual = label, setting, usual
        self.key = f"{label} ({setting})"

    def start(self, ctx):
        self.ctx = ctx

    def measured(self):
        return []

    def stop(self):
        pass


class Cron(Approach):
    """PostgreSQL orders table polled by a cron job (closers.cron). The deadline index is
    partial (`WHERE status = 'pending'`) so a poll reads only what is still open."""
    closer_kind = "cron"
    poller_is_closer = True
    crash_kills = "the poller"
    create_rate = 10_000

    def __init__(self, interval, usual):
        super().__init__("cron poll of the orders table", f"every {fmt_s(interval)}", usual)
        self.interval = interval

    def start(self, ctx):
        super().start(ctx)
        self.db = psycopg.connect(ctx.dsn, autocommit=True)
        self.db.execute("DROP TABLE IF EXISTS orders")
        self.db.execute("CREATE TABLE orders (id bigint PRIMARY KEY, status text NOT NULL, "
                        "deadline timestamptz NOT NULL)")
        self.db.execute("CREATE INDEX orders_due ON orders (deadline) WHERE status = 'pending'")

    def reconnect(self):
        pass

    def create(self, orders):
        with self.db.cursor() as cur:
            cur.executemany("INSERT INTO orders VALUES (%s, 'pending', to_timestamp(%s)) "
                            "ON CONFLICT DO NOTHING", orders)

    def pay(self, ids):
        rows = self.db.execute("UPDATE orders SET status = 'paid' "
                               "WHERE id = ANY(%s) AND status = 'pending' RETURNING id",
                               (ids,)).fetchall()
        return [r[0] for r in rows]

    def closer_conf(self):
        return {"dsn": self.ctx.dsn, "interval": self.interval}

    def stop(self):
        self.db.close()


class RedisBacked(Approach):
    """Common part of the approaches whose timers live in a private redis-server."""
    redis_args = ()

    def start(self, ctx):
        super().start(ctx)
        self.server = RedisServer(ctx.tmp, *self.redis_args)
        self.reconnect()

    def reconnect(self):
        self.r = redis.Redis(port=self.server.port, protocol=2)

    def pipe(self, cmd, args):
        p = self.r.pipeline(transaction=False)
        for a in args:
            p.execute_command(cmd, *a)
        return p.execute()

    def kill_timers(self):
        self.server.kill()

    def restart_timers(self):
        self.server.start()

    def measured(self):
        return [self.server.proc.pid]

    def stop(self):
        self.server.stop()


class KeyExpiry(RedisBacked):
    """`SET o:<id> 1 PXAT <deadline ms>`, closed on `__keyevent@0__:expired`, paid by `DEL`."""
    closer_kind = "keyspace"

    def __init__(self, hz, usual):
        super().__init__("Redis key-expiry notifications", f"hz {hz}", usual)
        self.redis_args = ("--notify-keyspace-events", "Ex", "--hz", str(hz))

    def create(self, orders):
        self.pipe("SET", [(f"o:{i}", 1, "PXAT", int(d * 1000)) for i, d in orders])

    def pay(self, ids):
        return [i for i, n in zip(ids, self.pipe("DEL", [(f"o:{i}",) for i in ids])) if n]

    def closer_conf(self):
        return {"port": self.server.port}


class SortedSet(RedisBacked):
    """`ZADD orders <deadline ms> <id>`, polled by closers.zset, paid by `ZREM`."""
    closer_kind = "zset"
    poller_is_closer = True

    def __init__(self, interval, usual):
        super().__init__("Redis sorted set + poller", f"every {fmt_s(interval)}", usual)
        self.interval = interval

    def create(self, orders):
        self.pipe("ZADD", [("orders", int(d * 1000), i) for i, d in orders])

    def pay(self, ids):
        return [i for i, n in zip(ids, self.pipe("ZREM", [("orders", i) for i in ids])) if n]

    def closer_conf(self):
        return {"port": self.server.port, "interval": self.interval}


class Rabbit(Approach):
    """Per-message TTL on a queue without consumers, dead-lettered to `close` (closers.rabbit).
    Durable queues, persistent messages, each batch published in a transaction: without it
    (or publisher confirms), a kill -9 of the broker loses messages it had accepted. Payment updates the order's status in PostgreSQL;
    the closer skips orders that are no longer pending. With `buckets`, each delay rounded up
    to the second has its own queue with a queue TTL, so a queue's head is always the next to
    expire (with one queue, a message expires only once it reaches the head)."""
    closer_kind = "rabbit"
    crash_kills = "the broker"
    create_rate = 3_000

    def __init__(self, buckets, usual):
        setting = "one queue per 1-s delay bucket" if buckets else "one queue, as is"
        super().__init__("RabbitMQ TTL + dead-letter exchange", setting, usual)
        self.buckets = buckets

    def start(self, ctx):
        super().start(ctx)
        self.db = psycopg.connect(ctx.dsn, autocommit=True)
        self.db.execute("DROP TABLE IF EXISTS orders")
        self.db.execute("CREATE TABLE orders (id bigint PRIMARY KEY, status text NOT NULL)")
        self.node = ctx.rabbit()
        self.queues = {"close"}  # every queue this run declared, deleted at stop
        self.reconnect()
        self.ch.queue_declare("close", durable=True)

    def reconnect(self):
        self.mq = pika.BlockingConnection(pika.ConnectionParameters(port=self.node.port,
                                                                    heartbeat=0))
        self.ch = self.mq.channel()
        self.ch.tx_select()  # commit-ok once the batch is safe on the broker's disk
        self.declared = set()

    def queue(self, ttl_ms):
        name = f"delay.{ttl_ms // 1000}" if self.buckets else "delay"
        if name not in self.declared:
            args = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "close"}
            if self.buckets:
                args["x-message-ttl"] = ttl_ms
            self.ch.queue_declare(name, durable=True, arguments=args)
            self.declared.add(name)
            self.queues.add(name)
        return name

    def create(self, orders):
        with self.db.cursor() as cur:
            cur.executemany("INSERT INTO orders VALUES (%s, 'pending') ON CONFLICT DO NOTHING",
                            [(i,) for i, _ in orders])
        now = time.time()
        for i, d in orders:
            ms = max(0, int((d - now) * 1000) + 1)
            if self.buckets:
                ms = -(-ms // 1000) * 1000
                props = pika.BasicProperties(delivery_mode=2)
            else:
                props = pika.BasicProperties(delivery_mode=2, expiration=str(ms))
            self.ch.basic_publish("", self.queue(ms), str(i).encode(), props)
        self.ch.tx_commit()

    def pay(self, ids):
        rows = self.db.execute("UPDATE orders SET status = 'paid' "
                               "WHERE id = ANY(%s) AND status = 'pending' RETURNING id",
                               (ids,)).fetchall()
        return [r[0] for r in rows]

    def closer_conf(self):
        return {"dsn": self.ctx.dsn, "port": self.node.port}

    def kill_timers(self):
        self.node.kill()

    def restart_timers(self):
        self.node.start()

    def measured(self):
        return [self.node.pid]

    def stop(self):
        try:
            for q in self.queues:
                self.ch.queue_delete(q)
            self.mq.close()
        except Exception:  # noqa: BLE001 - cleanup only
            pass
        self.db.close()


class Timewheel(Approach):
    """`ADDAT o:<id> <deadline ms>` / `CANCEL o:<id>` over RESP; journal in a private
    redis-server (AOF, fsync every second); fired orders read from `--stream` with XREADGROUP
    (closers.stream) or POSTed to `--webhook` (closers.webhook)."""
    crash_kills = "timewheel"

    def __init__(self, sink, tick_ms, usual):
        super().__init__("timewheel", f"{sink}, tick {tick_ms} ms", usual)
        self.sink, self.tick_ms = sink, tick_ms
        self.closer_kind = sink

    def start(self, ctx):
        super().start(ctx)
        self.journal = RedisServer(ctx.tmp)
        self.port = free_port()
        self.hook_port = free_port()
        sink = (["--stream", "orders:closed"] if self.sink == "stream"
                else ["--webhook", f"http://127.0.0.1:{self.hook_port}/close"])
        self.args = [TIMEWHEEL, "serve", "--bind", f"127.0.0.1:{self.port}",
                     "--redis", f"redis://127.0.0.1:{self.journal.port}/0",
                     "--tick-ms", str(self.tick_ms), *sink]
        self.log = open(os.path.join(ctx.tmp, f"timewheel-{self.port}.log"), "a")
        self.restart_timers()
        self.reconnect()

    def restart_timers(self):
        self.proc = start(self.args, stdout=self.log, stderr=self.log)
        wait_port(self.port)

    def kill_timers(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def reconnect(self):
        self.r = redis.Redis(port=self.port, protocol=2)

    def pipe(self, cmd, args):
        p = self.r.pipeline(transaction=False)
        for a in args:
            p.execute_command(cmd, *a)
        return p.execute(raise_on_error=False)

    def create(self, orders):
        for reply in self.pipe("ADDAT", [(f"o:{i}", int(d * 1000)) for i, d in orders]):
            # EXISTS: a retry after a crash of an ADDAT that the journal already held.
            if isinstance(reply, Exception) and "EXISTS" not in str(reply):
                raise reply

    def pay(self, ids):
        replies = self.pipe("CANCEL", [(f"o:{i}",) for i in ids])
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return [i for i, n in zip(ids, replies) if n]

    def closer_conf(self):
        return {"port": self.journal.port, "stream": "orders:closed"} if self.sink == "stream" \
            else {"port": self.hook_port}

    def measured(self):
        return [self.proc.pid, self.journal.proc.pid]

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        self.journal.stop()
        self.log.close()


def fmt_s(seconds):
    return f"{seconds:g} s" if seconds >= 1 else f"{seconds * 1000:g} ms"


def all_approaches():
    """Every approach with its usual and its favourable setting, in report order."""
    return [
        Cron(60, usual=True), Cron(1, usual=False),
        KeyExpiry(10, usual=True), KeyExpiry(100, usual=False),
        SortedSet(10, usual=True), SortedSet(0.1, usual=False),
        Rabbit(False, usual=True), Rabbit(True, usual=False),
        Timewheel("stream", 1000, usual=True), Timewheel("stream", 100, usual=False),
        Timewheel("webhook", 1000, usual=True), Timewheel("webhook", 100, usual=False),
    ]

