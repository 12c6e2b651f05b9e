//! The shared runtime of every CRM service: configuration, telemetry, authentication and
//! tenancy, the error table, health and shutdown, database pools and migrations, list paging
//! and filtering.

pub mod auth;
pub mod config;
pub mod consumer;
pub mod db;
pub mod error;
pub mod feed;
pub mod filter;
pub mod idempotency;
pub mod identity;
pub mod lease;
pub mod lifecycle;
pub mod metrics;
pub mod money;
pub mod outbox;
pub mod paging;
pub mod partition;
pub mod period;
pub mod resource;
pub mod service;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod text;
pub mod time;
pub mod usage;

pub use error::{ApiError, ErrorCode, FieldViolation};
pub use identity::{Principal, Role, TenantId, UserId};
