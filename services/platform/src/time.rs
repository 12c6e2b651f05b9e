//! Times as the suite stores and sends them: UTC, whole microseconds (the precision both
//! databases keep), and `google.protobuf.Timestamp` on the wire.

use chrono::{DateTime, Utc};

/// Truncates a time to whole microseconds, the precision both databases store.
pub fn to_micros(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(time.timestamp_micros()).unwrap_or(time)
}

/// Now, at storage precision, so that what a write returns is what a later read returns.
pub fn now() -> DateTime<Utc> {
    to_micros(Utc::now())
}

/// A time as a protobuf Timestamp.
pub fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A protobuf Timestamp from a request, at storage precision (years 1900 to 9999).
pub fn from_timestamp(ts: &prost_types::Timestamp) -> Result<DateTime<Utc>, String> {
    u32::try_from(ts.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(ts.seconds, nanos))
        .filter(|t| (1900..=9999).contains(&chrono::Datelike::year(t)))
        .map(to_micros)
        .ok_or_else(|| "is not a valid time between the years 1900 and 9999".to_owned())
}
