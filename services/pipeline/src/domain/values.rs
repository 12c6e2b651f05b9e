//! Values every pipeline record uses: money (from platform), periods, dates, bounded text.

use chrono::{Datelike, NaiveDate};
pub use crm_platform::money::{Money, currency_code};

/// A forecast or quota period: a calendar month (`2026-11`) or quarter (`2026-Q4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Period {
    Month { year: i32, month: u32 },
    Quarter { year: i32, quarter: u32 },
}

impl Period {
    pub fn parse(raw: &str) -> Result<Period, String> {
        let invalid = || format!("`{raw}` is not a period: use YYYY-MM (a month) or YYYY-Qn (a quarter)");
        let (year, rest) = raw.split_once('-').ok_or_else(invalid)?;
        if year.len() != 4 {
            return Err(invalid());
        }
        let year: i32 = year.parse().map_err(|_| invalid())?;
        if !(1970..=9999).contains(&year) {
            return Err(invalid());
        }
        if let Some(q) = rest.strip_prefix('Q') {
            let quarter: u32 = q.parse().map_err(|_| invalid())?;
            return if (1..=4).contains(&quarter) && q.len() == 1 {
                Ok(Period::Quarter { year, quarter })
            } else {
                Err(invalid())
            };
        }
        let month: u32 = rest.parse().map_err(|_| invalid())?;
        if rest.len() == 2 && (1..=12).contains(&month) {
            Ok(Period::Month { year, month })
        } else {
            Err(invalid())
        }
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Period::Month { year, month } => write!(f, "{year:04}-{month:02}"),
            Period::Quarter { year, quarter } => write!(f, "{year:04}-Q{quarter}"),
        }
    }
}

/// A calendar date `YYYY-MM-DD`.
pub fn date(raw: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .filter(|d| (1970..=9999).contains(&d.year()) && raw.len() == 10)
        .ok_or_else(|| format!("`{raw}` is not a date: use YYYY-MM-DD"))
}

pub use crm_platform::text::trimmed as text;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods() {
        assert_eq!(Period::parse("2026-11").map(|p| p.to_string()), Ok("2026-11".into()));
        assert_eq!(Period::parse("2026-Q4").map(|p| p.to_string()), Ok("2026-Q4".into()));
        for bad in [
            "2026-13", "2026-Q5", "2026-1", "26-11", "2026", "2026-Q", "2026-Q44", "Q4-2026", "",
        ] {
            assert!(Period::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dates() {
        assert!(date("2026-12-31").is_ok());
        assert!(date("2026-02-30").is_err());
        assert!(date("2026-2-3").is_err());
    }
}
