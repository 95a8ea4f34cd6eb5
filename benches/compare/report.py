# Imported by run.py (python3 benches/compare/run.py)
"""Writes docs/comparison.md and its plots (docs/img/compare-*.png) from the runs' results.

Every number in the page comes from `results`; the prose around the tables is fixed text that
describes the setup, never a result.
"""

import datetime
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

def color(r):
    """One colour per approach; timewheel's two sinks get two."""
    return "tab:green" if "webhook" in r["setting"] else COLORS[r["approach"]]


COLORS = {
    "cron poll of the orders table": "tab:brown",
    "Redis key-expiry notifications": "tab:red",
    "Redis sorted set + poller": "tab:orange",
    "RabbitMQ TTL + dead-letter exchange": "tab:purple",
    "timewheel": "tab:blue",
}


def secs(x):
    if x is None:
        return "–"
    if abs(x) < 1:
        return f"{x * 1000:.0f} ms"
    return f"{x:.1f} s" if abs(x) < 100 else f"{x:.0f} s"


def one_line(r):
    t = r["tally"]
    return (f"{t.within_1s:.1f}% within 1 s, p50 {secs(t.p50)}, p99 {secs(t.p99)}, "
            f"max {secs(t.max)}, lost {t.lost}, wrong {t.wrong}, twice {t.twice}, "
            f"cpu {r['cpu_s']:.1f} s, peak {r['peak_mb']:.0f} MB")


def table(rows):
    out = ["| approach | setting | closed within 1 s | lateness p50 | p99 | max | lost | "
           "paid but closed | closed twice | CPU s | peak MB |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        t = r["tally"]
        setting = r["setting"] + (" (usual)" if r["usual"] else " (favourable)")
        out.append(f"| {r['approach']} | {setting} | {t.within_1s:.1f}% | {secs(t.p50)} | "
                   f"{secs(t.p99)} | {secs(t.max)} | {t.lost:,} | {t.wrong:,} | {t.twice:,} | "
                   f"{r['cpu_s']:.1f} | {r['peak_mb']:.0f} |")
    return "\n".join(out)


def summary(by):
    """One line per approach and setting, one column per scenario: the headline numbers."""
    names = list(by)
    keys = []
    for rows in by.values():
        for r in rows:
            if (r["approach"], r["setting"]) not in keys:
                keys.append((r["approach"], r["setting"]))
    cell = {(r["approach"], r["setting"], n): r for n, rows in by.items() for r in rows}
    out = ["## Summary\n",
           "Closed within 1 s of the deadline, as a share of the unpaid orders; lateness p99; "
           "unpaid orders lost. Details, costs and notes for each scenario follow.\n",
           "| approach | setting | " + " | ".join(names) + " |",
           "|---|---|" + "---:|" * len(names)]
    for a, s in keys:
        cells = []
        for n in names:
            r = cell.get((a, s, n))
            t = r and r["tally"]
            cells.append("" if r is None else
                         f"{t.within_1s:.1f}%, p99 {secs(t.p99)}"
                         + (f", **{t.lost:,} lost**" if t.lost else ""))
        out.append(f"| {a} | {s} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def notes(rows):
    """Facts of the run a reader needs to trust or discount a row."""
    out = []
    for r in rows:
        t, who = r["tally"], f"{r['approach']} ({r['setting']})"
        if r["stopped_early"]:
            out.append(f"- {who}: stopped {secs(r['after_last_deadline_s'])} after the last "
                       f"deadline with {t.lost:,} of {t.unpaid:,} unpaid orders not closed "
                       f"({100 * t.closed / max(1, t.unpaid):.1f}% closed).")
        if r.get("lost_by_creation"):
            before, during, after = r["lost_by_creation"]
            out.append(f"- {who}: of the lost orders, {before:,} were created before the "
                       f"{'kill' if r['scenario'].endswith('crash') else 'outage'}, {during:,} "
                       f"while it lasted (the timer was set once the server was back), "
                       f"{after:,} after.")
        if r.get("restart_s") is not None:
            out.append(f"- {who}: after the kill, {r['crash_kills']} accepted connections "
                       f"again {secs(r['restart_s'])} after its restart began.")
        for oid, paid_s, due_s, closed_s in r.get("wrong_detail", []):
            ev = r.get("event_at")
            when = (f"; the {r['scenario']} began at {ev[0]:.2f} s, restart at {ev[1]:.2f} s"
                    if ev else "")
            out.append(f"- {who}: order {oid} was paid (accepted at {paid_s:.2f} s into the run, "
                       f"deadline {due_s:.2f} s) and closed at {closed_s:.2f} s{when}.")
        if t.early:
            out.append(f"- {who}: {t.early:,} orders closed more than 5 ms before the deadline.")
        if r.get("first_due_s") is not None and r["created_s"] > r["first_due_s"]:
            out.append(f"- {who}: creating the orders took {secs(r['created_s'])}, "
                       f"{secs(r['created_s'] - r['first_due_s'])} past the first deadline.")
        if r["driver_errors"]:
            out.append(f"- {who}: the driver's calls failed {r['driver_errors']} times while "
                       f"the server was down and were retried (last: `{r['last_error']}`).")
        if r["driver_lag_s"] > 1 and not r["scenario"].startswith("flash"):
            out.append(f"- {who}: the driver fell up to {secs(r['driver_lag_s'])} behind its "
                       f"schedule (while a server was down, or it could not keep up); deadlines "
                       f"are fixed by the schedule, so any lag counts as lateness.")
    return "\n".join(out)


def cdf_plot(rows, path, title):
    fig, ax = plt.subplots(figsize=(10, 4.2), dpi=90)
    for r in rows:
        lat = r["tally"].lateness
        if not lat:
            continue
        xs = [max(x, 1e-3) for x in lat]
        ys = [100.0 * (k + 1) / r["tally"].unpaid for k in range(len(xs))]
        ax.step(xs, ys, where="post", color=color(r),
                linestyle="--" if r["usual"] else "-", linewidth=1.3,
                label=f"{r['approach']} ({r['setting']})")
    ax.set_xscale("log")
    ax.set_xlabel("lateness: close time - deadline (s, log scale; below 1 ms drawn at 1 ms)")
    ax.set_ylabel("% of unpaid orders closed")
    ax.set_ylim(0, 101)
    ax.axvline(1.0, color="grey", linewidth=0.8, linestyle=":")
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def flash_plot(rows, path, title):
    fig, ax = plt.subplots(figsize=(10, 4.2), dpi=90)
    for r in rows:
        ts = r["close_times"]
        if not ts:
            continue
        step = max(1, len(ts) // 2000)  # a few thousand points per line is enough to draw
        xs, ys = ts[::step] + [ts[-1]], list(range(1, len(ts) + 1, step)) + [len(ts)]
        ax.plot(xs, [100.0 * y / r["tally"].created for y in ys], color=color(r),
                linestyle="--" if r["usual"] else "-", linewidth=1.3,
                label=f"{r['approach']} ({r['setting']})")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("seconds since the first deadline (all due within 1 s; symlog scale)")
    ax.set_ylabel("% of orders closed")
    ax.set_ylim(0, 101)
    ax.grid(True, alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


SCENARIO_TEXT = {
    "steady": "Orders created at a steady rate for {dur}, payment windows uniform in {win} "
              "(a scaled-down 30-minute window); 80% are paid at a uniform moment before "
              "their deadline.",
    "flash sale": "Every order falls due within the same second; nobody pays. The orders are "
                  "all created first (the lead time is chosen per approach from how fast the "
                  "driver can create them). An approach that has not closed them all "
                  "{limit} after the deadline is stopped and its progress reported. Each "
                  "approach's closer is one Python process, so here its speed at receiving "
                  "(pub/sub messages, sorted-set members, RabbitMQ deliveries plus their "
                  "status `UPDATE`, stream entries and their `XACK`, HTTP requests to a "
                  "`ThreadingHTTPServer`) is part of what is measured: a shop would run "
                  "several consumers in a stream's group, or a faster endpoint.",
    "flash sale 1M": "The same with 1,000,000 orders, for the favourable settings that closed "
                     "all 100,000 with no order more than 60 s late.",
    "consumer outage": "Like steady, with windows in {ewin} over {edur}; the closer process is "
                       "killed {eat} into the run and started again {efor} later.",
    "timer service crash": "Like the outage scenario, but `kill -9` hits what holds the timers "
                           "(the row says which) {eat} into the run; it is started again {cfor} "
                           "later.",
}


def write(docs, results, machine, command, elapsed_s, quick):
    img = os.path.join(docs, "img")
    os.makedirs(img, exist_ok=True)
    by = {}
    for r in results:
        by.setdefault(r["scenario"], []).append(r)
    sizes = {name: rows[0]["tally"].created for name, rows in by.items()}
    fill = ({"dur": "3 s", "win": "1-3 s", "ewin": "1-3 s", "edur": "3 s", "eat": "2 s",
             "efor": "2 s", "cfor": "1 s", "limit": "30 s"} if quick else
            {"dur": "60 s", "win": "5-65 s", "ewin": "5-15 s", "edur": "30 s", "eat": "15 s",
             "efor": "10 s", "cfor": "5 s", "limit": "10 minutes"})
    out = [HEADER.format(
        command=command, elapsed=f"{int(elapsed_s // 60)} min {int(elapsed_s % 60)} s",
        date=datetime.date.today(), quick=QUICK_WARNING if quick else "", **machine)]
    out.append(summary(by))
    for name, rows in by.items():
        slug = name.replace(" ", "-")
        out.append(f"\n## {name[0].upper() + name[1:]} ({sizes[name]:,} orders)\n")
        out.append(SCENARIO_TEXT[name].format(**fill) + "\n")
        if name == "flash sale" and "--no-million" in command:
            out.append("The 1,000,000-order flash sale was left out of this run "
                       "(`--no-million`) to fit the time the machine was available; "
                       "`python3 benches/compare/run.py` runs it.\n")
        if name == "timer service crash":
            out.append("Killed: " + "; ".join(sorted({f"{r['approach']}: {r['crash_kills']}"
                                                       for r in rows})) + ".\n")
        out.append(table(rows) + "\n")
        n = notes(rows)
        if n:
            out.append(n + "\n")
        if name.startswith("flash"):
            flash_plot(rows, os.path.join(img, f"compare-{slug}.png"),
                       f"{name}: orders closed over time ({sizes[name]:,} orders)")
            out.append(f"![orders closed over time, {name}](img/compare-{slug}.png)\n")
        cdf_plot(rows, os.path.join(img, f"compare-{slug}-lateness.png"),
                 f"{name}: lateness CDF ({sizes[name]:,} orders; dashed = usual setting)")
        out.append(f"![lateness CDF, {name}](img/compare-{slug}-lateness.png)\n")
    out.append(FOOTER)
    with open(os.path.join(docs, "comparison.md"), "w") as f:
        f.write("\n".join(out))


QUICK_WARNING = """
> **This page was written by a `--quick` run**: favourable settings only, about 1,000 orders,
> scenarios a few seconds long. Its numbers check that the harness works; they are not the
> comparison. Run `python3 benches/compare/run.py` for that.
"""

HEADER = """# Closing unpaid orders: the usual ways, measured side by side

<!-- Generated by benches/compare/run.py; edit report.py, not this file. -->
{quick}
A shop has to close the orders nobody paid for when their payment window ends. The usual
answers are a cron job polling the orders table, Redis key-expiry notifications, a Redis sorted
set polled by a timer, RabbitMQ messages with a TTL and a dead-letter exchange, and a timer
service such as timewheel. This page runs the same orders through each of them, on one
machine, with one closer and one clock, and reports how late each one closes orders, how many
it loses, how many paid orders it closes, and what it costs.

Regenerate it with `python3 benches/compare/run.py` (`--quick` for a smoke run of a few
minutes; `--help` for the rest). This page was produced by `{command}` in {elapsed} on {date}
(commit {commit}), on {nproc} cores
({cpu}), {ram} RAM, Linux {kernel}; Redis {redis}, PostgreSQL {postgres}, RabbitMQ {rabbitmq},
Python {python}. The machine was shared with other work (load average at the end: {load}), so
every row ran under the same background noise, one row at a time.

## How each approach is set up

Each approach runs with its usual setting and with the setting its advocates would tune it to
(the favourable one). Every approach gets its own server: a private `redis-server` on a free
port with `appendonly yes`, `appendfsync everysec` (also the journal of timewheel), a private
RabbitMQ node, a private PostgreSQL database.

| approach | timer set by | paid by | closed by | usual / favourable |
|---|---|---|---|---|
| cron poll of the orders table | `INSERT` (`id`, `status`, `deadline`); partial index on `deadline WHERE status = 'pending'` | `UPDATE … SET status='paid' WHERE status='pending'` | a poller running `UPDATE … SET status='closed' WHERE status='pending' AND deadline <= now() RETURNING id` | every 60 s / every 1 s |
| Redis key-expiry notifications | `SET o:<id> 1 PXAT <deadline>` | `DEL` (1 = paid) | a listener on `__keyevent@0__:expired` (`notify-keyspace-events Ex`) | `hz 10` (default) / `hz 100` |
| Redis sorted set + poller | `ZADD orders <deadline> <id>` | `ZREM` (1 = paid) | a poller: `ZRANGEBYSCORE orders -inf <now> LIMIT 0 1000`, then `ZREM` each; the `ZREM` that returns 1 wins | every 10 s / every 100 ms |
| RabbitMQ TTL + dead-letter exchange | an order row, and a persistent message in a durable queue without consumers, dead-lettered to the `close` queue; each batch published in a transaction | `UPDATE … SET status='paid' WHERE status='pending'` (the message stays) | a consumer of `close` (prefetch 1000) that closes each batch with `UPDATE … SET status='closed' WHERE id = ANY(…) AND status='pending' RETURNING id`, skipping paid orders, then acks | one queue with per-message `expiration` / one queue per delay rounded up to the second, with a queue TTL |
| timewheel | `ADDAT o:<id> <deadline>` over RESP, journal in Redis | `CANCEL` (1 = paid) | `--stream`: a consumer reading with `XREADGROUP` (its pending entries first after a restart), then `XACK`; `--webhook`: a Python HTTP endpoint answering 200 | `--tick-ms 1000` (default) / `--tick-ms 100`, for each sink |

- **RabbitMQ publishing.** Each batch of messages is published in an AMQP transaction
  (`tx.select`, `tx.commit`), which returns once the broker has them on disk. Without it, or
  publisher confirms, a `kill -9` of the broker loses messages it had accepted, and the trial
  runs of the crash scenario lost most of the orders in flight that way.
- **Closing.** The closer writes each order it closes, with the time, to the harness; for the
  cron job and the sorted set the poller is the closer. Lateness is that time minus the
  order's deadline, on the same clock for every approach.
- **Driver.** One Python process creates and pays orders on the scenario's schedule, in
  batches every 10 ms, pipelined where the client allows. A deadline is fixed by the schedule
  (creation time + window), so a slow driver would count against the approach; the notes say
  when the driver fell behind. While a server is down the driver retries every 100 ms, as a shop
  would: a timer whose first attempt got no answer is set again, so an order that fired while
  its answer was lost gets a second timer.
- **Counted as the approach's cost** (CPU seconds from `/proc/<pid>/stat`, peak memory as the
  largest sum of the processes' resident memory, `VmHWM`, sampled every 0.25 s): the servers
  that hold the timers (`redis-server`; the RabbitMQ node; timewheel and its journal's
  `redis-server`), the pollers of the cron job and of the sorted set, and the PostgreSQL
  backends that the cron poller and the RabbitMQ closer use. Not counted: the driver, the
  closers that only receive (key-expiry listener, stream consumer, webhook endpoint,
  RabbitMQ consumer's Python process), PostgreSQL's shared background processes, and the
  PostgreSQL backend of the driver: the `INSERT` of each order and its payment's `UPDATE` are
  work the shop's database does anyway, so the cron job's CPU figure holds only its polls.
  For the Redis approaches and timewheel, the server that answers the driver's `SET`, `ZADD`,
  `DEL`, `ADDAT`, `CANCEL` is the one that holds the timers, so that work is in their figure.
- **Metrics.** *Closed within 1 s*: unpaid orders closed at most 1 s after their deadline, as
  a share of all unpaid orders. *Lateness*: over the unpaid orders that were closed.
  *Lost*: unpaid and never closed by the end of the run. *Paid but closed*: the payment was
  accepted (the `DEL`, `ZREM`, `CANCEL` or `UPDATE` said so) and the order was closed anyway.
  *Closed twice*: the closer closed the same order more than once. A payment that comes too
  late (the timer already fired) is refused, and that order counts as unpaid. The harness
  checks that every created order is exactly one of closed, paid, lost, or paid but closed,
  and stops with an error if not.
"""

FOOTER = """
## Published figures for what does not run here

Not measured on this machine; quoted from their sources, for the delay queues that shops also
consider.

| system | figure | source |
|---|---|---|
| RocketMQ 5 timer messages | a user reports timer messages delivered 31 s to almost 9 minutes after their time; a maintainer answers that if 500,000 messages expire in the same second, "maybe only 20000 of them can be consumed on time" | [apache/rocketmq#6566](https://github.com/apache/rocketmq/issues/6566) |
| RabbitMQ delayed-message plugin | a user sees messages published with a 15-minute `x-delay` arrive "as much as 3 days" later as the plugin's Mnesia table grows; a maintainer answers that "beyond a certain number of delayed messages the current design is not going to work". The plugin is no longer maintained; its README points to delayed delivery in quorum queues (RabbitMQ 4.4), not available in the RabbitMQ 3.10 here | [rabbitmq-delayed-message-exchange#72](https://github.com/rabbitmq/rabbitmq-delayed-message-exchange/issues/72), [its README](https://github.com/rabbitmq/rabbitmq-delayed-message-exchange) |
"""
