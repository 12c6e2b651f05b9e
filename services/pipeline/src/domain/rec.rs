//! A record with its bookkeeping, as the application and the conversions to messages see it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A record: its body and bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rec<T> {
    pub id: Uuid,
    pub revision: i64,
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub create_time: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub update_time: DateTime<Utc>,
    pub body: T,
}

impl<T> Rec<T> {
    pub fn etag(&self) -> String {
        self.revision.to_string()
    }
}
