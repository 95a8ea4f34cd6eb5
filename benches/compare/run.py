#!/usr/bin/env python3
# python3 benches/compare/run.py [--quick] [--only SUBSTRING] [--scenario SUBSTRING] [--orders N] [--no-million] [--report-only]
"""Runs the same orders through every way of closing unpaid orders and writes
docs/comparison.md with its plots in docs/img/.

For each approach (approaches.py) and scenario (SCENARIOS below), one run:
  1. start the approach's private servers and its closer (closers.py);
  2. the driver creates and pays orders on the plan's schedule (workload.py), retrying what
     fails while a server is down;
  3. an event thread stops the closer or kills the timers' holder if the scenario says so;
  4. wait until every unpaid order is closed or the scenario's time limit passes;
  5. tally (workload.tally raises if the bookkeeping does not add up) and sample CPU/memory.
Needs: redis-server, PostgreSQL on 127.0.0.1:5432 (trust auth), rabbitmq-server (a private
node is started), `cargo build --release`. Installs requirements.txt into target/compare-venv.
"""

import os
import subprocess
import sys
import venv

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VENV = os.path.join(ROOT, "target", "compare-venv")


def ensure_packages():
    """Re-run this script in a venv with the pinned packages (created on first use)."""
    try:
        import matplotlib, pika, psycopg, redis  # noqa: F401,E401
        return
    except ImportError:
        pass
    python = os.path.join(VENV, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        sys.exit("the venv is missing a package; delete target/compare-venv and run again")
    if not os.path.exists(python):
        venv.create(VENV, with_pip=True)
    subprocess.check_call([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                           "-r", os.path.join(HERE, "requirements.txt")])
    os.execv(python, [python, *sys.argv])


ensure_packages()

import argparse  # noqa: E402
import json  # noqa: E402
import pickle  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import signal  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import psycopg  # noqa: E402

import approaches  # noqa: E402
import report  # noqa: E402
import workload  # noqa: E402

CLOSERS = os.path.join(HERE, "closers.py")
RESULTS = os.path.join(ROOT, "target", "compare-results.pickle")  # for --report-only


def scenarios(quick, orders):
    """(name, plan factory, limit_s after the last deadline). Full size follows the issue;
    --quick shrinks orders and time so that the whole run takes under 3 minutes."""
    if quick:
        n = orders or 1000
        short = dict(n=n, duration_s=3, window_min_s=1, window_max_s=3, paid_fraction=0.8)
        return [
            ("steady", lambda a: workload.plan_steady(**short, seed=1), 3),
            ("flash sale", lambda a: workload.plan_flash(n * 2, lead_s(a, n * 2, 1), seed=2), 30),
            ("consumer outage", lambda a: workload.plan_steady(
                **short, seed=3, event=("outage", 2, 2)), 4),
            ("timer service crash", lambda a: workload.plan_steady(
                **short, seed=4, event=("crash", 2, 1)), 4),
        ]
    n = orders or 100_000
    # The event scenarios use a shorter window range (5-15 s over 30 s) so that the outage and
    # the crash fall in the middle of a dense stream of deadlines.
    short = dict(n=n, duration_s=30, window_min_s=5, window_max_s=15, paid_fraction=0.8)
    return [
        ("steady", lambda a: workload.plan_steady(n, 60, 5, 65, 0.8, seed=1), 20),
        ("flash sale", lambda a: workload.plan_flash(n, lead_s(a, n), seed=2), 600),
        ("consumer outage", lambda a: workload.plan_steady(
            **short, seed=3, event=("outage", 15, 10)), 20),
        ("timer service crash", lambda a: workload.plan_steady(
            **short, seed=4, event=("crash", 15, 5)), 20),
    ]


def lead_s(approach, n, margin_s=3):
    """Flash sale: time to create every order before the first falls due, from a conservative
    guess of the driver's creation rate for the approach (the report flags an overrun)."""
    return margin_s + n / approach.create_rate


class Context:
    """What all runs share: a temp dir, the private PostgreSQL database, the RabbitMQ node."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="twcompare-")
        self.dbname = f"twcompare_{os.getpid()}"
        admin = "host=127.0.0.1 user=postgres dbname=postgres"
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f"CREATE DATABASE {self.dbname}")
        self.dsn = f"host=127.0.0.1 user=postgres dbname={self.dbname}"
        self.node = None

    def rabbit(self):
        if self.node is None:
            self.node = approaches.RabbitNode(self.tmp)
        return self.node

    def close(self):
        if self.node:
            self.node.stop()
        approaches.end_all()
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres",
                             autocommit=True) as c:
            c.execute(f"DROP DATABASE IF EXISTS {self.dbname} WITH (FORCE)")
        subprocess.call(["rm", "-rf", self.tmp])


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_sample(pid):
    """(cpu seconds, start time in ticks since boot, VmHWM kB, VmRSS kB) or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/status") as f:
            mem = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f)
                   if k in ("VmHWM", "VmRSS")}
    except (FileNotFoundError, ProcessLookupError):
        return None
    return ((int(fields[11]) + int(fields[12])) / CLK_TCK, int(fields[19]),
            mem.get("VmHWM", 0), mem.get("VmRSS", 0))


class Sampler(threading.Thread):
    """Samples the approach's processes every 0.25 s. A process started during the run counts
    from zero CPU and its VmHWM; one that was already running (the RabbitMQ node) counts from
    its first sample and its VmRSS. Peak memory: the largest sum over one sample."""

    def __init__(self, pids):
        super().__init__(daemon=True)
        self.pids = pids  # callable -> current pids
        with open("/proc/uptime") as f:
            self.since = float(f.read().split()[0]) * CLK_TCK - CLK_TCK
        self.first, self.last, self.peak_kb = {}, {}, 0
        self.done = threading.Event()

    def sample(self):
        total = 0
        for pid in set(self.pids()):
            s = proc_sample(pid)
            if s is None:
                continue
            cpu, start, hwm, rss = s
            fresh = start >= self.since
            self.first.setdefault(pid, 0.0 if fresh else cpu)
            self.last[pid] = cpu
            total += hwm if fresh else rss
        self.peak_kb = max(self.peak_kb, total)

    def run(self):
        while not self.done.wait(0.25):
            self.sample()

    def stop(self):
        self.done.set()
        self.join()
        self.sample()
        return sum(self.last[p] - self.first[p] for p in self.last), self.peak_kb / 1024


class Closer:
    """The closer process of one approach (closers.py), and the records it writes."""

    def __init__(self, approach, tmp):
        self.approach, self.log = approach, open(os.path.join(tmp, "closer.log"), "a")
        self.log_from = self.log.tell()  # this run's part of the shared log
        self.closes, self.closed_ids, self.backends = [], set(), set()
        self.proc = None

    def start(self):
        self.proc = approaches.start(
            [sys.executable, CLOSERS, self.approach.closer_kind,
             json.dumps(self.approach.closer_conf())],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        threading.Thread(target=self.read, args=(self.proc.stdout,), daemon=True).start()
        return self

    def read(self, out):
        for line in out:
            tag, oid, t = line.split()
            if tag == "B":
                self.backends.add(int(oid))
            else:
                self.closes.append((int(oid), float(t)))
                self.closed_ids.add(int(oid))

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        self.kill()
        self.log.close()
        with open(self.log.name) as f:
            f.seek(self.log_from)
            lines = f.readlines()
        for line in lines:
            if "Error" in line:  # the closer's own trouble is worth seeing, once
                print("    closer:", line.strip(), flush=True)
                break


def drive(approach, plan, t0, deadline, paid, created, stats):
    """Create and pay on the plan's schedule, in batches; whatever fails (a server is down) is
    retried every 100 ms until it succeeds. A payment waits for its order's creation."""
    events = sorted([(plan.create_at[i], 0, i) for i in range(plan.n)]
                    + [(p, 1, i) for i, p in enumerate(plan.pay_at) if p is not None])
    to_create, to_pay, k = [], [], 0
    while k < len(events) or to_create or to_pay:
        now = time.time() - t0
        while k < len(events) and events[k][0] <= now:
            _t, kind, i = events[k]
            if kind == 0:
                to_create.append((i, deadline[i]))
            else:
                to_pay.append(i)
            stats["lag"] = max(stats["lag"], now - events[k][0])
            k += 1
        try:
            while to_create:
                batch = to_create[:1000]
                approach.create(batch)
                created.update(i for i, _ in batch)
                del to_create[:1000]
            ready = [i for i in to_pay if i in created]
            if ready:
                accepted = approach.pay(ready)
                now = time.time()
                paid.update((i, now) for i in accepted)
                to_pay = [i for i in to_pay if i not in created]
        except Exception as e:  # noqa: BLE001 - the server is down: retry the same batch
            stats["errors"] += 1
            stats["last_error"] = f"{type(e).__name__}: {e}"[:200]
            time.sleep(0.1)
            try:
                approach.reconnect()
            except Exception:  # noqa: BLE001
                pass
            continue
        if k < len(events):
            time.sleep(max(0.0, min(0.01, events[k][0] - (time.time() - t0))))
        elif to_pay:
            time.sleep(0.01)
    stats["created_done"] = time.time() - t0


def run_one(approach, name, plan, limit_s, ctx, settle_s):
    """One approach through one scenario; returns its Tally and the raw numbers for plots."""
    approach.start(ctx)
    try:
        return run_started(approach, name, plan, limit_s, ctx, settle_s)
    finally:
        approach.stop()


def run_started(approach, name, plan, limit_s, ctx, settle_s):
    closer = Closer(approach, ctx.tmp).start()
    try:
        return run_with_closer(approach, closer, name, plan, limit_s, settle_s)
    finally:
        closer.stop()


def run_with_closer(approach, closer, name, plan, limit_s, settle_s):
    sampler = Sampler(lambda: approach.measured() + list(closer.backends)
                      + ([closer.proc.pid] if approach.poller_is_closer else []))
    sampler.start()
    time.sleep(0.3)  # the closer connects and subscribes
    t0 = time.time()
    deadline = {i: t0 + c + w for i, (c, w) in enumerate(zip(plan.create_at, plan.window))}
    paid, created = {}, set()  # paid: id -> when the payment was accepted
    stats = {"lag": 0.0, "errors": 0, "last_error": None}
    event = threading.Thread(target=run_event, args=(approach, closer, plan.event, t0, stats),
                             daemon=True)
    event.start()
    drive(approach, plan, t0, deadline, paid, created, stats)
    event.join()
    unpaid = set(deadline) - paid.keys()
    # Orders created late (while a server was down) get the same limit after their creation.
    stop_at = max(max(deadline.values()), time.time()) + limit_s + approach.interval
    while time.time() < stop_at:
        if unpaid <= closer.closed_ids:
            time.sleep(settle_s)  # a late duplicate still counts
            break
        time.sleep(0.5)
    ended = time.time()
    cpu_s, peak_mb = sampler.stop()
    closes = [c for c in closer.closes if c[1] <= ended]
    tally = workload.tally(deadline, set(paid), closes)
    wrong = [(i, paid[i] - t0, deadline[i] - t0, t - t0) for i, t in closes if i in paid]
    lost = set(deadline) - paid.keys() - {i for i, _ in closes}
    ev = stats.get("event_at")
    lost_by_creation = None
    if ev and lost:  # was a lost order created before, during or after the disruption?
        created_at = [plan.create_at[i] for i in lost]
        lost_by_creation = (sum(1 for c in created_at if c < ev[0]),
                            sum(1 for c in created_at if ev[0] <= c < ev[1]),
                            sum(1 for c in created_at if c >= ev[1]))
    first_due = min(deadline.values())
    return {
        "approach": approach.label, "setting": approach.setting, "usual": approach.usual,
        "scenario": name, "tally": tally, "cpu_s": cpu_s, "peak_mb": peak_mb,
        "driver_lag_s": stats["lag"], "driver_errors": stats["errors"],
        "last_error": stats["last_error"], "created_s": stats["created_done"],
        "wall_s": ended - t0, "stopped_early": bool(unpaid - {i for i, _ in closes}),
        "close_times": sorted(t - first_due for _i, t in closes) if name == "flash sale" else [],
        "crash_kills": approach.crash_kills, "restart_s": stats.get("restart_s"),
        "after_last_deadline_s": ended - max(deadline.values()),
        "first_due_s": first_due - t0, "wrong_detail": wrong[:5], "event_at": ev, "lost_by_creation": lost_by_creation,
    }


def run_event(approach, closer, event, t0, stats):
    """The scenario's disruption: stop the closer, or kill -9 what holds the timers. Records
    how long the restart took until the server accepted connections again."""
    if not event:
        return
    kind, at, duration = event
    time.sleep(max(0.0, t0 + at - time.time()))
    stats["event_at"] = (time.time() - t0, time.time() - t0 + duration)
    if kind == "outage" or approach.crash_kills == "the poller":
        closer.kill()
        time.sleep(duration)
        closer.start()
    else:
        approach.kill_timers()
        time.sleep(duration)
        started = time.time()
        approach.restart_timers()
        stats["restart_s"] = time.time() - started


def machine():
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
        except OSError:
            return "?"
    return {
        "nproc": sh("nproc"),
        "cpu": sh("lscpu | sed -n 's/^Model name: *//p'"),
        "ram": sh("free -g | awk '/^Mem:/ {print $2 \" GiB\"}'"),
        "kernel": platform.release(),
        "load": sh("cut -d' ' -f1-3 /proc/loadavg"),
        "redis": sh("redis-server --version | grep -o 'v=[0-9.]*' | cut -c3-"),
        "postgres": sh("psql -h 127.0.0.1 -U postgres -Atc 'SHOW server_version'"),
        "rabbitmq": sh("dpkg-query -W -f='${Version}' rabbitmq-server"),
        "python": platform.python_version(),
        "commit": sh(f"git -C {ROOT} rev-parse --short HEAD"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="favourable settings only, ~1,000 orders, seconds-long scenarios")
    ap.add_argument("--only", help="run only approaches whose 'label (setting)' contains this")
    ap.add_argument("--docs", default=os.path.join(ROOT, "docs"), help=argparse.SUPPRESS)
    ap.add_argument("--report-only", action="store_true",
                    help=f"rewrite the page from the last run's results ({RESULTS})")
    ap.add_argument("--scenario", help="run only scenarios whose name contains this")
    ap.add_argument("--orders", type=int, help="orders per scenario (default 100000)")
    ap.add_argument("--no-million", action="store_true",
                    help="skip the 1M flash sale (favourable settings that closed 100k in time)")
    args = ap.parse_args()
    if args.report_only:
        with open(RESULTS, "rb") as f:
            report.write(args.docs, **pickle.load(f))
        return
    # Measure the timewheel of this checkout (a no-op when it is built already).
    subprocess.check_call(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    command = shlex.join(["python3", "benches/compare/run.py", *sys.argv[1:]])
    chosen = [a for a in approaches.all_approaches()
              if (not args.quick or not a.usual) and (not args.only or args.only in a.key)]
    started, where = time.time(), machine()  # the commit measured is the one at the start
    ctx = Context()
    results = []
    settle_s = 0.3 if args.quick else 2.0
    try:
        for name, make_plan, limit_s in scenarios(args.quick, args.orders):
            if args.scenario and args.scenario not in name:
                continue
            for a in chosen:
                plan = make_plan(a)
                print(f"{name}: {a.key}, {plan.n} orders ...", flush=True)
                r = run_one(a, name, plan, limit_s, ctx, settle_s)
                results.append(r)
                print("   ", report.one_line(r), flush=True)
                # 1M: favourable settings that closed all 100k, none more than 60 s late.
                if name == "flash sale" and not args.quick and not args.no_million \
                        and not a.usual and r["tally"].lost == 0 \
                        and r["tally"].max is not None and r["tally"].max < 60:
                    plan = workload.plan_flash(1_000_000, lead_s(a, 1_000_000), seed=5)
                    print(f"{name}: {a.key}, {plan.n} orders ...", flush=True)
                    r = run_one(a, "flash sale 1M", plan, limit_s, ctx, settle_s)
                    results.append(r)
                    print("   ", report.one_line(r), flush=True)
            # After each scenario, so that an interrupted run still leaves what it measured.
            saved = dict(results=results, machine=dict(where, load=machine()["load"]),
                         command=command,
                         elapsed_s=time.time() - started, quick=args.quick)
            with open(RESULTS, "wb") as f:
                pickle.dump(saved, f)
            report.write(args.docs, **saved)
    finally:
        ctx.close()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))  # still end the servers
    main()
