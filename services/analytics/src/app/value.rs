//! Customer value and segments, and the exchange rates they convert with. Everyone in the
//! tenant reads the segments' sizes; a rep reads the value of the customers they own, managers
//! and admins every customer's; admins set the rates.

use std::collections::BTreeMap;

use crm_platform::error::FieldViolation;
use crm_platform::{ApiError, Principal, Role, TenantId};
use uuid::Uuid;

use super::AnalyticsApp;
use crate::domain::value::{Rates, SEGMENTS, values};
use crate::domain::*;

/// Customers a segment list answers by default.
pub const SEGMENT_PAGE: usize = 50;

/// Customers a segment list answers at most.
pub const SEGMENT_PAGE_MAX: usize = 1000;

/// The segments with their sizes, and the customers of one when asked.
#[derive(Debug, Clone)]
pub struct Segments {
    /// (segment, customers, monetary) in the map's order.
    pub segments: Vec<(&'static str, i64, i64)>,
    pub reporting_currency: String,
    pub customers: Vec<CustomerValue>,
    pub unconverted_customers: i64,
}

impl AnalyticsApp {
    /// Every customer's value in the tenant, and the currency monetary values are in.
    pub(super) async fn scored(&self, tenant: &TenantId) -> Result<(Vec<CustomerValue>, String), ApiError> {
        let settings = self.settings(tenant).await?;
        let deals = self.store.won_deals(tenant).await?;
        let rates = self.store.exchange_rates(tenant).await?;
        // Without a reporting currency, the tenant's one currency if it has one; else every
        // amount is reported unconverted.
        let reporting = if settings.reporting_currency.is_empty() {
            let mut currencies = deals.iter().map(|d| d.currency.as_str());
            match currencies.next() {
                Some(first) if currencies.all(|c| c == first) => first.to_owned(),
                _ => String::new(),
            }
        } else {
            settings.reporting_currency
        };
        let values = values(deals, &Rates::new(&reporting, &rates), self.clock.now());
        Ok((values, reporting))
    }

    /// Fails (not found) unless the caller may read `customer`'s figures: managers and admins
    /// every customer's, a rep or viewer those they own.
    pub(crate) async fn ensure_reads_customer(&self, who: &Principal, customer: Uuid) -> Result<(), ApiError> {
        if who.writes_all() {
            return Ok(());
        }
        let owner = self.store.customer_owner(&who.tenant, customer).await?;
        if owner.as_deref() == Some(who.user.as_str()) {
            Ok(())
        } else {
            Err(ApiError::not_found("customer"))
        }
    }

    /// A customer's value: a rep's own customers only.
    pub async fn customer_value(&self, who: &Principal, customer: Uuid) -> Result<(CustomerValue, String), ApiError> {
        self.ensure_reads_customer(who, customer).await?;
        let (values, reporting) = self.scored(&who.tenant).await?;
        let value = values
            .into_iter()
            .find(|v| v.customer == customer)
            .ok_or_else(|| ApiError::not_found("customer"))?;
        Ok((value, reporting))
    }

    /// The segments' sizes, and with `segment` its most valuable customers (a rep's own only).
    pub async fn segments(
        &self,
        who: &Principal,
        segment: Option<&str>,
        page_size: usize,
    ) -> Result<Segments, ApiError> {
        if let Some(segment) = segment.filter(|s| !SEGMENTS.contains(s)) {
            return Err(ApiError::invalid_field(
                "segment",
                format!("no segment `{segment}`: the segments are {}", SEGMENTS.join(", ")),
            ));
        }
        let (values, reporting) = self.scored(&who.tenant).await?;
        let mut sizes: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        for v in &values {
            let (count, monetary) = sizes.entry(v.segment).or_default();
            *count += 1;
            *monetary = monetary.saturating_add(v.monetary);
        }
        let unconverted_customers = values
            .iter()
            .filter(|v| v.monetary == 0 && !v.unconverted.is_empty())
            .count();
        let mut customers: Vec<CustomerValue> = match segment {
            Some(segment) => values.into_iter().filter(|v| v.segment == segment).collect(),
            None => Vec::new(),
        };
        if !customers.is_empty() && !who.writes_all() {
            let own: std::collections::BTreeSet<Uuid> = self
                .store
                .owned_customers(&who.tenant, who.user.as_str())
                .await?
                .into_iter()
                .collect();
            customers.retain(|v| own.contains(&v.customer));
        }
        customers.sort_by(|a, b| b.monetary.cmp(&a.monetary).then(a.recency_days.cmp(&b.recency_days)));
        customers.truncate(page_size.min(SEGMENT_PAGE_MAX));
        Ok(Segments {
            segments: SEGMENTS
                .iter()
                .map(|s| {
                    let (count, monetary) = sizes.get(s).copied().unwrap_or_default();
                    (*s, count, monetary)
                })
                .collect(),
            reporting_currency: reporting,
            customers,
            unconverted_customers: i64::try_from(unconverted_customers).unwrap_or(i64::MAX),
        })
    }

    /// The tenant's exchange rates.
    pub async fn exchange_rates(&self, tenant: &TenantId) -> Result<Vec<ExchangeRate>, ApiError> {
        self.store.exchange_rates(tenant).await.map_err(ApiError::from)
    }

    /// Sets a currency's rate for a month (admins).
    pub async fn set_exchange_rate(
        &self,
        who: &Principal,
        currency: &str,
        month: &str,
        rate: f64,
    ) -> Result<ExchangeRate, ApiError> {
        if !who.has_role(Role::Admin) {
            return Err(ApiError::permission_denied("exchange rates are set by admins"));
        }
        let problems = ExchangeRate::problems(currency, month, rate);
        if !problems.is_empty() {
            return Err(ApiError::invalid_fields(
                problems
                    .into_iter()
                    .map(|(field, description)| FieldViolation {
                        field: format!("exchange_rate.{field}"),
                        description,
                    })
                    .collect(),
            ));
        }
        let rate = ExchangeRate {
            currency: currency.to_owned(),
            month: month.to_owned(),
            rate,
            update_time: self.clock.now(),
            updated_by: who.user.as_str().to_owned(),
        };
        self.store.put_exchange_rate(&who.tenant, &rate).await?;
        Ok(rate)
    }
}
