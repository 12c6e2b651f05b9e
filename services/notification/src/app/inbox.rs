//! A user's in-app inbox: every user reads, marks, archives and watches their own
//! notifications, never another's. Each change of an inbox is announced on a broadcast (by
//! this process, and on PostgreSQL by every replica, see [`crate::store::INBOX_CHANNEL`]), so
//! a watcher of that inbox on any replica hears of it.

use std::time::Duration;

use crm_platform::error::Violations;
use crm_platform::paging::{Page, PageRequest};
use crm_platform::{ApiError, Principal};
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

use super::NotificationApp;
use crate::domain::{InboxChange, Notification, NotificationId};
use crate::store::{InboxCounts, View};

/// Most notifications marked or archived in one call.
pub const MAX_MARKED: usize = 1000;
/// How often a watched inbox's counts are sent when nothing changes.
const WATCH_HEARTBEAT: Duration = Duration::from_secs(30);
/// New notifications read at once for a watcher.
const WATCH_BATCH: usize = 100;
/// Watches one user may hold open on one process at once (their tabs and devices).
pub const MAX_WATCHES: usize = 16;

/// The watches open on this process, per (tenant, user).
pub(crate) type Watches = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<(String, String), usize>>>;

/// One open watch, counted while it lives.
struct WatchSlot {
    watches: Watches,
    key: (String, String),
}

impl WatchSlot {
    /// A slot for `key`, or None when it holds [`MAX_WATCHES`] already.
    fn take(watches: &Watches, key: (String, String)) -> Option<Self> {
        let mut open = watches.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(key.clone()).or_default();
        if *count >= MAX_WATCHES {
            return None;
        }
        *count += 1;
        Some(Self {
            watches: std::sync::Arc::clone(watches),
            key,
        })
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self.watches.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// What a watcher is sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Watched {
    Notification(Notification),
    Counts(InboxCounts),
}

impl NotificationApp {
    pub async fn inbox(
        &self,
        who: &Principal,
        view: View,
        page: &PageRequest<Uuid>,
    ) -> Result<Page<Notification>, ApiError> {
        let listed = self
            .store
            .notifications(&who.tenant, who.user.as_str(), view, page.after, page.fetch())
            .await?;
        Ok(page.page(listed, |n| n.id))
    }

    pub async fn counts(&self, who: &Principal) -> Result<InboxCounts, ApiError> {
        Ok(self.store.counts(&who.tenant, who.user.as_str()).await?)
    }

    /// The ids `names` names, or a 400 naming each that is not one of a notification.
    fn ids(names: &[String]) -> Result<Vec<Uuid>, ApiError> {
        let mut v = Violations::new("");
        if names.is_empty() {
            v.add("names", "at least one notification is required");
        }
        let mut ids = Vec::new();
        for (i, name) in v.bounded("names", names, MAX_MARKED).iter().enumerate() {
            if let Some(id) = v.check(format!("names[{i}]"), NotificationId::parse_name(name)) {
                ids.push(id.0);
            }
        }
        v.finish()?;
        Ok(ids)
    }

    /// Marks the caller's notifications of `names` read; how many were unread.
    pub async fn mark_read(&self, who: &Principal, names: &[String]) -> Result<i64, ApiError> {
        let ids = Self::ids(names)?;
        let marked = self.store.mark_read(&who.tenant, who.user.as_str(), &ids).await?;
        self.changed(who, marked);
        Ok(marked)
    }

    /// Marks every notification of the caller seen; how many were unseen.
    pub async fn mark_seen(&self, who: &Principal) -> Result<i64, ApiError> {
        let marked = self.store.mark_seen(&who.tenant, who.user.as_str()).await?;
        self.changed(who, marked);
        Ok(marked)
    }

    /// Archives the caller's notifications of `names`; how many were in the inbox.
    pub async fn archive(&self, who: &Principal, names: &[String]) -> Result<i64, ApiError> {
        let ids = Self::ids(names)?;
        let archived = self.store.archive(&who.tenant, who.user.as_str(), &ids).await?;
        self.changed(who, archived);
        Ok(archived)
    }

    fn changed(&self, who: &Principal, how_many: i64) {
        if how_many > 0 {
            self.announce(InboxChange {
                tenant: who.tenant.as_str().to_owned(),
                user: who.user.as_str().to_owned(),
            });
        }
    }

    /// Tells this process's watchers of `change`.
    pub fn announce(&self, change: InboxChange) {
        // No receiver: nobody watches.
        let _ = self.inbox_changes.send(change);
    }

    /// The broadcast of inbox changes (a PostgreSQL listener feeds it with other replicas').
    pub fn inbox_changes(&self) -> &broadcast::Sender<InboxChange> {
        &self.inbox_changes
    }

    /// Watches the caller's inbox: its counts at once, then each new notification and the
    /// counts after each change, and the counts every [`WATCH_HEARTBEAT`], until the receiver
    /// is dropped, or `until` (when the caller's token expires: the watch ends with an
    /// UNAUTHENTICATED error, and the caller watches again with a fresh token).
    pub async fn watch(
        &self,
        who: &Principal,
        until: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<mpsc::Receiver<Result<Watched, ApiError>>, ApiError> {
        let key = (who.tenant.as_str().to_owned(), who.user.as_str().to_owned());
        let slot = WatchSlot::take(&self.watches, key).ok_or_else(|| {
            ApiError::new(
                crm_platform::error::ErrorCode::ResourceExhausted,
                "TOO_MANY_WATCHES",
                format!("a user watches their inbox {MAX_WATCHES} times at most at once; close one"),
            )
        })?;
        // Subscribed before the first read, so no change after it is missed.
        let mut changes = self.inbox_changes.subscribe();
        let newest = self
            .store
            .notifications(&who.tenant, who.user.as_str(), View::All, None, 1)
            .await?;
        let mut last = newest.first().map_or(Uuid::nil(), |n| n.id);
        let counts = self.counts(who).await?;
        let (tx, rx) = mpsc::channel(WATCH_BATCH);
        let (app, who) = (self.clone(), who.clone());
        let expires =
            until.map(|until| tokio::time::Instant::now() + (until - self.clock.now()).to_std().unwrap_or_default());
        tokio::spawn(async move {
            // Counted until the watch ends.
            let _slot = slot;
            if tx.send(Ok(Watched::Counts(counts))).await.is_err() {
                return;
            }
            let expired = async {
                match expires {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(expired);
            loop {
                let mine = tokio::select! {
                    () = tx.closed() => return,
                    () = &mut expired => {
                        let _ = tx
                            .send(Err(ApiError::unauthenticated(
                                "TOKEN_EXPIRED",
                                "the token has expired: watch again with a fresh one",
                            )))
                            .await;
                        return;
                    }
                    () = tokio::time::sleep(WATCH_HEARTBEAT) => false,
                    change = changes.recv() => match change {
                        Ok(c) => c.concerns(who.tenant.as_str(), who.user.as_str()),
                        // Missed some: look anyway.
                        Err(broadcast::error::RecvError::Lagged(_)) => true,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                };
                if mine {
                    loop {
                        let new = match app
                            .store
                            .notifications_since(&who.tenant, who.user.as_str(), last, WATCH_BATCH)
                            .await
                        {
                            Ok(new) => new,
                            Err(e) => {
                                let _ = tx.send(Err(e.into())).await;
                                return;
                            }
                        };
                        let full = new.len() == WATCH_BATCH;
                        for n in new {
                            last = n.id;
                            if tx.send(Ok(Watched::Notification(n))).await.is_err() {
                                return;
                            }
                        }
                        if !full {
                            break;
                        }
                    }
                }
                let counts = match app.counts(&who).await {
                    Ok(counts) => counts,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                if tx.send(Ok(Watched::Counts(counts))).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {

    use crm_platform::{Principal, Role, TenantId, UserId};

    use super::*;

    fn user(name: &str) -> Principal {
        Principal {
            tenant: TenantId::parse("acme").expect("tenant"),
            user: UserId::parse(name).expect("user"),
            roles: vec![Role::Rep],
        }
    }

    #[tokio::test]
    async fn a_user_holds_a_bounded_number_of_watches_and_a_closed_one_frees_its_slot() {
        let (_dir, store) = crate::store::sqlite_for_test().await;
        let app = NotificationApp::new(store);
        let carol = user("carol");
        let mut open = Vec::new();
        for _ in 0..MAX_WATCHES {
            open.push(app.watch(&carol, None).await.expect("watch"));
        }
        let refused = app.watch(&carol, None).await.expect_err("one too many");
        assert_eq!(refused.code, crm_platform::ErrorCode::ResourceExhausted);
        // Another user is not held back by carol's.
        let _bob = app.watch(&user("bob"), None).await.expect("bob's");
        // Closed, a watch frees its slot once its task sees it.
        drop(open.pop());
        let mut again = None;
        for _ in 0..100 {
            if let Ok(watch) = app.watch(&carol, None).await {
                again = Some(watch);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let mut again = again.expect("a slot again");
        assert!(matches!(again.recv().await, Some(Ok(Watched::Counts(_)))));
    }

    #[tokio::test]
    async fn a_watch_ends_when_the_callers_token_expires_and_frees_its_slot() {
        let (_dir, store) = crate::store::sqlite_for_test().await;
        let app = NotificationApp::new(store);
        let carol = user("carol");
        let until = chrono::Utc::now() + chrono::Duration::milliseconds(300);
        let started = std::time::Instant::now();
        let mut watch = app.watch(&carol, Some(until)).await.expect("watch");
        assert!(matches!(watch.recv().await, Some(Ok(Watched::Counts(_)))));
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), watch.recv())
            .await
            .expect("ended at the expiry, not at the heartbeat");
        let Some(Err(e)) = ended else {
            panic!("an error, not {ended:?}");
        };
        assert_eq!(
            (e.code, e.reason.as_ref()),
            (crm_platform::ErrorCode::Unauthenticated, "TOKEN_EXPIRED")
        );
        assert!(started.elapsed() >= std::time::Duration::from_millis(250));
        assert!(watch.recv().await.is_none(), "and then closed");
        // Its slot is free: every one of carol's watches can be opened again.
        let mut open = Vec::new();
        for _ in 0..MAX_WATCHES {
            open.push(app.watch(&carol, None).await.expect("watch"));
        }
    }
}
