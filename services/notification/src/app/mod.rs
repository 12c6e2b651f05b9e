//! The notification application: who may manage endpoints and rules, read deliveries and
//! their inboxes; one file per resource.

pub mod backtest;
mod deliveries;
pub mod emails;
pub mod endpoints;
pub mod inbox;
pub mod rules;

use std::sync::Arc;

use crm_platform::time::{Clock, SystemClock};
use crm_platform::{ApiError, Principal, Role, TenantId};
use tokio::sync::Notify;

pub use inbox::{MAX_MARKED, Watched};

pub use crate::domain::InboxChange;

/// Inbox changes a slow watcher may fall behind by before it looks again.
const INBOX_CHANGES: usize = 1024;

use crate::domain::MAX_ENDPOINTS;
use crate::domain::matching::{Compiled, TenantRules};
use crate::domain::members::{Members, active_since};
use crate::history::History;
use crate::store::{NotificationStore, StoreError};

/// The application over a store.
#[derive(Clone)]
pub struct NotificationApp {
    store: Arc<dyn NotificationStore>,
    clock: Arc<dyn Clock>,
    /// Wakes the delivery worker when deliveries become due.
    due: Arc<Notify>,
    /// Wakes the email worker when emails become due.
    mail_due: Arc<Notify>,
    /// The retained events, for backtests (None: not available here).
    history: Option<Arc<dyn History>>,
    /// Changes of inboxes, for their watchers.
    inbox_changes: tokio::sync::broadcast::Sender<crate::domain::InboxChange>,
    /// The inbox watches open, per user.
    watches: inbox::Watches,
    /// Backtests running in this process (see [`backtest::AT_ONCE`]).
    backtests: Arc<tokio::sync::Semaphore>,
}

impl NotificationApp {
    pub fn new(store: Arc<dyn NotificationStore>) -> Self {
        Self::with_clock(store, Arc::new(SystemClock))
    }

    /// The application reading the time from `clock` (tests drive it).
    pub fn with_clock(store: Arc<dyn NotificationStore>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            due: Arc::new(Notify::new()),
            mail_due: Arc::new(Notify::new()),
            history: None,
            inbox_changes: tokio::sync::broadcast::Sender::new(INBOX_CHANGES),
            watches: inbox::Watches::default(),
            backtests: Arc::new(tokio::sync::Semaphore::new(backtest::AT_ONCE)),
        }
    }

    /// The application reading retained events from `history` for backtests.
    pub fn with_history(mut self, history: Arc<dyn History>) -> Self {
        self.history = Some(history);
        self
    }

    pub fn store(&self) -> &Arc<dyn NotificationStore> {
        &self.store
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Rung when deliveries become due (the delivery worker waits on it).
    pub fn due(&self) -> &Arc<Notify> {
        &self.due
    }

    /// Rung when emails become due (the email worker waits on it).
    pub fn mail_due(&self) -> &Arc<Notify> {
        &self.mail_due
    }

    /// `tenant` as matching sees it under `rules`: its endpoints, what its users muted, and,
    /// when a rule names a role, who holds each.
    pub async fn tenant_rules(&self, tenant: &TenantId, rules: Vec<Compiled>) -> Result<TenantRules, StoreError> {
        let members = if TenantRules::names_a_role(&rules) {
            self.store.members(tenant, active_since(self.clock.now())).await?
        } else {
            Members::default()
        };
        Ok(TenantRules {
            rules,
            endpoints: self.store.endpoints(tenant, None, MAX_ENDPOINTS).await?,
            muted: self.store.muted(tenant).await?,
            members,
        })
    }
}

/// Fails unless the caller is an admin.
fn ensure_admin(who: &Principal, what: &str) -> Result<(), ApiError> {
    if who.has_role(Role::Admin) {
        Ok(())
    } else {
        Err(ApiError::permission_denied(format!("{what} are managed by admins")))
    }
}

/// Fails unless the caller is an admin or a manager.
fn ensure_manager(who: &Principal, what: &str) -> Result<(), ApiError> {
    if who.writes_all() {
        Ok(())
    } else {
        Err(ApiError::permission_denied(format!(
            "{what} are managed by admins and managers"
        )))
    }
}
