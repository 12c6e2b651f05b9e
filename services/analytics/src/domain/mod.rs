//! The analytics service's types, valid by construction (no tonic, no sqlx): the facts it
//! keeps and the metrics it computes from them.

pub mod crosssell;
pub mod derived;
pub mod durations;
pub mod facts;
pub mod goals;
pub mod metrics;
pub mod predict;
pub mod settings;
pub mod value;

pub use crm_platform::period::Window;
pub use facts::*;
pub use goals::{Baseline, Goal, GoalSpec, Progress, Target};
pub use metrics::{CATALOGUE, Figure, Grouping, MetricId, MetricInfo};
pub use settings::{Settings, SettingsChange};
pub use value::{CustomerValue, ExchangeRate, Predicted, WonDeal};
