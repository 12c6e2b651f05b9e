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

/// Where an application reads the time from: the system's clock in a running service, a
/// [`ManualClock`] in tests, which then move time on instead of sleeping until a due time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now, at storage precision.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        now()
    }
}

/// A clock that stands still until it is moved.
#[derive(Debug)]
pub struct ManualClock(std::sync::Mutex<DateTime<Utc>>);

impl ManualClock {
    /// A clock showing `at`.
    pub fn at(at: DateTime<Utc>) -> Self {
        ManualClock(std::sync::Mutex::new(to_micros(at)))
    }

    /// Moves the clock on by `by`.
    pub fn advance(&self, by: chrono::Duration) {
        let mut time = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *time += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
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
