//! The analytics application: who may read which figure, and the figures from the facts.
//! One file per resource: `metrics` (the catalogue and queries), `goals`, `reports` (before
//! and after), `ingest` (its status), `settings` (and exchange rates), `value` (customer value
//! and segments), `recommendations` (cross-sell).

mod derive;
mod goals;
mod ingest;
mod metrics;
mod recommendations;
mod reports;
mod settings;
mod value;

use std::sync::Arc;

use crm_platform::time::{Clock, SystemClock};

pub use goals::Tracked;
pub use ingest::IngestStatus;
pub use metrics::Answer;
pub use reports::Comparison;
pub use value::{SEGMENT_PAGE, SEGMENT_PAGE_MAX, Segments};

use crate::store::AnalyticsStore;

/// The application over a store.
#[derive(Clone)]
pub struct AnalyticsApp {
    store: Arc<dyn AnalyticsStore>,
    clock: Arc<dyn Clock>,
}

impl AnalyticsApp {
    pub fn new(store: Arc<dyn AnalyticsStore>) -> Self {
        Self::with_clock(store, Arc::new(SystemClock))
    }

    /// The application reading the time from `clock` (tests drive it).
    pub fn with_clock(store: Arc<dyn AnalyticsStore>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    pub fn store(&self) -> &Arc<dyn AnalyticsStore> {
        &self.store
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
}
