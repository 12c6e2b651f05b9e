//! Goals: managers and admins set them; the baseline is computed once, when the goal is set,
//! and frozen. Reps see the tenant's goals and their own.

use crm_platform::error::FieldViolation;
use crm_platform::{ApiError, Principal, TenantId};
use uuid::Uuid;

use super::AnalyticsApp;
use crate::domain::*;
use crate::store::GOALS_LISTED;

/// A goal with where it stands now.
#[derive(Debug, Clone)]
pub struct Tracked {
    pub goal: Goal,
    pub progress: Progress,
}

impl AnalyticsApp {
    /// Sets a goal, freezing its baseline.
    pub async fn create_goal(&self, who: &Principal, spec: GoalSpec) -> Result<Tracked, ApiError> {
        if !who.writes_all() {
            return Err(ApiError::permission_denied("goals are set by managers and admins"));
        }
        let metric = MetricId::parse(&spec.metric).map_err(|reason| ApiError::invalid_field("metric", reason))?;
        let info = metric.info();
        let now = self.clock.now();
        let broken = spec.check(info, now.date_naive());
        if !broken.is_empty() {
            return Err(ApiError::invalid_fields(
                broken
                    .into_iter()
                    .map(|(field, description)| FieldViolation {
                        field: format!("goal.{field}"),
                        description,
                    })
                    .collect(),
            ));
        }
        let watermarks = self.watermarks_of(&who.tenant).await?;
        let figure = self
            .figure_of(&who.tenant, metric, spec.baseline_window(), spec.owner.as_deref())
            .await?;
        if let Some(reason) = spec.target.unreachable_from(figure.value) {
            return Err(ApiError::invalid_field("goal.target", reason));
        }
        let goal = Goal {
            id: Uuid::now_v7(),
            spec,
            baseline: Baseline {
                value: figure.value,
                count: figure.count,
                formula_version: info.version,
                watermarks,
                freeze_time: now,
            },
            created_by: who.user.as_str().to_owned(),
            create_time: now,
        };
        self.store.create_goal(&who.tenant, &goal).await?;
        self.track(&who.tenant, goal).await
    }

    /// A goal with its progress.
    pub async fn get_goal(&self, who: &Principal, id: Uuid) -> Result<Tracked, ApiError> {
        let goal = self
            .store
            .goal(&who.tenant, id)
            .await?
            .filter(|g| visible(who, g))
            .ok_or_else(|| ApiError::not_found("goal"))?;
        self.track(&who.tenant, goal).await
    }

    /// The tenant's goals the caller may see, newest first.
    pub async fn list_goals(&self, who: &Principal) -> Result<Vec<Tracked>, ApiError> {
        let goals = self.store.goals(&who.tenant, GOALS_LISTED).await?;
        let mut tracked = Vec::new();
        for goal in goals.into_iter().filter(|g| visible(who, g)) {
            tracked.push(self.track(&who.tenant, goal).await?);
        }
        Ok(tracked)
    }

    pub(super) async fn track(&self, tenant: &TenantId, goal: Goal) -> Result<Tracked, ApiError> {
        let now = self.clock.now();
        let metric = goal
            .spec
            .metric()
            .map_err(|reason| ApiError::internal(&format!("stored goal: {reason}")))?;
        let figure = self
            .figure_of(
                tenant,
                metric,
                goal.current_window(now.date_naive()),
                goal.spec.owner.as_deref(),
            )
            .await?;
        let progress = goal.progress(figure.value, figure.count, now);
        Ok(Tracked { goal, progress })
    }

    /// The figure of `metric` over `window`: the tenant's, or `owner`'s.
    async fn figure_of(
        &self,
        tenant: &TenantId,
        metric: MetricId,
        window: Window,
        owner: Option<&str>,
    ) -> Result<Figure, ApiError> {
        let grouping = if owner.is_some() {
            Grouping::Owner
        } else {
            Grouping::Tenant
        };
        let figures = self.figures(tenant, metric, window, grouping).await?;
        let found = match owner {
            Some(owner) => figures.into_iter().find(|f| f.group == owner),
            None => figures.into_iter().next(),
        };
        Ok(found.unwrap_or(Figure {
            group: owner.unwrap_or_default().to_owned(),
            value: None,
            count: 0,
            parts: Default::default(),
        }))
    }
}

/// Whether `who` may see `goal`: managers and admins every goal, others the tenant's and their
/// own.
fn visible(who: &Principal, goal: &Goal) -> bool {
    who.writes_all()
        || goal
            .spec
            .owner
            .as_deref()
            .is_none_or(|owner| owner == who.user.as_str())
}
