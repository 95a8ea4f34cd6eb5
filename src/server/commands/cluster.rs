//! Cluster mode: redirections, and `CLUSTER ...` answered from the lease
//! table, in the shapes Redis Cluster uses so that cluster clients (redis-py
//! `RedisCluster`, redis-rs cluster, go-redis, `redis-cli -c`) route by
//! themselves. Every timewheel node is a master; there are no replicas.

use crate::cluster::{Cluster, Route, slot};
use crate::protocol::{
    CommandSpec, Protocol, write_array_header, write_bulk, write_error, write_integer,
    write_map_header,
};
use crate::server::Shared;

/// The reply while a partition held here is loading or being handed off,
/// or its journal's Redis master does not answer (failing over).
pub const MOVING: &str = "TRYAGAIN the partition of this id is loading or moving, or its Redis master does not answer; nothing was changed, retry shortly";

/// The reply while no node holds the partition.
pub const DOWN: &str =
    "CLUSTERDOWN Hash slot not served: its partition has no owner until its lease runs out";

/// Checks that this node serves the key of a command (the command table
/// says where it is); if not, writes the redirection and returns `false`.
pub(super) fn route(
    cluster: &Cluster,
    spec: &CommandSpec,
    args: &[Vec<u8>],
    out: &mut Vec<u8>,
) -> bool {
    let Some(&key) = spec.keys(args).first() else {
        return true;
    };
    match cluster.route(key) {
        Route::Local => true,
        Route::Moved { slot, addr } => {
            write_error(out, format_args!("MOVED {slot} {addr}"));
            false
        }
        Route::TryAgain => {
            write_error(out, MOVING);
            false
        }
        Route::Down => {
            write_error(out, DOWN);
            false
        }
    }
}

/// `CLUSTER subcommand [argument ...]`.
pub(super) fn cluster(
    shared: &Shared,
    proto: Protocol,
    subcommand: &[u8],
    args: &[Vec<u8>],
    out: &mut Vec<u8>,
) {
    // KEYSLOT needs no cluster; Redis answers it only in cluster mode, but
    // a correct answer does no harm.
    if subcommand == b"keyslot" {
        match args {
            [key] => write_integer(out, slot::key_slot(key) as i64),
            _ => write_error(
                out,
                "ERR wrong number of arguments for 'cluster|keyslot' command",
            ),
        }
        return;
    }
    let Some(cluster) = &shared.config.cluster else {
        write_error(out, "ERR This instance has cluster support disabled");
        return;
    };
    match subcommand {
        b"myid" => write_bulk(out, cluster.me().id.as_bytes()),
        b"slots" => slots(cluster, out),
        b"shards" => shards(cluster, proto, out),
        b"nodes" => write_bulk(out, nodes(cluster).as_bytes()),
        b"info" => write_bulk(out, info(cluster).as_bytes()),
        other => write_error(
            out,
            format_args!(
                "ERR unknown subcommand '{}'. Try CLUSTER SLOTS, SHARDS, NODES, INFO, MYID, KEYSLOT.",
                other.escape_ascii()
            ),
        ),
    }
}

fn host_port(addr: &str) -> (&str, i64) {
    match addr.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().unwrap_or(0)),
        None => (addr, 0),
    }
}

/// `CLUSTER SLOTS`: `[start, end, [host, port, id]]` per range.
fn slots(cluster: &Cluster, out: &mut Vec<u8>) {
    let ranges = cluster.slot_ranges();
    write_array_header(out, ranges.len());
    for (start, end, owner) in ranges {
        let (host, port) = host_port(&owner.addr);
        write_array_header(out, 3);
        write_integer(out, start as i64);
        write_integer(out, end as i64);
        write_array_header(out, 3);
        write_bulk(out, host.as_bytes());
        write_integer(out, port);
        write_bulk(out, owner.id.as_bytes());
    }
}

/// `CLUSTER SHARDS`: one shard per node that owns slots.
fn shards(cluster: &Cluster, proto: Protocol, out: &mut Vec<u8>) {
    let ranges = cluster.slot_ranges();
    let mut owners: Vec<&crate::cluster::Owner> = Vec::new();
    for (_, _, owner) in &ranges {
        if !owners.iter().any(|o| o.id == owner.id) {
            owners.push(owner);
        }
    }
    write_array_header(out, owners.len());
    for owner in owners {
        let mine: Vec<_> = ranges.iter().filter(|r| r.2.id == owner.id).collect();
        let (host, port) = host_port(&owner.addr);
        write_map_header(out, proto, 2);
        write_bulk(out, b"slots");
        write_array_header(out, mine.len() * 2);
        for (start, end, _) in &mine {
            write_integer(out, *start as i64);
            write_integer(out, *end as i64);
        }
        write_bulk(out, b"nodes");
        write_array_header(out, 1);
        write_map_header(out, proto, 7);
        write_bulk(out, b"id");
        write_bulk(out, owner.id.as_bytes());
        write_bulk(out, b"port");
        write_integer(out, port);
        write_bulk(out, b"ip");
        write_bulk(out, host.as_bytes());
        write_bulk(out, b"endpoint");
        write_bulk(out, host.as_bytes());
        write_bulk(out, b"role");
        write_bulk(out, b"master");
        write_bulk(out, b"replication-offset");
        write_integer(out, 0);
        write_bulk(out, b"health");
        write_bulk(out, b"online");
    }
}

/// `CLUSTER NODES`: one line per live node, in Redis's format.
fn nodes(cluster: &Cluster) -> String {
    let routing = cluster.routing();
    let ranges = cluster.slot_ranges();
    let me = &cluster.me().id;
    let mut text = String::new();
    for member in &routing.members {
        let flags = if &member.id == me {
            "myself,master"
        } else {
            "master"
        };
        let epoch = routing
            .owners
            .iter()
            .flatten()
            .filter(|o| o.id == member.id)
            .map(|o| o.epoch)
            .max()
            .unwrap_or(0);
        text.push_str(&format!(
            "{} {}@0 {flags} - 0 0 {epoch} connected",
            member.id, member.addr
        ));
        for (start, end, _) in ranges.iter().filter(|r| r.2.id == member.id) {
            if start == end {
                text.push_str(&format!(" {start}"));
            } else {
                text.push_str(&format!(" {start}-{end}"));
            }
        }
        text.push('\n');
    }
    text
}

/// `CLUSTER INFO`.
fn info(cluster: &Cluster) -> String {
    let stats = cluster.stats();
    let routing = cluster.routing();
    let width = cluster.partitions().width() as u64;
    let assigned = stats.assigned as u64 * width;
    let state = if stats.assigned == stats.partitions {
        "ok"
    } else {
        "fail"
    };
    let current_epoch = routing.epochs.iter().max().copied().unwrap_or(0);
    let masters = {
        let mut ids: Vec<&str> = routing
            .owners
            .iter()
            .flatten()
            .map(|o| o.id.as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    };
    format!(
        "cluster_enabled:1\r\ncluster_state:{state}\r\ncluster_slots_assigned:{assigned}\r\n\
         cluster_slots_ok:{assigned}\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:{}\r\n\
         cluster_known_nodes:{}\r\ncluster_size:{masters}\r\ncluster_current_epoch:{current_epoch}\r\n\
         cluster_partitions:{}\r\ncluster_partitions_owned:{}\r\n",
        slot::SLOTS as u64 - assigned,
        stats.known_nodes,
        stats.partitions,
        stats.owned,
    )
}
