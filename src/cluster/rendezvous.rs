//! Rendezvous (highest random weight) hashing: which live node should own
//! a partition (Thaler and Ravishankar, "Using name-based mappings to
//! increase hit rates", 1998).
//!
//! Every node scores every (node, partition) pair with the same fixed hash
//! and the highest score wins. Nodes agree without talking as soon as they
//! see the same member list; a node joining takes only the partitions it
//! now wins (about 1/N of them), and a node leaving gives up only its own.
//! The hash is fixed (FNV-1a, then a 64-bit finaliser), never a per-process
//! random hasher: every node must compute the same scores.
//!
//! The preferred owner is advice, not ownership: a partition is owned only
//! by whoever holds its lease (see [`super::lease`]).

/// The weight of `node` for partition `p`.
pub fn score(node: &str, p: u16) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in node.as_bytes().iter().chain(&p.to_le_bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64's finaliser: FNV alone leaves the last bytes poorly mixed.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The node among `nodes` that should own partition `p` (ties, which need
/// equal 64-bit scores, go to the smaller id).
pub fn preferred<'a, I>(nodes: I, p: u16) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    nodes
        .into_iter()
        .map(|n| (score(n, p), std::cmp::Reverse(n)))
        .max()
        .map(|(_, std::cmp::Reverse(n))| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("{:040x}", 0x9e37_79b9u64 * (i as u64 + 1)))
            .collect()
    }

    fn owners(nodes: &[String], partitions: u16) -> Vec<&str> {
        (0..partitions)
            .map(|p| preferred(nodes.iter().map(String::as_str), p).unwrap())
            .collect()
    }

    #[test]
    fn no_nodes_no_owner() {
        assert_eq!(preferred(std::iter::empty(), 0), None);
    }

    #[test]
    fn spreads_partitions_evenly() {
        for n in [2usize, 3, 4, 5] {
            let nodes = ids(n);
            let owners = owners(&nodes, 1024);
            for node in &nodes {
                let share = owners.iter().filter(|&&o| o == node).count();
                let even = 1024 / n;
                assert!(
                    share > even * 3 / 4 && share < even * 5 / 4,
                    "n={n} node={node} share={share} even={even}"
                );
            }
        }
    }

    #[test]
    fn a_join_moves_only_what_the_new_node_wins() {
        let three = ids(3);
        let four = ids(4);
        let before = owners(&three, 128);
        let after = owners(&four, 128);
        let mut moved = 0;
        for p in 0..128 {
            if before[p] != after[p] {
                assert_eq!(after[p], four[3], "p={p} moved to an old node");
                moved += 1;
            }
        }
        assert!(
            (20..=44).contains(&moved),
            "moved={moved}, about 32 expected"
        );
    }

    #[test]
    fn a_leave_moves_only_the_leavers_partitions() {
        let four = ids(4);
        let three = ids(3);
        let before = owners(&four, 128);
        let after = owners(&three, 128);
        for p in 0..128 {
            if before[p] != four[3] {
                assert_eq!(before[p], after[p], "p={p}");
            }
        }
    }

    #[test]
    fn order_of_the_member_list_does_not_matter() {
        let nodes = ids(5);
        let mut reversed = nodes.clone();
        reversed.reverse();
        assert_eq!(owners(&nodes, 256), owners(&reversed, 256));
    }
}
