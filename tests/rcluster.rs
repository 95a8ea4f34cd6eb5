//! Cluster mode on a Redis Cluster: 3 masters and 3 replicas started by the
//! test, and real `timewheel serve --cluster` processes on free ports.
//!
//! Run with `cargo test --test rcluster` (needs `redis-server` and
//! `redis-cli` on PATH).

mod util;

use util::redis_cluster::RedisCluster;

#[test]
fn a_redis_cluster_forms_and_serves_every_slot() {
    let cluster = RedisCluster::start();
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "{masters:?}");
    let covered: u32 = masters
        .values()
        .flatten()
        .map(|&(s, e)| (e - s) as u32 + 1)
        .sum();
    assert_eq!(covered, 16_384);
}
