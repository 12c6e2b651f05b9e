//! Calendar periods and windows of time, in UTC: a forecast's or quota's period (a month or
//! a quarter), and the window a figure is computed over (those, a year, or a range of dates).

use chrono::{DateTime, Datelike, NaiveDate, Utc};

/// A forecast or quota period: a calendar month (`2026-11`) or quarter (`2026-Q4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Period {
    Month { year: i32, month: u32 },
    Quarter { year: i32, quarter: u32 },
}

impl Period {
    pub fn parse(raw: &str) -> Result<Period, String> {
        let invalid = || format!("`{raw}` is not a period: use YYYY-MM (a month) or YYYY-Qn (a quarter)");
        if !raw.bytes().all(|b| b.is_ascii_digit() || b == b'-' || b == b'Q') {
            return Err(invalid());
        }
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

impl Period {
    /// The period's first day and the day after its last.
    pub fn days(self) -> (NaiveDate, NaiveDate) {
        let first = |year: i32, month: u32| NaiveDate::from_ymd_opt(year, month, 1).unwrap_or(NaiveDate::MIN);
        let (year, month, months) = match self {
            Period::Month { year, month } => (year, month, 1),
            Period::Quarter { year, quarter } => (year, quarter * 3 - 2, 3),
        };
        let next = month + months;
        (
            first(year, month),
            if next > 12 {
                first(year + 1, next - 12)
            } else {
                first(year, next)
            },
        )
    }
}

/// A window of time a figure is computed over: whole UTC days from `start` to `end`
/// (excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: NaiveDate,
    pub end: NaiveDate,
}

/// The longest window of dates: every figure over a window reads the facts in it, so its
/// length bounds the work of a query (ten years hold a baseline and the years after it).
const MAX_WINDOW_DAYS: i64 = 3653;

impl Window {
    /// A year (`2026`), a quarter (`2026-Q4`), a month (`2026-11`), or dates from and to, both
    /// included (`2026-01-01..2026-03-31`).
    pub fn parse(raw: &str) -> Result<Window, String> {
        let invalid = || {
            format!(
                "`{raw}` is not a period: use YYYY (a year), YYYY-Qn (a quarter), YYYY-MM (a month) \
                 or YYYY-MM-DD..YYYY-MM-DD (dates, both included)"
            )
        };
        if let Some((from, to)) = raw.split_once("..") {
            let (start, last) = (date(from).map_err(|_| invalid())?, date(to).map_err(|_| invalid())?);
            if last < start {
                return Err(format!("`{raw}` ends before it starts"));
            }
            let end = last.succ_opt().ok_or_else(invalid)?;
            if (end - start).num_days() > MAX_WINDOW_DAYS {
                return Err(format!("`{raw}` is longer than ten years"));
            }
            return Ok(Window { start, end });
        }
        if raw.len() == 4 {
            if !raw.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            let year: i32 = raw.parse().map_err(|_| invalid())?;
            if !(1970..=9999).contains(&year) {
                return Err(invalid());
            }
            let first = |year| NaiveDate::from_ymd_opt(year, 1, 1).ok_or_else(invalid);
            return Ok(Window {
                start: first(year)?,
                end: first(year + 1)?,
            });
        }
        let (start, end) = Period::parse(raw).map_err(|_| invalid())?.days();
        Ok(Window { start, end })
    }

    /// The window's first instant.
    pub fn start_time(self) -> DateTime<Utc> {
        self.start.and_time(chrono::NaiveTime::MIN).and_utc()
    }

    /// The instant after the window's last.
    pub fn end_time(self) -> DateTime<Utc> {
        self.end.and_time(chrono::NaiveTime::MIN).and_utc()
    }

    /// The month or quarter the window is exactly, if it is one.
    pub fn period(self) -> Option<Period> {
        let (year, month) = (self.start.year(), self.start.month());
        [
            Period::Month { year, month },
            Period::Quarter {
                year,
                quarter: month.div_ceil(3),
            },
        ]
        .into_iter()
        .find(|p| p.days() == (self.start, self.end))
    }

    /// Whether `time` falls in the window.
    pub fn contains(self, time: DateTime<Utc>) -> bool {
        self.start_time() <= time && time < self.end_time()
    }
}

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

    #[test]
    fn windows() {
        let day = |raw: &str| NaiveDate::parse_from_str(raw, "%Y-%m-%d").expect("valid");
        let window = |raw: &str| Window::parse(raw).map(|w| (w.start, w.end));
        assert_eq!(window("2026"), Ok((day("2026-01-01"), day("2027-01-01"))));
        assert_eq!(window("2026-Q4"), Ok((day("2026-10-01"), day("2027-01-01"))));
        assert_eq!(window("2026-Q1"), Ok((day("2026-01-01"), day("2026-04-01"))));
        assert_eq!(window("2026-12"), Ok((day("2026-12-01"), day("2027-01-01"))));
        assert_eq!(window("2026-02"), Ok((day("2026-02-01"), day("2026-03-01"))));
        assert_eq!(
            window("2026-01-01..2026-01-01"),
            Ok((day("2026-01-01"), day("2026-01-02")))
        );
        assert_eq!(
            window("9999"),
            Ok((day("9999-01-01"), NaiveDate::from_ymd_opt(10_000, 1, 1).expect("valid")))
        );
        for bad in [
            "2026-02-01..2026-01-31",
            "2026-13",
            "1969",
            "20266",
            "2026-01-01..",
            "..2026-01-01",
            "2026-1-1..2026-02-01",
            "",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
        let period = |raw: &str| Window::parse(raw).expect("valid").period().map(|p| p.to_string());
        assert_eq!(period("2026-11"), Some("2026-11".to_owned()));
        assert_eq!(period("2026-Q4"), Some("2026-Q4".to_owned()));
        assert_eq!(period("2026-10-01..2026-12-31"), Some("2026-Q4".to_owned()));
        assert_eq!(period("2026-10-02..2026-12-31"), None);
        assert_eq!(period("2026"), None);
        let w = Window::parse("2026-11").expect("valid");
        assert!(w.contains(w.start_time()));
        assert!(!w.contains(w.end_time()));
    }
}
