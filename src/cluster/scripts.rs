//! The Lua scripts of cluster mode, and the key layout they run on.
//!
//! Every key of partition `p` carries the hash tag `{<prefix>pNNN}`
//! ([`super::slot::tag`]), so on a Redis Cluster a script that touches
//! several of them runs on one master:
//!
//! | key                         | type       | holds                                   |
//! |-----------------------------|------------|-----------------------------------------|
//! | `{tw:p017}:due`             | sorted set | pending orders: member id, score deadline (Unix ms) |
//! | `{tw:p017}:epoch`           | string     | the fencing epoch, +1 at every takeover |
//! | `{tw:p017}:lease`           | string, PX | `"<node id> <epoch>"` of the owner      |
//! | `{tw:p017}:dead`            | stream     | dead-lettered orders                    |
//! | `STREAM:{tw:p017}`          | stream     | fired orders (`--stream STREAM`)        |
//! | `{tw:cluster}:config`       | hash       | `partitions`: P, fixed at creation      |
//! | `{tw:cluster}:nodes`        | sorted set | live node ids, score = expiry (Redis ms) |
//! | `{tw:cluster}:addrs`        | hash       | node id -> announced `host:port`        |
//!
//! Ground rule: every write to a partition's journal goes through
//! [`APPLY`], which compares the epoch first and changes nothing when it
//! moved (fencing). Leases and member expiry use Redis's clock (`PX`,
//! `TIME`), never a node's.

/// Registers (or refreshes) a node and lists the live ones.
/// `KEYS` = nodes, addrs; `ARGV` = id (empty: only list), addr, ttl ms.
/// Returns `{now_ms, id1, addr1, id2, addr2, ...}`.
pub const MEMBERS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, id in ipairs(gone) do redis.call('HDEL', KEYS[2], id) end
if #gone > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) end
if ARGV[1] ~= '' then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
end
local out = {now}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', KEYS[2], id) or ''
end
return out
";

/// Removes a node at shutdown. `KEYS` = nodes, addrs; `ARGV` = id.
pub const LEAVE: &str = r"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
";

/// Takes a free partition: bumps its epoch and sets the lease in one step,
/// so whoever holds the lease holds the newest epoch. `KEYS` = lease,
/// epoch; `ARGV` = node id, lease ms. Returns `{1, epoch}`, or `{0, holder}`.
pub const TAKE: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder then return {0, holder} end
local e = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. e, 'PX', ARGV[2])
return {1, e}
";

/// Renews a lease still held with the same epoch. `KEYS` = lease;
/// `ARGV` = `"<id> <epoch>"`, lease ms. Returns 1, or 0 when lost.
pub const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Gives a lease up (hand-off, shutdown). `KEYS` = lease; `ARGV` =
/// `"<id> <epoch>"`. Returns 1 if it was still ours.
pub const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

/// The fenced journal write: a run of one partition's writes, applied in
/// order, only if the partition's epoch is still the writer's.
/// `KEYS` = epoch, due, dead, stream; `ARGV[1]` = epoch, `ARGV[2]` = `u`
/// to return the score each `P`/`C` write found (for an undo, see
/// [`crate::journal`]'s `--journal-replicas`) or `-`, then the writes:
/// - `P id deadline`: schedule or move (`ZADD`);
/// - `C id`: cancel (`ZREM`);
/// - `D id deadline`: delivered, remove if the score is still `deadline`;
/// - `S id deadline fired`: delivered, move into the stream if the score is
///   still `deadline` (exactly once; a run of them costs one `ZMSCORE` and
///   one `ZREM`);
/// - `X id deadline attempts error now`: dead-letter.
///
/// Returns `{1, writes}` (with `u`: `{1, writes, before...}`, one score or
/// `''` per `P`/`C` write, in order), or `{0, current epoch}` with nothing
/// changed.
pub const APPLY: &str = r"
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then return {0, current or ''} end
local undo = ARGV[2] == 'u'
local before = {}
local zadd = {}
local function flush()
  if #zadd > 0 then
    redis.call('ZADD', KEYS[2], unpack(zadd))
    zadd = {}
  end
end
local function take(id, deadline)
  local s = redis.call('ZSCORE', KEYS[2], id)
  if s and tonumber(s) == tonumber(deadline) then
    redis.call('ZREM', KEYS[2], id)
    return true
  end
  return false
end
local i, n, writes = 3, #ARGV, 0
while i <= n do
  local op = ARGV[i]
  writes = writes + 1
  if op == 'P' and not undo then
    zadd[#zadd + 1] = ARGV[i + 2]
    zadd[#zadd + 1] = ARGV[i + 1]
    if #zadd >= 1000 then flush() end
    i = i + 3
  else
    flush()
    if op == 'P' then
      before[#before + 1] = redis.call('ZSCORE', KEYS[2], ARGV[i + 1]) or ''
      redis.call('ZADD', KEYS[2], ARGV[i + 2], ARGV[i + 1])
      i = i + 3
    elseif op == 'C' then
      if undo then
        before[#before + 1] = redis.call('ZSCORE', KEYS[2], ARGV[i + 1]) or ''
      end
      redis.call('ZREM', KEYS[2], ARGV[i + 1])
      i = i + 2
    elseif op == 'D' then
      take(ARGV[i + 1], ARGV[i + 2])
      i = i + 3
    elseif op == 'S' then
      -- A run of moves: one ZMSCORE, one ZREM (an id moves at most once).
      local ids, deadlines, fired = {}, {}, {}
      while i <= n and ARGV[i] == 'S' do
        ids[#ids + 1] = ARGV[i + 1]
        deadlines[#deadlines + 1] = ARGV[i + 2]
        fired[#fired + 1] = ARGV[i + 3]
        i = i + 4
      end
      writes = writes + #ids - 1
      local scores = redis.call('ZMSCORE', KEYS[2], unpack(ids))
      local moved, seen = {}, {}
      for j = 1, #ids do
        local id = ids[j]
        if scores[j] and not seen[id] and tonumber(scores[j]) == tonumber(deadlines[j]) then
          seen[id] = true
          moved[#moved + 1] = id
          redis.call('XADD', KEYS[4], '*', 'id', id, 'deadline_ms', deadlines[j],
            'fired_ms', fired[j], 'epoch', ARGV[1])
        end
      end
      if #moved > 0 then redis.call('ZREM', KEYS[2], unpack(moved)) end
    elseif op == 'X' then
      take(ARGV[i + 1], ARGV[i + 2])
      redis.call('XADD', KEYS[3], '*', 'id', ARGV[i + 1], 'deadline_ms', ARGV[i + 2],
        'attempts', ARGV[i + 3], 'error', ARGV[i + 4], 'dead_ms', ARGV[i + 5])
      i = i + 6
    else
      return redis.error_reply('ERR unknown journal write ' .. tostring(op))
    end
  end
end
flush()
local out = {1, writes}
for _, s in ipairs(before) do out[#out + 1] = s end
return out
";

/// The Redis keys of a cluster.
#[derive(Debug, Clone)]
pub struct Layout {
    prefix: String,
    stream: Option<String>,
}

impl Layout {
    /// Keys under `prefix` (`tw:`), streams named after `stream`.
    pub fn new(prefix: &str, stream: Option<&str>) -> Layout {
        Layout {
            prefix: prefix.to_string(),
            stream: stream.map(str::to_string),
        }
    }

    fn partition_key(&self, p: u16, what: &str) -> String {
        format!("{}:{what}", super::slot::tag(&self.prefix, p))
    }

    /// The hash slot of every key of partition `p` (their hash tag's).
    pub fn slot(&self, p: u16) -> u16 {
        super::slot::key_slot(super::slot::tag(&self.prefix, p).as_bytes())
    }

    /// The hash slot of the cluster keys (`{tw:cluster}`).
    pub fn cluster_slot(&self) -> u16 {
        super::slot::key_slot(self.config().as_bytes())
    }

    /// `{tw:pNNN}:due`: the partition's pending orders.
    pub fn due(&self, p: u16) -> String {
        self.partition_key(p, "due")
    }

    /// `{tw:pNNN}:epoch`: the fencing epoch.
    pub fn epoch(&self, p: u16) -> String {
        self.partition_key(p, "epoch")
    }

    /// `{tw:pNNN}:lease`: the owner's lease.
    pub fn lease(&self, p: u16) -> String {
        self.partition_key(p, "lease")
    }

    /// `{tw:pNNN}:dead`: dead-lettered orders.
    pub fn dead(&self, p: u16) -> String {
        self.partition_key(p, "dead")
    }

    /// `STREAM:{tw:p017}` with `--stream STREAM`.
    pub fn stream(&self, p: u16) -> Option<String> {
        self.stream
            .as_ref()
            .map(|s| format!("{s}:{}", super::slot::tag(&self.prefix, p)))
    }

    /// Whether fired orders go to streams.
    pub fn has_stream(&self) -> bool {
        self.stream.is_some()
    }

    fn cluster_key(&self, what: &str) -> String {
        format!("{{{}cluster}}:{what}", self.prefix)
    }

    /// `{tw:cluster}:config`: the partition count.
    pub fn config(&self) -> String {
        self.cluster_key("config")
    }

    /// `{tw:cluster}:nodes`: live node ids by expiry.
    pub fn nodes(&self) -> String {
        self.cluster_key("nodes")
    }

    /// `{tw:cluster}:addrs`: node id -> address.
    pub fn addrs(&self) -> String {
        self.cluster_key("addrs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::slot::key_slot;

    #[test]
    fn all_keys_of_a_partition_share_a_slot() {
        let layout = Layout::new("tw:", Some("orders"));
        for p in [0u16, 17, 127] {
            let slot = key_slot(layout.due(p).as_bytes());
            for key in [
                layout.epoch(p),
                layout.lease(p),
                layout.dead(p),
                layout.stream(p).unwrap(),
            ] {
                assert_eq!(key_slot(key.as_bytes()), slot, "p={p} key={key}");
            }
        }
        assert_eq!(layout.due(17), "{tw:p017}:due");
        assert_eq!(layout.stream(17).unwrap(), "orders:{tw:p017}");
        let nodes = key_slot(layout.nodes().as_bytes());
        assert_eq!(key_slot(layout.addrs().as_bytes()), nodes);
        assert_eq!(key_slot(layout.config().as_bytes()), nodes);
        assert_eq!(layout.cluster_slot(), nodes);
        for p in [0u16, 17, 127] {
            assert_eq!(layout.slot(p), key_slot(layout.due(p).as_bytes()));
        }
    }
}
