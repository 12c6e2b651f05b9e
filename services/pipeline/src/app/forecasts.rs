//! Forecast submissions (immutable) and quotas: the inputs of forecast accuracy.

use crm_platform::{ApiError, UserId};

use super::{Caller, Page, PipelineApp, Rec, event, put};
use crate::convert;
use crate::domain::{Forecast, ForecastCategory, ForecastId, Money, Period, Quota};
use crate::store::{Filter, Kind, ListQuery, StoreError, Write};
use crm_proto::crm::pipeline::v1 as pb;

fn user(raw: &str, field: &str) -> Result<UserId, ApiError> {
    UserId::parse(raw).map_err(|r| ApiError::invalid_field(field, r))
}

impl PipelineApp {
    /// Records a submission; it is never changed afterwards (a new submission supersedes it).
    pub async fn submit_forecast(
        &self,
        caller: &Caller,
        owner: Option<String>,
        period: Period,
        amount: Money,
        category: ForecastCategory,
        request: Option<&crm_platform::idempotency::RequestKey>,
    ) -> Result<Rec<Forecast>, ApiError> {
        let owner = owner.unwrap_or_else(|| caller.user().to_owned());
        caller.who.ensure_can_write_owned_by(&user(&owner, "forecast.owner")?)?;
        if let Some(done) = self.replay(caller, Kind::Forecast, request).await? {
            return Ok(done);
        }
        let record = Rec::new(
            Forecast {
                owner,
                period: period.to_string(),
                amount,
                category,
                submitted_by: caller.user().to_owned(),
            },
            self.now(),
        );
        let write = Write {
            puts: vec![put(Kind::Forecast, &record, None)?],
            events: vec![event(
                caller,
                ForecastId::COLLECTION,
                &record,
                &pb::ForecastSubmitted {
                    forecast: Some(convert::forecast(&record)),
                },
            )?],
            ..Write::default()
        };
        self.create(caller, Kind::Forecast, request, record, write).await
    }

    pub async fn list_forecasts(
        &self,
        caller: &Caller,
        filters: Vec<Filter>,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<Forecast>, ApiError> {
        self.list_page(caller, Kind::Forecast, filters, page_size, page_token)
            .await
    }

    /// Sets (creates or replaces) a user's quota for a period.
    pub async fn set_quota(
        &self,
        caller: &Caller,
        owner: String,
        period: Period,
        amount: Money,
    ) -> Result<Rec<Quota>, ApiError> {
        if !caller.who.writes_all() {
            return Err(ApiError::permission_denied("only managers and admins set quotas"));
        }
        user(&owner, "quota.owner")?;
        let period = period.to_string();
        let body = Quota {
            owner: owner.clone(),
            period: period.clone(),
            amount,
            set_by: caller.user().to_owned(),
        };
        // Read, then write at the revision read; a concurrent first setting of the same quota
        // loses on the unique (owner, period) and is retried as an update.
        for _ in 0..3 {
            let existing = self
                .list_records::<Quota>(
                    caller.tenant(),
                    &ListQuery {
                        kind: Kind::Quota,
                        filters: vec![Filter::Owner(owner.clone()), Filter::Period(period.clone())],
                        after: None,
                        limit: 1,
                    },
                )
                .await?
                .pop()
                .map(|(_, rec)| rec);
            let now = self.now();
            let (record, expected) = match &existing {
                Some(current) if current.body == body => return Ok(current.clone()),
                Some(current) => (current.next(body.clone(), now), Some(current.revision)),
                None => (Rec::new(body.clone(), now), None),
            };
            let write = Write {
                puts: vec![put(Kind::Quota, &record, expected)?],
                events: vec![crm_platform::outbox::NewEvent {
                    subject: format!("quotas/{owner}/{period}"),
                    ..event(
                        caller,
                        "quotas",
                        &record,
                        &pb::QuotaSet {
                            quota: Some(convert::quota(&record)),
                        },
                    )?
                }],
                ..Write::default()
            };
            match self.store.write(caller.tenant(), &write).await {
                Ok(()) => return Ok(record),
                Err(StoreError::Stale | StoreError::Taken(_)) => continue,
                Err(err) => return Err(super::store_error(err)),
            }
        }
        Err(StoreError::Stale.into_api())
    }

    pub async fn list_quotas(
        &self,
        caller: &Caller,
        filters: Vec<Filter>,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<Quota>, ApiError> {
        self.list_page(caller, Kind::Quota, filters, page_size, page_token)
            .await
    }
}
