// timewheel from Node.js with ioredis (tests/clients/node/package.json), through call().
// Run by tests/clients/main.rs (cargo test --test clients); by hand:
//   (cd tests/clients/node && npm ci) && node tests/clients/node/check.js TIMEWHEEL_PORT REDIS_PORT STREAM
// Prints "ok" and exits 0 when every check passed.
"use strict";
const assert = require("node:assert/strict");
const Redis = require("ioredis");

async function main() {
  const [twPort, redisPort, stream] = process.argv.slice(2);
  const now = Date.now();
  // ioredis sends no HELLO; enableReadyCheck would send INFO, which works too.
  const tw = new Redis({ port: Number(twPort), lazyConnect: true, maxRetriesPerRequest: 0 });
  await tw.connect();

  // ADD, PTTL, CANCEL: a deadline in Unix ms, the time left, cancelled.
  const deadline = await tw.call("ADD", "node:1", "60000");
  assert.ok(Number.isInteger(deadline) && deadline >= now + 59000, String(deadline));
  const pttl = await tw.call("PTTL", "node:1");
  assert.ok(pttl > 0 && pttl <= 60000, String(pttl));
  assert.equal(await tw.call("CANCEL", "node:1"), 1);
  assert.equal(await tw.call("CANCEL", "node:1"), 0);

  // A pipeline: replies in order, each as [error, reply].
  const replies = await tw
    .pipeline()
    .call("ADD", "node:p1", "60000")
    .call("ADD", "node:p2", "60000")
    .call("CANCEL", "node:p1")
    .call("COUNT")
    .exec();
  assert.ok(replies.every(([err]) => err === null), JSON.stringify(replies));
  assert.deepEqual(replies.slice(2).map(([, r]) => r), [1, 1]);

  // A transaction: MULTI ... EXEC.
  const atomic = await tw.multi().call("CANCEL", "node:p2").call("COUNT").exec();
  assert.deepEqual(atomic, [[null, 1], [null, 0]]);

  // SUBSCRIBE fired on a connection of its own, then an order due now.
  const sub = new Redis({ port: Number(twPort), lazyConnect: true });
  await sub.connect();
  const heard = new Promise((resolve) => sub.on("message", (channel, id) => resolve([channel, id])));
  await sub.subscribe("fired");
  await tw.call("ADD", "node:fired", "0");
  const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error("no fired message in 10 s")), 10000));
  assert.deepEqual(await Promise.race([heard, timeout]), ["fired", "node:fired"]);
  sub.disconnect();

  // The stream consumer: the journal's Redis Stream, read with a consumer group.
  const r = new Redis({ port: Number(redisPort) });
  await r.xgroup("CREATE", stream, "shop", "0", "MKSTREAM").catch(() => {}); // exists already
  let closed = null;
  const end = Date.now() + 20000;
  while (closed === null && Date.now() < end) {
    const batch = await r.xreadgroup("GROUP", "shop", "node-worker", "COUNT", 100, "BLOCK", 1000, "STREAMS", stream, ">");
    for (const [, entries] of batch || []) {
      for (const [entryId, fields] of entries) {
        const order = {};
        for (let i = 0; i < fields.length; i += 2) order[fields[i]] = fields[i + 1];
        if (order.id === "node:fired") closed = order;
        await r.xack(stream, "shop", entryId);
      }
    }
  }
  assert.ok(closed !== null && Number(closed.deadline_ms) > 0, "node:fired read from the stream");
  assert.equal((await r.xpending(stream, "shop"))[0], 0);
  tw.disconnect();
  r.disconnect();
  console.log("ok");
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
