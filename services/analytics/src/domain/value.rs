//! Customer value: each customer's recency, frequency and monetary value (in the tenant's
//! reporting currency), their scores by quintile within the tenant, and the segment the recency
//! and frequency scores name.
//!
//! Scores follow pandas: `qcut(x.rank(method="first"), 5, labels=[1, 2, 3, 4, 5])`, the order
//! of appearance being the customers' ids in ascending order; the recency score is reversed (the
//! most recent score 5). A tenant with one customer scores it in the first bin (pandas refuses
//! to cut one value).

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::predict;

/// A customer's won deal, as customer value reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct WonDeal {
    pub customer: Uuid,
    pub currency: String,
    pub amount_minor: i64,
    pub close_time: DateTime<Utc>,
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
    /// Per currency, (month, rate) in month order, a month as year × 100 + month.
    by_currency: BTreeMap<&'a str, Vec<(i32, f64)>>,
}

/// The key [`Rates`] orders months by: year × 100 + month (`2026-11` is 202611).
fn month_key(day: NaiveDate) -> i32 {
    day.year() * 100 + i32::try_from(day.month()).unwrap_or(0)
}

impl<'a> Rates<'a> {
    /// The rates of `rates` whose month is `YYYY-MM` (the others, which
    /// [`ExchangeRate::problems`] refuses, never apply).
    pub fn new(reporting: &'a str, rates: &'a [ExchangeRate]) -> Self {
        let mut by_currency: BTreeMap<&str, Vec<(i32, f64)>> = BTreeMap::new();
        for r in rates {
            let Ok(first) = NaiveDate::parse_from_str(&format!("{}-01", r.month), "%Y-%m-%d") else {
                continue;
            };
            by_currency
                .entry(r.currency.as_str())
                .or_default()
                .push((month_key(first), r.rate));
        }
        for months in by_currency.values_mut() {
            months.sort_by_key(|m| m.0);
        }
        Rates { reporting, by_currency }
    }

    /// `amount` of `currency` closed on `day`, in the reporting currency: at the rate of its
    /// month, else of the latest month before it; None without one.
    #[allow(clippy::cast_precision_loss)]
    pub fn convert(&self, amount_minor: i64, currency: &str, day: NaiveDate) -> Option<f64> {
        if currency == self.reporting {
            return Some(amount_minor as f64);
        }
        let month = month_key(day);
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
    /// What the customer is expected to buy in the next [`PREDICTION_MONTHS`], in minor units
    /// of the reporting currency, discounted (see [`Predicted`]).
    pub predicted: i64,
    /// How [`CustomerValue::predicted`] was made.
    pub prediction: Predicted,
}

/// Months a predicted value covers (lifetimes' `time=12`).
pub const PREDICTION_MONTHS: u32 = 12;
/// Monthly discount rate of a predicted value (lifetimes' default).
pub const MONTHLY_DISCOUNT: f64 = 0.01;
/// Days over which expected purchases are counted.
pub const EXPECTED_PURCHASE_DAYS: f64 = 365.0;

/// How a customer's predicted value was made.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicted {
    /// From the tenant's BG/NBD and Gamma-Gamma fit: the repeat purchases expected in the next
    /// [`EXPECTED_PURCHASE_DAYS`].
    Model { expected_purchases: f64 },
    /// What the customer bought in the last 365 days, because the model could not be used
    /// (the reason says why).
    Historical(String),
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
///
/// A customer's deals of one currency and day (UTC) are one purchase: their amounts are added
/// up (saturating), then converted at once; frequency counts the deals.
#[allow(clippy::cast_possible_truncation)]
pub fn values(mut deals: Vec<WonDeal>, rates: &Rates, now: DateTime<Utc>) -> Vec<CustomerValue> {
    deals.sort_unstable_by_key(|d| (d.customer, d.close_time));
    let mut values = Vec::new();
    // Each customer's purchase days with what was bought on each in the reporting currency
    // (None when some amount of the day has no rate), for the prediction.
    let mut days: Vec<PurchaseDays> = Vec::new();
    for own in deals.chunk_by(|a, b| a.customer == b.customer) {
        let (first, last) = (&own[0], &own[own.len() - 1]);
        let mut value = CustomerValue {
            customer: first.customer,
            last_win: last.close_time,
            recency_days: (now - last.close_time).num_days().max(0),
            frequency: i64::try_from(own.len()).unwrap_or(i64::MAX),
            monetary: 0,
            unconverted: BTreeMap::new(),
            recency_score: 0,
            frequency_score: 0,
            monetary_score: 0,
            segment: "",
            predicted: 0,
            prediction: Predicted::Historical(String::new()),
        };
        let mut converted = 0.0;
        let mut bought = PurchaseDays::new();
        for of_day in own.chunk_by(|a, b| a.close_time.date_naive() == b.close_time.date_naive()) {
            let day = of_day[0].close_time.date_naive();
            let mut by_currency: Vec<(&str, i64)> = Vec::new();
            for deal in of_day {
                match by_currency.iter_mut().find(|(c, _)| *c == deal.currency) {
                    Some((_, sum)) => *sum = sum.saturating_add(deal.amount_minor),
                    None => by_currency.push((&deal.currency, deal.amount_minor)),
                }
            }
            let mut of_the_day = Some(0.0);
            for (currency, amount_minor) in by_currency {
                let amount = rates.convert(amount_minor, currency, day);
                of_the_day = of_the_day.zip(amount).map(|(sum, amount)| sum + amount);
                match amount {
                    Some(amount) => converted += amount,
                    None => {
                        let missing = value.unconverted.entry(currency.to_owned()).or_default();
                        *missing = missing.saturating_add(amount_minor);
                    }
                }
            }
            bought.push((day, of_the_day));
        }
        // Saturating: a float beyond i64 becomes its bound.
        value.monetary = converted.round() as i64;
        values.push(value);
        days.push(bought);
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
    predict(&mut values, &days, now);
    values
}

/// A customer's purchase days in order, each with what was bought in the reporting currency
/// (None when some amount of the day has no rate).
type PurchaseDays = Vec<(NaiveDate, Option<f64>)>;

/// A customer's history as BG/NBD reads it (lifetimes' `summary_data_from_transaction_data`
/// with `freq="D"`): repeat purchase days, age at the last one and today, in days, and the mean
/// value of the repeat days. None when an amount could not be converted.
#[allow(clippy::cast_precision_loss)]
fn rfm_of(days: &PurchaseDays, today: NaiveDate) -> Option<predict::Rfm> {
    let (first, first_amount) = *days.first()?;
    let (last, _) = *days.last()?;
    first_amount?;
    let repeats: Vec<f64> = days.iter().skip(1).map(|(_, amount)| *amount).collect::<Option<_>>()?;
    let recency = (last - first).num_days() as f64;
    Some(predict::Rfm {
        frequency: repeats.len() as f64,
        recency,
        t: ((today - first).num_days() as f64).max(recency),
        monetary: if repeats.is_empty() {
            0.0
        } else {
            repeats.iter().sum::<f64>() / repeats.len() as f64
        },
    })
}

/// Predicts every customer's value for the next [`PREDICTION_MONTHS`] from a BG/NBD plus
/// Gamma-Gamma fit over the tenant's customers, as lifetimes' `customer_lifetime_value` does;
/// where the tenant has too few repeat customers, the fit fails, or a customer's amounts cannot
/// all be converted, their last 365 days' value with the reason. `days` are the customers'
/// purchase days, in the order of `values`.
#[allow(clippy::cast_possible_truncation)]
fn predict(values: &mut [CustomerValue], days: &[PurchaseDays], now: DateTime<Utc>) {
    let today = now.date_naive();
    let histories: Vec<Option<predict::Rfm>> = days.iter().map(|days| rfm_of(days, today)).collect();
    let data: Vec<predict::Rfm> = histories.iter().flatten().copied().collect();
    let repeat = predict::repeat_customers(&data);
    let fitted = if repeat < predict::MIN_REPEAT_CUSTOMERS {
        Err(format!(
            "the tenant has {repeat} customers with repeat purchases; the model needs {}",
            predict::MIN_REPEAT_CUSTOMERS
        ))
    } else {
        predict::BgNbd::fit(&data)
            .zip(predict::GammaGamma::fit(&data))
            .ok_or_else(|| "the model does not fit this tenant's purchases".to_owned())
    };
    let year_ago = today - chrono::Duration::days(365);
    // What depends on a history alone, once per distinct history: (discounted purchases of
    // the coming months, purchases of the coming year).
    let mut by_history: std::collections::HashMap<[u64; 3], (f64, f64)> = std::collections::HashMap::new();
    for ((v, history), days) in values.iter_mut().zip(&histories).zip(days) {
        let model = match (&fitted, history) {
            (Ok(models), Some(history)) => Ok((models, history)),
            (Err(reason), _) => Err(reason.clone()),
            (Ok(_), None) => Err("some of its amounts have no exchange rate".to_owned()),
        };
        match model {
            Ok(((bg, gg), history)) => {
                let key = [history.frequency, history.recency, history.t].map(f64::to_bits);
                let (discounted, in_year) = *by_history.entry(key).or_insert_with(|| {
                    (
                        predict::discounted_purchases(bg, history, PREDICTION_MONTHS, MONTHLY_DISCOUNT),
                        bg.expected_purchases(EXPECTED_PURCHASE_DAYS, history),
                    )
                });
                v.predicted = (gg.expected_average_profit(history) * discounted).round() as i64;
                v.prediction = Predicted::Model {
                    expected_purchases: in_year,
                };
            }
            Err(reason) => {
                let recent: f64 = days
                    .iter()
                    .filter(|(day, _)| *day >= year_ago)
                    .filter_map(|(_, amount)| *amount)
                    .sum();
                v.predicted = recent.round() as i64;
                v.prediction = Predicted::Historical(reason);
            }
        }
    }
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
        let deal = |customer, currency: &str, month: u32, amount, day| WonDeal {
            customer,
            currency: currency.into(),
            amount_minor: amount,
            close_time: Utc.with_ymd_and_hms(2026, month, day, 0, 0, 0).single().expect("time"),
        };
        let deals = vec![
            deal(a, "EUR", 11, 100, 2),
            // October: September's rate. November: its own. Two deals of a day are one
            // purchase.
            deal(a, "USD", 10, 60, 3),
            deal(a, "USD", 10, 40, 3),
            deal(a, "USD", 11, 100, 20),
            // August: no rate yet.
            deal(b, "USD", 8, 500, 4),
        ];
        let values = values(deals, &rates, at(30));
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

    /// Purchases that give the customers of `tests/reference/bgnbd.py` (frequency, recency, T,
    /// monetary in days and currency units): a first purchase T days ago, then `frequency`
    /// repeat days ending `recency` days after it, each of the monetary value. The predicted
    /// values and expected purchases are lifetimes' (`bgnbd.out`), in minor units.
    #[test]
    fn predicted_values_are_lifetimes_own_from_the_purchases() {
        const REFERENCE: &str = include_str!("../../tests/reference/bgnbd.out");
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).single().expect("now");
        let today = now.date_naive();
        let mut purchases = Vec::new();
        let mut expected = BTreeMap::new();
        for line in REFERENCE.lines().filter(|l| l.split(' ').count() == 8) {
            let cells: Vec<f64> = line.split(' ').map(|c| c.parse().expect("number")).collect();
            let [i, frequency, recency, t, monetary, in_year, _, clv] = cells[..] else {
                panic!("{line}")
            };
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let (i, frequency, recency, t) = (i as u128, frequency as i64, recency as i64, t as i64);
            let customer = Uuid::from_u128(i + 1);
            let first = today - chrono::Duration::days(t);
            let buy = |day: NaiveDate, amount: f64| WonDeal {
                customer,
                currency: "EUR".into(),
                #[allow(clippy::cast_possible_truncation)]
                amount_minor: (amount * 100.0).round() as i64,
                close_time: day.and_hms_opt(12, 0, 0).expect("noon").and_utc(),
            };
            purchases.push(buy(first, 55.0));
            for k in 0..frequency {
                purchases.push(buy(first + chrono::Duration::days(recency - k), monetary));
            }
            expected.insert(customer, (clv * 100.0, in_year));
        }
        assert_eq!(expected.len(), 40);
        let scored = values(purchases.clone(), &Rates::new("EUR", &[]), now);
        for v in &scored {
            let (clv, in_year) = expected[&v.customer];
            let Predicted::Model { expected_purchases } = v.prediction else {
                panic!("{:?}", v.prediction)
            };
            #[allow(clippy::cast_precision_loss)]
            let predicted = v.predicted as f64;
            assert!(
                (predicted - clv).abs() <= 1e-4 * clv + 1.0,
                "{}: {predicted} != {clv}",
                v.customer
            );
            assert!(
                (expected_purchases - in_year).abs() <= 1e-4 * in_year + 1e-9,
                "{}: {expected_purchases} != {in_year}",
                v.customer
            );
        }

        // With too few repeat customers the value is the last year's, and says why.
        let few: Vec<WonDeal> = purchases
            .iter()
            .filter(|p| p.customer.as_u128() <= 10)
            .cloned()
            .collect();
        let values = values(few.clone(), &Rates::new("EUR", &[]), now);
        let year_ago = today - chrono::Duration::days(365);
        for v in &values {
            let recent: i64 = few
                .iter()
                .filter(|p| p.customer == v.customer && p.close_time.date_naive() >= year_ago)
                .map(|p| p.amount_minor)
                .sum();
            assert_eq!(v.predicted, recent);
            assert!(
                matches!(&v.prediction, Predicted::Historical(reason) if reason.contains("the model needs 20")),
                "{:?}",
                v.prediction
            );
        }
    }
}
