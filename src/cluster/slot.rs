//! Hash slots and partitions, exactly as Redis Cluster computes slots.
//!
//! `slot(key) = CRC16(key) mod 16384`, CRC16 being the XMODEM variant
//! (polynomial 0x1021, initial value 0), over the whole key, or only over
//! the part between the first `{` and the next `}` when that part is not
//! empty (the hash tag; Redis Cluster spec, "Hash tags"). Any Redis
//! cluster client computes the same slot for an order id, which is what
//! lets it route by itself.
//!
//! Partitions: [`SLOTS`] split into `P` equal, contiguous ranges
//! (`P` a power of two, at most [`SLOTS`]): partition `p` holds slots
//! `p * SLOTS / P ..= (p + 1) * SLOTS / P - 1`.

use std::ops::RangeInclusive;

/// Hash slots of Redis Cluster.
pub const SLOTS: u16 = 16_384;

/// Default number of partitions (`--partitions`).
pub const DEFAULT_PARTITIONS: u16 = 128;

/// CRC16/XMODEM, the checksum Redis Cluster hashes keys with.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The part of `key` that is hashed: the hash tag if there is a non-empty
/// one, else the whole key.
pub fn hashed_part(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{')
        && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// The Redis Cluster hash slot of `key`.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hashed_part(key)) % SLOTS
}

/// How many partitions share the slots; fixed for the life of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partitions {
    count: u16,
}

/// `--partitions` is not a power of two in `1..=16384`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadPartitionCount(pub u32);

impl std::fmt::Display for BadPartitionCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--partitions must be a power of two from 1 to {SLOTS}, not {}",
            self.0
        )
    }
}

impl std::error::Error for BadPartitionCount {}

impl Partitions {
    /// `count` partitions; a power of two from 1 to [`SLOTS`].
    pub fn new(count: u32) -> Result<Partitions, BadPartitionCount> {
        if count == 0 || count > SLOTS as u32 || !count.is_power_of_two() {
            return Err(BadPartitionCount(count));
        }
        Ok(Partitions {
            count: count as u16,
        })
    }

    /// How many partitions.
    pub fn count(self) -> u16 {
        self.count
    }

    /// Slots per partition.
    pub fn width(self) -> u16 {
        SLOTS / self.count
    }

    /// The partition holding `slot`.
    pub fn of_slot(self, slot: u16) -> u16 {
        debug_assert!(slot < SLOTS, "slot={slot} out of range");
        slot / self.width()
    }

    /// The partition of an order id.
    pub fn of_key(self, key: &[u8]) -> u16 {
        self.of_slot(key_slot(key))
    }

    /// The slots of partition `p`.
    pub fn slots(self, p: u16) -> RangeInclusive<u16> {
        debug_assert!(p < self.count, "partition={p} count={}", self.count);
        let start = p * self.width();
        start..=start + self.width() - 1
    }

    /// Every partition, in slot order.
    pub fn iter(self) -> impl Iterator<Item = u16> {
        0..self.count
    }
}

/// The hash tag every key of partition `p` carries: `{tw:p017}` for prefix
/// `tw:`. One tag, so one slot of a Redis Cluster: a script may touch them
/// all at once.
pub fn tag(prefix: &str, p: u16) -> String {
    format!("{{{prefix}p{p:03}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_the_redis_cluster_spec() {
        // The spec's test vector: CRC16 of "123456789" is 0x31C3.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn key_slot_matches_redis() {
        // Values printed by `redis-cli CLUSTER KEYSLOT` on Redis 7.0.
        for (key, slot) in [
            (&b"foo"[..], 12182),
            (b"bar", 5061),
            (b"hello", 866),
            (b"123456789", 12739),
            (b"{user1000}.following", 3443),
            (b"{user1000}.followers", 3443),
            (b"user1000", 3443),
        ] {
            assert_eq!(key_slot(key), slot, "{}", key.escape_ascii());
        }
    }

    #[test]
    fn hash_tag_rule_at_every_edge() {
        assert_eq!(hashed_part(b"{a}b"), b"a");
        assert_eq!(hashed_part(b"x{a}b{c}"), b"a", "first tag only");
        assert_eq!(
            hashed_part(b"{}a"),
            b"{}a",
            "empty tag hashes the whole key"
        );
        assert_eq!(hashed_part(b"{}{a}"), b"{}{a}", "only the first {{ counts");
        assert_eq!(hashed_part(b"{a"), b"{a", "no closing brace");
        assert_eq!(hashed_part(b"a}b{"), b"a}b{", "close before open");
        assert_eq!(
            hashed_part(b"{{a}}"),
            b"{a",
            "from the first {{ to the next }}"
        );
        assert_eq!(hashed_part(b"o:1"), b"o:1");
    }

    #[test]
    fn partitions_split_the_slots_evenly_and_contiguously() {
        for count in [1u32, 2, 128, 1024, 16384] {
            let parts = Partitions::new(count).unwrap();
            let mut next = 0u32;
            for p in parts.iter() {
                let slots = parts.slots(p);
                assert_eq!(*slots.start() as u32, next, "count={count} p={p}");
                assert_eq!(parts.of_slot(*slots.start()), p);
                assert_eq!(parts.of_slot(*slots.end()), p);
                next = *slots.end() as u32 + 1;
            }
            assert_eq!(next, SLOTS as u32, "count={count}");
        }
        for bad in [0u32, 3, 100, 16385, 32768] {
            assert_eq!(Partitions::new(bad), Err(BadPartitionCount(bad)));
        }
    }

    #[test]
    fn tags_put_every_key_of_a_partition_in_one_slot() {
        assert_eq!(tag("tw:", 17), "{tw:p017}");
        let due = format!("{}:due", tag("tw:", 17));
        let epoch = format!("{}:epoch", tag("tw:", 17));
        let stream = format!("orders:{}", tag("tw:", 17));
        assert_eq!(key_slot(due.as_bytes()), key_slot(epoch.as_bytes()));
        assert_eq!(key_slot(due.as_bytes()), key_slot(stream.as_bytes()));
    }
}
