//! Customer value: each customer's recency, frequency and monetary value (in the tenant's
//! reporting currency), their scores by quintile within the tenant, and the segment the recency
//! and frequency scores name.
//!
//! Scores follow pandas: `qcut(x.rank(method="first"), 5, labels=[1, 2, 3, 4, 5])`, the order
//! of appearance being the customers' ids in ascending order; the recency score is reversed (the
//! most recent score 5). A tenant with one customer scores it in the first bin (pandas refuses
//! to cut one value).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a customer's won deals of one currency and month came to.
#[derive(Debug, Clone, PartialEq)]
pub struct Purchase {
    pub customer: Uuid,
    pub currency: String,
    /// `YYYY-MM` of the closes.
    pub month: String,
    pub deals: i64,
    pub amount_minor: i64,
    /// The latest close among them.
    pub last: DateTime<Utc>,
}

/// A currency's rate into the reporting currency, from a month on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExchangeRate {
    pub currency: String,
    /// `YYYY-MM`.
    pub month: String,
    /// Minor units of the reporting currency per minor unit of the currency.
    pub rate: f64,
    pub update_time: DateTime<Utc>,
    pub updated_by: String,
}

/// The largest rate accepted.
pub const MAX_RATE: f64 = 1e9;

impl ExchangeRate {
    /// Every field the rate gets wrong, with the reason.
    pub fn problems(currency: &str, month: &str, rate: f64) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if let Err(reason) = crm_platform::money::currency_code(currency) {
            problems.push(("currency", reason));
        }
        if !matches!(
            crm_platform::period::Period::parse(month),
            Ok(crm_platform::period::Period::Month { .. })
        ) {
            problems.push(("month", format!("`{month}` is not a month: use YYYY-MM")));
        }
        if !(rate.is_finite() && rate > 0.0 && rate <= MAX_RATE) {
            problems.push(("rate", format!("{rate} is not a rate: above 0, at most 10^9")));
        }
        problems
    }
}

/// The tenant's rates, ready to convert.
pub struct Rates<'a> {
    reporting: &'a str,
    /// Per currency, (month, rate) in month order.
    by_currency: BTreeMap<&'a str, Vec<(&'a str, f64)>>,
}

impl<'a> Rates<'a> {
    pub fn new(reporting: &'a str, rates: &'a [ExchangeRate]) -> Self {
        let mut by_currency: BTreeMap<&str, Vec<(&str, f64)>> = BTreeMap::new();
        for r in rates {
            by_currency
                .entry(r.currency.as_str())
                .or_default()
                .push((r.month.as_str(), r.rate));
        }
        for months in by_currency.values_mut() {
            months.sort_by(|a, b| a.0.cmp(b.0));
        }
        Rates { reporting, by_currency }
    }

    /// `amount` of `currency` closed in `month`, in the reporting currency: at the rate of the
    /// month, else of the latest month before it; None without one.
    #[allow(clippy::cast_precision_loss)]
    pub fn convert(&self, amount_minor: i64, currency: &str, month: &str) -> Option<f64> {
        if currency == self.reporting {
            return Some(amount_minor as f64);
        }
        let rate = self
            .by_currency
            .get(currency)?
            .iter()
            .rev()
            .find(|(from, _)| *from <= month)?
            .1;
        Some(amount_minor as f64 * rate)
    }
}

/// A segment of the RF map.
pub const SEGMENTS: [&str; 10] = [
    "champions",
    "loyal",
    "potential_loyalists",
    "new",
    "promising",
    "need_attention",
    "about_to_sleep",
    "at_risk",
    "cant_lose",
    "hibernating",
];

/// The segment of a recency and a frequency score (the published RF map).
pub fn segment(r: u8, f: u8) -> &'static str {
    match r {
        0..=2 => match f {
            0..=2 => "hibernating",
            3..=4 => "at_risk",
            _ => "cant_lose",
        },
        3 => match f {
            0..=2 => "about_to_sleep",
            3 => "need_attention",
            _ => "loyal",
        },
        4 => match f {
            0..=1 => "promising",
            2..=3 => "potential_loyalists",
            _ => "loyal",
        },
        _ => match f {
            0..=1 => "new",
            2..=3 => "potential_loyalists",
            _ => "champions",
        },
    }
}

/// A customer's value.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerValue {
    pub customer: Uuid,
    pub last_win: DateTime<Utc>,
    pub recency_days: i64,
    pub frequency: i64,
    /// In minor units of the reporting currency, rounded.
    pub monetary: i64,
    /// Per currency, what could not be converted.
    pub unconverted: BTreeMap<String, i64>,
    pub recency_score: u8,
    pub frequency_score: u8,
    pub monetary_score: u8,
    pub segment: &'static str,
}

/// The labels 1 to 5 of `keys` (one per customer, in the customers' order), as pandas'
/// `qcut(keys.rank(method="first"), 5, labels=[1, 2, 3, 4, 5])` gives them.
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
pub fn quintiles<K: PartialOrd>(keys: &[K]) -> Vec<u8> {
    let n = keys.len();
    let mut order: Vec<usize> = (0..n).collect();
    // Ranks by key, ties in order of appearance (a stable sort).
    order.sort_by(|a, b| keys[*a].partial_cmp(&keys[*b]).unwrap_or(std::cmp::Ordering::Equal));
    let mut labels = vec![0u8; n];
    for (position, index) in order.into_iter().enumerate() {
        let rank = (position + 1) as f64;
        // Bin edges of the ranks 1..n: 1 + (n - 1) k / 5; the label is the first k with
        // rank <= edge (the lowest edge included in the first bin).
        let label = (1..=5u8)
            .find(|k| rank <= 1.0 + (n as f64 - 1.0) * f64::from(*k) / 5.0)
            .unwrap_or(5);
        labels[index] = label;
    }
    labels
}

/// Every customer's value, scored within the tenant, in the customers' order. `now` is the
/// instant recency is measured at.
#[allow(clippy::cast_possible_truncation)]
pub fn values(purchases: &[Purchase], rates: &Rates, now: DateTime<Utc>) -> Vec<CustomerValue> {
    let mut customers: BTreeMap<Uuid, CustomerValue> = BTreeMap::new();
    let mut converted: BTreeMap<Uuid, f64> = BTreeMap::new();
    for p in purchases {
        let value = customers.entry(p.customer).or_insert_with(|| CustomerValue {
            customer: p.customer,
            last_win: p.last,
            recency_days: 0,
            frequency: 0,
            monetary: 0,
            unconverted: BTreeMap::new(),
            recency_score: 0,
            frequency_score: 0,
            monetary_score: 0,
            segment: "",
        });
        value.last_win = value.last_win.max(p.last);
        value.frequency = value.frequency.saturating_add(p.deals);
        match rates.convert(p.amount_minor, &p.currency, &p.month) {
            Some(amount) => *converted.entry(p.customer).or_default() += amount,
            None => {
                let missing = value.unconverted.entry(p.currency.clone()).or_default();
                *missing = missing.saturating_add(p.amount_minor);
            }
        }
    }
    let mut values: Vec<CustomerValue> = customers.into_values().collect();
    for v in &mut values {
        v.recency_days = (now - v.last_win).num_days().max(0);
        // Saturating: a float beyond i64 becomes its bound.
        v.monetary = converted.get(&v.customer).copied().unwrap_or(0.0).round() as i64;
    }
    let recency = quintiles(&values.iter().map(|v| v.recency_days).collect::<Vec<_>>());
    let frequency = quintiles(&values.iter().map(|v| v.frequency).collect::<Vec<_>>());
    let monetary = quintiles(&values.iter().map(|v| v.monetary).collect::<Vec<_>>());
    for (i, v) in values.iter_mut().enumerate() {
        v.recency_score = 6 - recency[i];
        v.frequency_score = frequency[i];
        v.monetary_score = monetary[i];
        v.segment = segment(v.recency_score, v.frequency_score);
    }
    values
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn quintiles_match_pandas_qcut_over_first_ranks() {
        // Expected labels from pandas 3.1.1:
        //   pd.qcut(pd.Series(v).rank(method="first"), 5, labels=[1, 2, 3, 4, 5])
        let cases: [(&[i64], &[u8]); 4] = [
            (&[3, 1, 4, 1, 5, 9, 2], &[3, 1, 4, 1, 5, 5, 2]),
            (&[10; 11], &[1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]),
            (
                &[7, 7, 1, 2, 2, 9, 9, 9, 3, 3, 3, 8],
                &[3, 4, 1, 1, 1, 5, 5, 5, 2, 2, 3, 4],
            ),
            (&[5, 3], &[5, 1]),
        ];
        for (values, expected) in cases {
            assert_eq!(quintiles(values), expected, "{values:?}");
        }
        assert_eq!(quintiles(&[4]), [1], "one customer: the first bin");
    }

    #[test]
    fn the_rf_map_names_every_cell() {
        let mut named: BTreeMap<&str, usize> = BTreeMap::new();
        for r in 1..=5 {
            for f in 1..=5 {
                *named.entry(segment(r, f)).or_default() += 1;
            }
        }
        assert_eq!(named.len(), SEGMENTS.len(), "{named:?}");
        assert_eq!(
            (
                segment(5, 5),
                segment(5, 1),
                segment(4, 1),
                segment(3, 3),
                segment(1, 5),
                segment(2, 2)
            ),
            (
                "champions",
                "new",
                "promising",
                "need_attention",
                "cant_lose",
                "hibernating"
            )
        );
        assert_eq!(
            (segment(3, 4), segment(4, 5), segment(4, 2), segment(3, 2)),
            ("loyal", "loyal", "potential_loyalists", "about_to_sleep")
        );
    }

    #[test]
    fn amounts_convert_at_their_months_rate_and_the_rest_is_reported() {
        let at = |day| Utc.with_ymd_and_hms(2026, 11, day, 0, 0, 0).single().expect("time");
        let rate = |currency: &str, month: &str, rate| ExchangeRate {
            currency: currency.into(),
            month: month.into(),
            rate,
            update_time: at(1),
            updated_by: "alice".into(),
        };
        let rates = vec![rate("USD", "2026-09", 0.9), rate("USD", "2026-11", 0.8)];
        let rates = Rates::new("EUR", &rates);
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let purchase = |customer, currency: &str, month: &str, deals, amount, day| Purchase {
            customer,
            currency: currency.into(),
            month: month.into(),
            deals,
            amount_minor: amount,
            last: at(day),
        };
        let purchases = vec![
            purchase(a, "EUR", "2026-11", 1, 100, 2),
            // October: September's rate. November: its own.
            purchase(a, "USD", "2026-10", 2, 100, 3),
            purchase(a, "USD", "2026-11", 1, 100, 20),
            // August: no rate yet.
            purchase(b, "USD", "2026-08", 1, 500, 4),
        ];
        let values = values(&purchases, &rates, at(30));
        let a = &values[0];
        assert_eq!((a.frequency, a.monetary, a.recency_days), (4, 100 + 90 + 80, 10));
        assert!(a.unconverted.is_empty());
        let b = &values[1];
        assert_eq!((b.monetary, b.unconverted.get("USD")), (0, Some(&500)));
        // Two customers: a scores 5 on all three, b 1.
        assert_eq!(
            (a.recency_score, a.frequency_score, a.monetary_score, a.segment),
            (5, 5, 5, "champions")
        );
        assert_eq!(
            (b.recency_score, b.frequency_score, b.monetary_score, b.segment),
            (1, 1, 1, "hibernating")
        );
    }
}
