//! Splitting a feed's tenants into a fixed number of partitions, so that replicas of a
//! consumer share the work: a tenant's events all go to one partition, by a stable key of the
//! tenant's id (the same in every process, release and database): the first 60 bits of its
//! SHA-256, which PostgreSQL computes too ([`SQL_KEY`]), so a feed filters in its query.

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

/// The key of `tenant`: the first 60 bits of the SHA-256 of its id.
pub fn partition_key(tenant: &str) -> u64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(tenant.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) >> 4
}

/// [`partition_key`] in PostgreSQL, of the column `tenant_id`.
pub const SQL_KEY: &str =
    "('x' || substr(encode(sha256(convert_to(tenant_id, 'UTF8')), 'hex'), 1, 15))::bit(60)::bigint";

/// The partition of `tenant` among `count` (0 when `count` is 0): its key modulo `count`.
pub fn partition_of(tenant: &str, count: u32) -> u32 {
    if count == 0 {
        return 0;
    }
    u32::try_from(partition_key(tenant) % u64::from(count)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_the_first_60_bits_of_sha256_and_spreads_tenants() {
        // SHA-256("abc") begins ba7816bf8f01cfea (the published test vector).
        assert_eq!(partition_key("abc"), 0xba78_16bf_8f01_cfea >> 4);
        let mut seen = [0u32; 8];
        for i in 0..800 {
            seen[partition_of(&format!("tenant-{i}"), 8) as usize] += 1;
        }
        assert!(seen.iter().all(|n| *n > 50), "{seen:?}");
        assert!(Partition::new(8, 8).is_err() && Partition::new(0, 0).is_err());
        let p = Partition::new(3, 8).expect("partition");
        assert_eq!(p.holds("tenant-1"), partition_of("tenant-1", 8) == 3);
    }

    /// PostgreSQL computes the same key, so a feed's query filters by partition.
    #[tokio::test]
    async fn postgresql_computes_the_same_key() {
        let Some(db) = crate::testing::TestDatabase::create("partition_key").await else {
            return;
        };
        let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
        for tenant in ["acme", "globex", "tenant-7", "ünïcode"] {
            let key: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT {SQL_KEY} FROM (SELECT $1::text AS tenant_id) t"
            )))
            .bind(tenant)
            .fetch_one(&pool)
            .await
            .expect("key");
            assert_eq!(
                u64::try_from(key).expect("non-negative"),
                partition_key(tenant),
                "{tenant}"
            );
        }
        pool.close().await;
        db.drop_database().await;
    }
}
