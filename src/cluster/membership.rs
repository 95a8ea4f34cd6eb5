//! Membership: who is alive, by heartbeat, on Redis's clock.
//!
//! Each node refreshes its entry in `{tw:cluster}:nodes` (score: expiry
//! time by Redis's `TIME`) every manager round; an entry not refreshed for
//! one lease is dropped by the next node that looks. The member list is
//! the input of rendezvous hashing ([`super::rendezvous`]); it decides who
//! *should* own a partition, never who does (that is the lease).

use redis::{Connection, Script, Value};

use super::scripts::{self, Layout};

/// A live node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// 40 hex digits, as Redis Cluster node ids.
    pub id: String,
    /// `host:port` clients are sent to.
    pub addr: String,
}

/// The live members, sorted by id, and Redis's time of the look.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Redis's clock at the look.
    pub now_ms: u64,
    /// Live members, sorted by id.
    pub members: Vec<Member>,
}

impl View {
    /// The announced address of the live node `id`.
    pub fn addr_of(&self, id: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.addr.as_str())
    }
}

/// Refreshes `me` (if given) and lists the live nodes.
pub fn heartbeat(
    con: &mut Connection,
    script: &Script,
    layout: &Layout,
    me: Option<&Member>,
    ttl_ms: u64,
) -> redis::RedisResult<View> {
    let reply: Value = script
        .key(layout.nodes())
        .key(layout.addrs())
        .arg(me.map_or("", |m| m.id.as_str()))
        .arg(me.map_or("", |m| m.addr.as_str()))
        .arg(ttl_ms)
        .invoke(con)?;
    let Value::Array(items) = reply else {
        return Err(bad(&reply));
    };
    let mut items = items.into_iter();
    let now_ms = match items.next() {
        Some(Value::Int(n)) => n as u64,
        other => return Err(bad(&other)),
    };
    let mut members = Vec::new();
    while let (Some(id), Some(addr)) = (items.next(), items.next()) {
        match (id, addr) {
            (Value::BulkString(id), Value::BulkString(addr)) => members.push(Member {
                id: String::from_utf8_lossy(&id).into_owned(),
                addr: String::from_utf8_lossy(&addr).into_owned(),
            }),
            (id, _) => return Err(bad(&id)),
        }
    }
    members.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(View { now_ms, members })
}

/// Removes `me` (clean shutdown), so survivors need not wait a lease.
pub fn leave(con: &mut Connection, layout: &Layout, me: &Member) -> redis::RedisResult<()> {
    Script::new(scripts::LEAVE)
        .key(layout.nodes())
        .key(layout.addrs())
        .arg(&me.id)
        .invoke(con)
}

fn bad(value: &dyn std::fmt::Debug) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Client,
        "unexpected reply from the membership script",
        format!("{value:?}"),
    ))
}
