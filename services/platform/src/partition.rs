//! Splitting a feed's tenants into a fixed number of partitions, so that replicas of a
//! consumer share the work: a tenant's events all go to one partition, by a stable hash of the
//! tenant's id (the same in every process and release: FNV-1a, 64 bits).

/// The most partitions a feed may be split into.
pub const MAX_PARTITIONS: u32 = 1024;

/// Partition `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition {
    pub index: u32,
    pub count: u32,
}

impl Partition {
    /// Partition `index` of `count` (1 to [`MAX_PARTITIONS`]), if it is one.
    pub fn new(index: u32, count: u32) -> Result<Partition, String> {
        if count == 0 || count > MAX_PARTITIONS {
            return Err(format!("a feed has 1 to {MAX_PARTITIONS} partitions, not {count}"));
        }
        if index >= count {
            return Err(format!("partition {index} is not one of 0 to {}", count - 1));
        }
        Ok(Partition { index, count })
    }

    /// Whether `tenant`'s events are in this partition.
    pub fn holds(self, tenant: &str) -> bool {
        partition_of(tenant, self.count) == self.index
    }
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The partition of `tenant` among `count` (0 when `count` is 0).
pub fn partition_of(tenant: &str, count: u32) -> u32 {
    if count == 0 {
        return 0;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in tenant.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    u32::try_from(hash % u64::from(count)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fnv1a_and_spreads_tenants() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c (the published test vector).
        assert_eq!(
            partition_of("a", u32::MAX),
            u32::try_from(0xaf63_dc4c_8601_ec8c_u64 % u64::from(u32::MAX)).expect("a u32")
        );
        let mut seen = [0u32; 8];
        for i in 0..800 {
            seen[partition_of(&format!("tenant-{i}"), 8) as usize] += 1;
        }
        assert!(seen.iter().all(|n| *n > 50), "{seen:?}");
        assert!(Partition::new(8, 8).is_err() && Partition::new(0, 0).is_err());
        let p = Partition::new(3, 8).expect("partition");
        assert_eq!(p.holds("tenant-1"), partition_of("tenant-1", 8) == 3);
    }
}
