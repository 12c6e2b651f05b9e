//! Money: integer minor units of an ISO-4217 currency, bounded so that no amount a client
//! sends can make a sum overflow, and sums computed in wider integers.

use serde::{Deserialize, Serialize};

/// Active ISO-4217 currency codes.
pub const CURRENCIES: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BGN", "BHD", "BIF",
    "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHF", "CLP", "CNY", "COP", "CRC",
    "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS",
    "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD",
    "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL",
    "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MYR", "MZN", "NAD",
    "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD",
    "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP",
    "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS", "VES",
    "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

/// The largest amount the suite accepts, in minor units: 10^15 (ten trillion in a currency
/// with two decimals). Any sum of amounts is computed in wider integers, so totals over many
/// records cannot overflow either (they saturate at `i64::MAX`, which takes more than 9,000
/// amounts at this maximum).
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000_000;

/// An amount of money: integer minor units of an ISO-4217 currency, from 0 to
/// [`MAX_AMOUNT_MINOR`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub minor: i64,
    pub currency: String,
}

impl Money {
    /// Validates an amount and its currency.
    pub fn new(minor: i64, currency: &str) -> Result<Money, String> {
        if minor < 0 {
            return Err("must not be negative".into());
        }
        if minor > MAX_AMOUNT_MINOR {
            return Err(format!("must be at most {MAX_AMOUNT_MINOR} minor units"));
        }
        Ok(Money {
            minor,
            currency: currency_code(currency)?,
        })
    }
}

/// Checks an ISO-4217 code (upper case, as the standard writes it).
pub fn currency_code(raw: &str) -> Result<String, String> {
    if CURRENCIES.binary_search(&raw).is_ok() {
        Ok(raw.to_owned())
    } else if raw.is_empty() {
        Err("is required (an ISO-4217 code such as EUR)".into())
    } else {
        Err(format!("`{raw}` is not an ISO-4217 currency code"))
    }
}

/// The sum of `amounts` in minor units, computed in 128 bits and saturating at `i64::MAX`
/// (never an overflow, whatever the number of amounts).
pub fn sum_minor(amounts: impl IntoIterator<Item = i64>) -> i64 {
    let total: i128 = amounts.into_iter().map(i128::from).sum();
    saturate(total)
}

/// A 128-bit total as an amount, saturating at the ends of `i64`.
pub fn saturate(total: i128) -> i64 {
    i64::try_from(total).unwrap_or(if total < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies_are_sorted_for_binary_search() {
        assert!(CURRENCIES.windows(2).all(|w| w[0] < w[1]));
        assert!(currency_code("EUR").is_ok());
        assert!(currency_code("eur").is_err());
        assert!(currency_code("XXX").is_err());
    }

    #[test]
    fn amounts_are_bounded_and_sums_saturate() {
        assert!(Money::new(-1, "EUR").is_err());
        assert!(Money::new(MAX_AMOUNT_MINOR, "EUR").is_ok());
        assert!(Money::new(MAX_AMOUNT_MINOR + 1, "EUR").is_err());
        assert!(Money::new(i64::MAX, "EUR").is_err());
        assert_eq!(sum_minor([MAX_AMOUNT_MINOR; 3]), 3 * MAX_AMOUNT_MINOR);
        assert_eq!(sum_minor([i64::MAX, i64::MAX]), i64::MAX);
    }
}
