//! A tenant's analytics settings: the reporting currency and the windows some formulas take.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The settings a tenant has (the defaults until an admin changes them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// ISO 4217; empty until set.
    pub reporting_currency: String,
    pub response_window_days: i32,
    pub churn_window_days: i32,
    /// Days without activity after which an open deal is stalled (`DealStalled`).
    #[serde(default = "default_stall_days")]
    pub stall_days: i32,
    pub update_time: Option<DateTime<Utc>>,
    pub updated_by: String,
}

/// Days a campaign's answer counts as a response, until an admin says otherwise.
pub const RESPONSE_WINDOW_DAYS: i32 = 30;

/// Days without a win after which a customer not at lifecycle CUSTOMER is churned, until an
/// admin says otherwise.
pub const CHURN_WINDOW_DAYS: i32 = 365;

/// Days without activity after which an open deal is stalled, until an admin says otherwise.
pub const STALL_DAYS: i32 = 14;

fn default_stall_days() -> i32 {
    STALL_DAYS
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            reporting_currency: String::new(),
            response_window_days: RESPONSE_WINDOW_DAYS,
            churn_window_days: CHURN_WINDOW_DAYS,
            stall_days: STALL_DAYS,
            update_time: None,
            updated_by: String::new(),
        }
    }
}

/// What an update changes (None: unchanged).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SettingsChange {
    pub reporting_currency: Option<String>,
    pub response_window_days: Option<i32>,
    pub churn_window_days: Option<i32>,
    pub stall_days: Option<i32>,
}

fn within(value: i32, max: i32) -> Result<i32, String> {
    if (1..=max).contains(&value) {
        Ok(value)
    } else {
        Err(format!("must be from 1 to {max} days"))
    }
}

impl Settings {
    /// The settings with `change` applied, or every field it gets wrong with the reason.
    pub fn changed(&self, change: &SettingsChange) -> Result<Settings, Vec<(&'static str, String)>> {
        let mut next = self.clone();
        let mut broken = Vec::new();
        if let Some(currency) = &change.reporting_currency {
            // Empty: no reporting currency (amounts are reported per currency).
            match crm_platform::money::currency_code(currency)
                .or_else(|e| if currency.is_empty() { Ok(String::new()) } else { Err(e) })
            {
                Ok(code) => next.reporting_currency = code,
                Err(reason) => broken.push(("reporting_currency", reason)),
            }
        }
        for (field, value, max, slot) in [
            (
                "response_window_days",
                change.response_window_days,
                365,
                &mut next.response_window_days,
            ),
            (
                "churn_window_days",
                change.churn_window_days,
                3650,
                &mut next.churn_window_days,
            ),
            ("stall_days", change.stall_days, 365, &mut next.stall_days),
        ] {
            if let Some(value) = value {
                match within(value, max) {
                    Ok(value) => *slot = value,
                    Err(reason) => broken.push((field, reason)),
                }
            }
        }
        if broken.is_empty() { Ok(next) } else { Err(broken) }
    }

    /// The response window as a duration.
    pub fn response_window(&self) -> chrono::Duration {
        chrono::Duration::days(i64::from(self.response_window_days))
    }

    /// The churn window as a duration.
    pub fn churn_window(&self) -> chrono::Duration {
        chrono::Duration::days(i64::from(self.churn_window_days))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_names_every_wrong_field_and_changes_nothing_else() {
        let settings = Settings::default();
        let broken = settings
            .changed(&SettingsChange {
                reporting_currency: Some("eur".into()),
                response_window_days: Some(0),
                churn_window_days: Some(90),
                stall_days: None,
            })
            .expect_err("wrong");
        let fields: Vec<&str> = broken.iter().map(|(f, _)| *f).collect();
        assert_eq!(fields, ["reporting_currency", "response_window_days"]);
        let next = settings
            .changed(&SettingsChange {
                churn_window_days: Some(90),
                ..SettingsChange::default()
            })
            .expect("valid");
        assert_eq!(
            (next.churn_window_days, next.response_window_days),
            (90, RESPONSE_WINDOW_DAYS)
        );
    }
}
