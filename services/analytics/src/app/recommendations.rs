//! Cross-sell: the product pairs are the tenant's aggregates (everyone reads them); a rep reads
//! the recommendations of the customers they own, managers and admins every customer's.

use crm_platform::{ApiError, Principal};
use uuid::Uuid;

use super::AnalyticsApp;
use crate::domain::crosssell::{Baskets, MIN_CONFIDENCE, MIN_SUPPORT, Pair, Recommendation, baskets, pairs, recommend};

/// Rules a pair list answers at most.
const PAIRS_LISTED: usize = 1000;

/// Recommendations a customer gets at most.
const RECOMMENDATIONS_LISTED: usize = 100;

/// The thresholds of a query: each a share from 0 to 1 (the defaults when not given).
fn thresholds(min_support: Option<f64>, min_confidence: Option<f64>) -> Result<(f64, f64), ApiError> {
    let mut violations = crm_platform::error::Violations::new("");
    let mut share = |field: &str, value: Option<f64>, default: f64| {
        let value = value.unwrap_or(default);
        violations
            .check(
                field,
                if (0.0..=1.0).contains(&value) {
                    Ok(value)
                } else {
                    Err(format!("{value} is not a share: from 0 to 1"))
                },
            )
            .unwrap_or(default)
    };
    let support = share("min_support", min_support, MIN_SUPPORT);
    let confidence = share("min_confidence", min_confidence, MIN_CONFIDENCE);
    violations.finish()?;
    Ok((support, confidence))
}

impl AnalyticsApp {
    async fn baskets(&self, who: &Principal) -> Result<Baskets, ApiError> {
        let rows = self.store.customer_products(&who.tenant).await?;
        Ok(baskets(&rows))
    }

    /// The tenant's product rules above the thresholds, and the customers they are over.
    pub async fn product_pairs(
        &self,
        who: &Principal,
        min_support: Option<f64>,
        min_confidence: Option<f64>,
    ) -> Result<(Vec<Pair>, i64), ApiError> {
        let (support, confidence) = thresholds(min_support, min_confidence)?;
        let baskets = self.baskets(who).await?;
        let mut rules = pairs(&baskets, support, confidence);
        rules.truncate(PAIRS_LISTED);
        Ok((rules, i64::try_from(baskets.len()).unwrap_or(i64::MAX)))
    }

    /// What `customer` lacks (a rep's own customers only).
    pub async fn recommendations(
        &self,
        who: &Principal,
        customer: Uuid,
        min_support: Option<f64>,
        min_confidence: Option<f64>,
    ) -> Result<Vec<Recommendation>, ApiError> {
        let (support, confidence) = thresholds(min_support, min_confidence)?;
        self.ensure_reads_customer(who, customer).await?;
        let baskets = self.baskets(who).await?;
        let mut advice = recommend(&baskets, customer, support, confidence);
        advice.truncate(RECOMMENDATIONS_LISTED);
        Ok(advice)
    }
}
