//! What the service derives from the facts and publishes on its own feed
//! (`crm.analytics.v1`): a customer's segment change, a goal's status change, a deal gone
//! quiet. A round compares what holds now with what was last published and stores the changes
//! with their events in one transaction, so each change is published exactly once.

use std::collections::BTreeMap;

use crm_platform::outbox::NewEvent;
use crm_platform::{ApiError, TenantId};
use crm_proto::crm::analytics::v1 as pb;
use uuid::Uuid;

use super::AnalyticsApp;
use crate::domain::derived::{self, Current, GoalStatus};
use crate::store::GOALS_LISTED;

fn goal_status(status: Option<GoalStatus>) -> i32 {
    let status = match status {
        None => pb::GoalStatus::Unspecified,
        Some(GoalStatus::OnTrack) => pb::GoalStatus::OnTrack,
        Some(GoalStatus::OffTrack) => pb::GoalStatus::OffTrack,
        Some(GoalStatus::Reached) => pb::GoalStatus::Reached,
    };
    status as i32
}

impl AnalyticsApp {
    /// One round for `tenant`: publishes what changed since the last; returns how many events.
    pub async fn derive(&self, tenant: &TenantId) -> Result<usize, ApiError> {
        let now = self.clock.now();
        let settings = self.settings(tenant).await?;
        let (values, _) = self.scored(tenant).await?;
        let published = self.store.derived(tenant).await?;
        let mut tracked = BTreeMap::new();
        for goal in self.store.goals(tenant, GOALS_LISTED).await? {
            let goal = self.track(tenant, goal).await?;
            tracked.insert(goal.goal.id, goal);
        }
        let stall = chrono::Duration::days(i64::from(settings.stall_days));
        let quiet = self.store.quiet_deals(tenant, now - stall).await?;
        let current = Current {
            segments: values.iter().map(|v| (v.customer, v.segment)).collect(),
            goals: tracked
                .iter()
                .filter_map(|(id, t)| Some((*id, GoalStatus::of(&t.progress)?)))
                .collect(),
            quiet: quiet.iter().collect(),
        };
        let changes = derived::changes(&published, &current);
        if changes.is_empty() {
            return Ok(0);
        }
        let owners: BTreeMap<Uuid, String> = if changes.segments.is_empty() {
            BTreeMap::new()
        } else {
            self.store.customer_owners(tenant).await?.into_iter().collect()
        };
        let scores: BTreeMap<Uuid, &crate::domain::CustomerValue> = values.iter().map(|v| (v.customer, v)).collect();
        let mut events = Vec::new();
        for (customer, from, to) in &changes.segments {
            let value = scores.get(customer);
            events.push(NewEvent::of(
                tenant,
                format!("customers/{customer}"),
                crate::SYSTEM_ACTOR,
                now,
                &pb::SegmentChanged {
                    customer: format!("customers/{customer}"),
                    from: from.clone().unwrap_or_default(),
                    to: to.clone(),
                    owner: owners.get(customer).cloned().unwrap_or_default(),
                    recency_score: value.map_or(0, |v| i32::from(v.recency_score)),
                    frequency_score: value.map_or(0, |v| i32::from(v.frequency_score)),
                    monetary_score: value.map_or(0, |v| i32::from(v.monetary_score)),
                },
            )?);
        }
        for (goal, from, to) in &changes.goals {
            let Some(t) = tracked.get(goal) else { continue };
            events.push(NewEvent::of(
                tenant,
                format!("goals/{goal}"),
                crate::SYSTEM_ACTOR,
                now,
                &pb::GoalStatusChanged {
                    goal: format!("goals/{goal}"),
                    display_name: t.goal.spec.display_name.clone(),
                    metric: t.goal.spec.metric.clone(),
                    from: goal_status(*from),
                    to: goal_status(Some(*to)),
                    value: t.progress.value,
                    share_reached: t.progress.share_reached,
                    owner: t.goal.spec.owner.clone().unwrap_or_else(|| t.goal.created_by.clone()),
                },
            )?);
        }
        for deal in &changes.stalled {
            events.push(NewEvent::of(
                tenant,
                format!("deals/{}", deal.deal),
                crate::SYSTEM_ACTOR,
                now,
                &pb::DealStalled {
                    deal: format!("deals/{}", deal.deal),
                    owner: deal.owner.clone(),
                    pipeline: format!("pipelines/{}", deal.pipeline),
                    stage: deal.stage.map(|s| s.to_string()).unwrap_or_default(),
                    last_activity_time: Some(crm_platform::time::timestamp(deal.last_activity)),
                    days_without_activity: (now - deal.last_activity).num_days(),
                    stall_days: settings.stall_days,
                },
            )?);
        }
        self.store.publish_derived(tenant, &changes, &events).await?;
        Ok(events.len())
    }

    /// Rounds over every tenant every `every`, until `shutdown`. A tenant whose round fails is
    /// logged and tried again next round.
    pub async fn derive_every(self, every: std::time::Duration, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            match self.store.tenants().await {
                Ok(tenants) => {
                    for tenant in tenants {
                        if shutdown.is_cancelled() {
                            return;
                        }
                        match self.derive(&tenant).await {
                            Ok(0) => {}
                            Ok(published) => tracing::debug!(tenant = %tenant, published, "derived changes published"),
                            Err(err) => tracing::warn!(tenant = %tenant, error = %err, "deriving failed"),
                        }
                    }
                }
                Err(err) => tracing::warn!(error = %err, "the tenants could not be read"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}
