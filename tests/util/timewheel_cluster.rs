//! Helpers for tests of `timewheel serve --cluster` nodes: their `CLUSTER
//! SLOTS` and `INFO`, waiting for a stable slot table, and a small
//! cluster-aware load client that keeps a ledger of what it was told.
//!
//! Ground rule: the load client treats `-TRYAGAIN`, `-CLUSTERDOWN` and
//! `-JOURNAL` as "nothing changed, retry", and an answer lost with its
//! connection as "unknown", so the ledger never claims more than it knows.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use timewheel::cluster::slot::{SLOTS, key_slot};

use super::{Resp, RespConn, encode_command};

/// Partitions of the clusters these tests start (the default).
pub const PARTITIONS: u16 = 128;

pub fn array(resp: &Resp) -> &[Resp] {
    match resp {
        Resp::Array(Some(items)) => items,
        other => panic!("expected an array, got {other:?}"),
    }
}

/// `CLUSTER SLOTS` of the node on `port`: (start, end, port of the owner).
pub fn cluster_slots(port: u16) -> Option<Vec<(u16, u16, u16)>> {
    let mut conn = RespConn::try_connect(port).ok()?;
    conn.set_timeout(Duration::from_secs(2));
    conn.try_send_raw(&encode_command(&["CLUSTER", "SLOTS"]))
        .ok()?;
    let reply = conn.try_read_reply().ok()?;
    Some(
        array(&reply)
            .iter()
            .map(|range| {
                let range = array(range);
                let node = array(&range[2]);
                (
                    range[0].as_int().unwrap() as u16,
                    range[1].as_int().unwrap() as u16,
                    node[1].as_int().unwrap() as u16,
                )
            })
            .collect(),
    )
}

/// The slot -> port map, if `ranges` cover every slot exactly once and
/// only with `live` ports.
pub fn slot_map(ranges: &[(u16, u16, u16)], live: &[u16]) -> Option<Vec<u16>> {
    let mut map = vec![0u16; SLOTS as usize];
    for &(start, end, port) in ranges {
        if !live.contains(&port) {
            return None;
        }
        for slot in start..=end {
            if map[slot as usize] != 0 {
                return None;
            }
            map[slot as usize] = port;
        }
    }
    map.iter().all(|&p| p != 0).then_some(map)
}

pub fn info_field(port: u16, key: &str) -> Option<u64> {
    let mut conn = RespConn::try_connect(port).ok()?;
    conn.set_timeout(Duration::from_secs(2));
    conn.try_send_raw(&encode_command(&["INFO"])).ok()?;
    let reply = conn.try_read_reply().ok()?;
    reply
        .as_str()?
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits until every live node agrees on a table covering all slots with
/// live nodes only, each live node owns something, nothing is loading or
/// being handed off, twice in a row; returns the slot map.
pub fn wait_stable(ports: &[u16], timeout: Duration) -> Vec<u16> {
    let started = Instant::now();
    let mut streak = 0;
    let mut last: Option<Vec<u16>> = None;
    loop {
        let maps: Vec<Option<Vec<u16>>> = ports
            .iter()
            .map(|&p| cluster_slots(p).and_then(|r| slot_map(&r, ports)))
            .collect();
        let owned: Option<Vec<u64>> = ports
            .iter()
            .map(|&p| info_field(p, "cluster_partitions_owned"))
            .collect();
        let loading: Option<u64> = ports
            .iter()
            .map(|&p| info_field(p, "cluster_partitions_loading"))
            .sum();
        let agreed = maps.iter().all(|m| m.is_some() && *m == maps[0]);
        let ok = agreed
            && loading == Some(0)
            && owned.as_ref().is_some_and(|o| {
                o.iter().all(|&n| n > 0) && o.iter().sum::<u64>() == PARTITIONS as u64
            })
            && maps[0]
                .as_ref()
                .is_some_and(|m| ports.iter().all(|p| m.contains(p)));
        if ok && last == maps[0] {
            streak += 1;
            if streak >= 2 {
                return maps[0].clone().unwrap();
            }
        } else {
            streak = 0;
        }
        last = maps[0].clone();
        assert!(
            started.elapsed() < timeout,
            "cluster of {ports:?} not stable after {timeout:?}: owned {owned:?}, loading {loading:?}, agreed {agreed}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// What a client learned about one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done(i64),
    /// Sent, but the connection died before the answer: it may or may not
    /// have happened.
    Unknown,
}

/// A small cluster-aware client: a slot map from `CLUSTER SLOTS`, follows
/// `-MOVED`, retries `-TRYAGAIN`, `-CLUSTERDOWN` and `-JOURNAL`, which all
/// mean nothing changed.
pub struct Router {
    seeds: Arc<Mutex<Vec<u16>>>,
    map: Vec<u16>,
    conns: HashMap<u16, RespConn>,
}

impl Router {
    pub fn new(seeds: Arc<Mutex<Vec<u16>>>) -> Router {
        let mut router = Router {
            seeds,
            map: vec![0; SLOTS as usize],
            conns: HashMap::new(),
        };
        router.refresh();
        router
    }

    pub fn refresh(&mut self) {
        let seeds = self.seeds.lock().unwrap().clone();
        for port in seeds {
            if let Some(ranges) = cluster_slots(port) {
                for (start, end, owner) in ranges {
                    for slot in start..=end {
                        self.map[slot as usize] = owner;
                    }
                }
                return;
            }
        }
    }

    pub fn call(&mut self, args: &[&str]) -> Outcome {
        let slot = key_slot(args[1].as_bytes()) as usize;
        // Patient enough for a Redis master's failover and a takeover.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let port = match self.map[slot] {
                0 => *fastrand::choice(self.seeds.lock().unwrap().iter()).unwrap(),
                p => p,
            };
            let conn = match self.conns.entry(port) {
                std::collections::hash_map::Entry::Occupied(c) => c.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => match RespConn::try_connect(port) {
                    Ok(mut c) => {
                        c.set_timeout(Duration::from_secs(5));
                        v.insert(c)
                    }
                    Err(_) => {
                        self.map[slot] = 0;
                        self.refresh();
                        thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                },
            };
            if conn.try_send_raw(&encode_command(args)).is_err() {
                // Not sent (or not all of it reached a live process).
                self.conns.remove(&port);
                self.refresh();
                continue;
            }
            let reply = match conn.try_read_reply() {
                Ok(reply) => reply,
                Err(_) => {
                    self.conns.remove(&port);
                    self.refresh();
                    return Outcome::Unknown;
                }
            };
            match reply {
                Resp::Integer(n) => return Outcome::Done(n),
                Resp::Error(e) if e.starts_with("MOVED ") => {
                    let addr = e.rsplit(' ').next().unwrap();
                    self.map[slot] = addr.rsplit(':').next().unwrap().parse().unwrap();
                }
                Resp::Error(e)
                    if e.starts_with("TRYAGAIN")
                        || e.starts_with("CLUSTERDOWN")
                        || e.starts_with("JOURNAL") =>
                {
                    thread::sleep(Duration::from_millis(20));
                    self.refresh();
                }
                other => panic!("{args:?}: unexpected reply {other:?}"),
            }
        }
        panic!("{args:?}: no answer within 30 s");
    }
}

/// What the load clients were told.
#[derive(Default)]
pub struct Ledger {
    /// Acknowledged ADDs: id -> deadline.
    pub added: HashMap<String, u64>,
    /// ADDs whose answer was lost.
    pub maybe_added: HashSet<String>,
    /// CANCELs answered 1.
    pub cancelled: HashSet<String>,
    /// CANCELs whose answer was lost.
    pub maybe_cancelled: HashSet<String>,
}

impl Ledger {
    /// The ledgers of several clients, as one.
    pub fn merged(ledgers: impl IntoIterator<Item = Ledger>) -> Ledger {
        let mut all = Ledger::default();
        for l in ledgers {
            all.added.extend(l.added);
            all.maybe_added.extend(l.maybe_added);
            all.cancelled.extend(l.cancelled);
            all.maybe_cancelled.extend(l.maybe_cancelled);
        }
        all
    }

    /// Checks what reached the streams, `(id, deadline, fired)` per entry,
    /// against what was acknowledged: nothing early, nothing unknown, each
    /// id once, no id whose `CANCEL` answered 1, every acknowledged and
    /// uncancelled id. Returns how many ids had to be there.
    #[track_caller]
    pub fn check_streams<'a>(
        &self,
        entries: impl IntoIterator<Item = (&'a str, u64, u64)>,
    ) -> usize {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (id, deadline, fired) in entries {
            *seen.entry(id).or_default() += 1;
            assert!(
                fired >= deadline,
                "{id} fired early: deadline {deadline}, fired {fired}"
            );
            assert!(
                self.added.contains_key(id) || self.maybe_added.contains(id),
                "{id} in a stream but never added"
            );
            if let Some(&acked) = self.added.get(id) {
                assert_eq!(
                    deadline, acked,
                    "{id}: stream deadline differs from the acked one"
                );
            }
        }
        for (id, n) in &seen {
            assert_eq!(*n, 1, "{id} is {n} times in the streams");
        }
        for id in &self.cancelled {
            assert!(
                !seen.contains_key(id.as_str()),
                "{id}: CANCEL answered 1, yet it fired"
            );
        }
        let mut expected = 0;
        for id in self.added.keys() {
            if !self.cancelled.contains(id) && !self.maybe_cancelled.contains(id) {
                expected += 1;
                assert!(
                    seen.contains_key(id.as_str()),
                    "{id}: acknowledged, never fired"
                );
            }
        }
        expected
    }
}

pub fn load_client(n: usize, seeds: Arc<Mutex<Vec<u16>>>, stop: Arc<AtomicBool>) -> Ledger {
    let mut router = Router::new(seeds);
    let mut ledger = Ledger::default();
    let mut recent: Vec<(String, u64)> = Vec::new();
    let mut rng = fastrand::Rng::with_seed(n as u64);
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let id = format!("k{n}:{i}");
        let delay = rng.u64(200..2500);
        match router.call(&["ADD", &id, &delay.to_string()]) {
            Outcome::Done(deadline) => {
                ledger.added.insert(id.clone(), deadline as u64);
                recent.push((id, deadline as u64));
            }
            Outcome::Unknown => {
                ledger.maybe_added.insert(id);
            }
        }
        if rng.u8(0..10) < 3 && !recent.is_empty() {
            let (id, _) = recent.swap_remove(rng.usize(..recent.len()));
            match router.call(&["CANCEL", &id]) {
                Outcome::Done(1) => {
                    ledger.cancelled.insert(id);
                }
                Outcome::Done(_) => {}
                Outcome::Unknown => {
                    ledger.maybe_cancelled.insert(id);
                }
            }
        }
        if recent.len() > 200 {
            recent.drain(..100);
        }
        thread::sleep(Duration::from_millis(3));
    }
    ledger
}
