//! What a user's preferences make of an email to them: sent now, refused (they opted out of
//! its category by email), or held back, visibly, until a time: the end of their quiet hours
//! (in their time zone), their daily digest, or the end of the hour their cap was reached in.
//! What a digest or a cap held back is sent as one digest email when its time comes. A
//! critical rule's email bypasses all of it.

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::Channel;

/// Most emails a cap may let through in an hour.
pub const MAX_HOURLY_CAP: u32 = 1000;
/// Most categories and channels a user may mute.
pub const MAX_MUTED: usize = 100;
/// The category of a rule that names none.
pub const DEFAULT_CATEGORY: &str = "general";
/// When a daily digest goes out by default, in the user's time zone.
pub const DEFAULT_DIGEST_TIME: NaiveTime = match NaiveTime::from_hms_opt(8, 0, 0) {
    Some(t) => t,
    None => NaiveTime::MIN,
};

/// `raw` as a category: trimmed, lower case, 1 to 64 letters, digits, `-`, `_` or `:`.
pub fn category(raw: &str) -> Result<String, String> {
    let category = raw.trim().to_ascii_lowercase();
    if category.is_empty() || category.len() > 64 {
        return Err("must be 1 to 64 characters".to_owned());
    }
    if !category
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':'))
    {
        return Err(format!("`{raw}` may hold only letters, digits, `-`, `_` and `:`"));
    }
    Ok(category)
}

/// `raw` (`HH:MM`) as a time of day.
pub fn time_of_day(raw: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(raw.trim(), "%H:%M").map_err(|_| format!("`{raw}` is not a time of day such as 07:30"))
}

/// `raw` as an IANA time zone (`Europe/Berlin`).
pub fn time_zone(raw: &str) -> Result<Tz, String> {
    raw.trim()
        .parse::<Tz>()
        .map_err(|_| format!("`{raw}` is not an IANA time zone such as Europe/Berlin"))
}

/// A category muted on a channel.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mute {
    pub category: String,
    pub channel: Channel,
}

/// The categories each user of a tenant muted, by user.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Muted(pub std::collections::BTreeMap<String, Vec<Mute>>);

impl Muted {
    /// Whether `user` muted `category` on `channel`.
    pub fn mutes(&self, user: &str, category: &str, channel: Channel) -> bool {
        self.0
            .get(user)
            .is_some_and(|muted| muted.iter().any(|m| m.category == category && m.channel == channel))
    }
}

/// Longest digest window of a rule, in minutes: a week.
pub const MAX_DIGEST_WINDOW_MINUTES: u32 = 7 * 24 * 60;

/// How a rule paces its emails to each user: its own digest window and hourly cap (0: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pacing {
    /// Its emails to a user go as one digest per this many minutes.
    pub digest_window_minutes: u32,
    /// A user gets at most this many of its emails an hour; a digest carries the rest.
    pub max_emails_per_hour: u32,
}

impl Pacing {
    /// A rule's pacing as stored (a number out of range, which no check lets in, is none).
    pub fn of(digest_window_minutes: i64, max_emails_per_hour: i64) -> Self {
        let number = |n: i64| u32::try_from(n).unwrap_or(0);
        Self {
            digest_window_minutes: number(digest_window_minutes),
            max_emails_per_hour: number(max_emails_per_hour),
        }
    }

    /// Each option out of its range: (field, reason).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.digest_window_minutes > MAX_DIGEST_WINDOW_MINUTES {
            problems.push((
                "digest_window_minutes",
                format!("must be 0 (none) to {MAX_DIGEST_WINDOW_MINUTES}"),
            ));
        }
        if self.max_emails_per_hour > MAX_HOURLY_CAP {
            problems.push((
                "max_emails_per_hour",
                format!("must be 0 (no limit) to {MAX_HOURLY_CAP}"),
            ));
        }
        problems
    }

    /// The end of the digest window `now` is in (windows run from the Unix epoch in UTC, so
    /// an hour's ends on the hour, a day's at midnight UTC); None without a window.
    pub fn window_end(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let window = i64::from(self.digest_window_minutes) * 60;
        if window == 0 {
            return None;
        }
        let end = (now.timestamp().div_euclid(window) + 1).saturating_mul(window);
        Some(DateTime::from_timestamp(end, 0).unwrap_or(DateTime::<Utc>::MAX_UTC))
    }
}

/// Emails sent in the last hour: to the user, and to them by the rule at hand (each counted
/// only when a cap needs it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recent {
    pub to_user: u32,
    pub of_rule: u32,
}

/// A window of the day, in the user's time zone; it may span midnight (22:00 to 07:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

/// What decides an email to one user.
#[derive(Debug, Clone, PartialEq)]
pub struct Fatigue {
    pub time_zone: Tz,
    pub quiet_hours: Option<QuietHours>,
    pub daily_digest: bool,
    pub digest_time: NaiveTime,
    pub muted: Vec<Mute>,
    /// Emails a user may get in an hour; 0: no cap.
    pub hourly_email_cap: u32,
}

impl Default for Fatigue {
    fn default() -> Self {
        Self {
            time_zone: Tz::UTC,
            quiet_hours: None,
            daily_digest: false,
            digest_time: DEFAULT_DIGEST_TIME,
            muted: Vec::new(),
            hourly_email_cap: 0,
        }
    }
}

/// Why an email is held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Until the user's quiet hours end; then it is sent (or held again).
    QuietHours,
    /// Until the user's daily digest, which carries it.
    Digest,
    /// Until the hour in which the user's cap was reached ends; a digest then carries it.
    Cap,
}

impl Held {
    pub fn as_str(self) -> &'static str {
        match self {
            Held::QuietHours => "quiet_hours",
            Held::Digest => "digest",
            Held::Cap => "cap",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::QuietHours, Self::Digest, Self::Cap]
            .into_iter()
            .find(|h| h.as_str() == raw)
    }
}

/// What becomes of an email.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Send,
    /// Not sent, for the reason.
    Refuse(String),
    /// Held until `until`, for the reason.
    Hold {
        held: Held,
        until: DateTime<Utc>,
        reason: String,
    },
}

/// The next time after `now` that the wall clock of `tz` reads `at` (a time skipped by a
/// daylight-saving change is taken an hour later).
pub fn next_local(tz: Tz, now: DateTime<Utc>, at: NaiveTime) -> DateTime<Utc> {
    let local = now.with_timezone(&tz).date_naive();
    for day in 0..3 {
        let date = local + Duration::days(day);
        for shift in [0, 1] {
            let wall = date.and_time(at) + Duration::hours(shift);
            if let Some(t) = tz.from_local_datetime(&wall).earliest() {
                let t = t.with_timezone(&Utc);
                if t > now {
                    return t;
                }
                break;
            }
        }
    }
    now + Duration::days(1)
}

impl QuietHours {
    /// Whether `local` (a wall-clock time) falls in the window.
    pub fn contains(&self, local: NaiveTime) -> bool {
        if self.start <= self.end {
            self.start <= local && local < self.end
        } else {
            local >= self.start || local < self.end
        }
    }
}

impl Fatigue {
    /// Whether the user muted `category` on `channel`.
    pub fn mutes(&self, category: &str, channel: Channel) -> bool {
        self.muted
            .iter()
            .any(|m| m.category == category && m.channel == channel)
    }

    /// The user's quiet hours and when they end, when `at` falls in them.
    fn quiet_until(&self, at: DateTime<Utc>) -> Option<(QuietHours, DateTime<Utc>)> {
        let quiet = self.quiet_hours?;
        quiet
            .contains(at.with_timezone(&self.time_zone).time())
            .then(|| (quiet, next_local(self.time_zone, at, quiet.end)))
    }

    /// What becomes of an email of `category` (critical or not) of a rule paced by `pacing`,
    /// at `now`, with `recent` emails sent in the hour before.
    pub fn decide(
        &self,
        category: &str,
        critical: bool,
        pacing: Pacing,
        now: DateTime<Utc>,
        recent: Recent,
    ) -> Decision {
        if critical {
            return Decision::Send;
        }
        if self.mutes(category, Channel::Email) {
            return Decision::Refuse(format!("the user opted out of `{category}` by email"));
        }
        if self.daily_digest {
            let until = next_local(self.time_zone, now, self.digest_time);
            return Decision::Hold {
                held: Held::Digest,
                until,
                reason: format!(
                    "held for the daily digest at {} {}",
                    self.digest_time.format("%H:%M"),
                    self.time_zone
                ),
            };
        }
        if let Some((quiet, until)) = self.quiet_until(now) {
            return Decision::Hold {
                held: Held::QuietHours,
                until,
                reason: format!(
                    "held for quiet hours until {} {}",
                    quiet.end.format("%H:%M"),
                    self.time_zone
                ),
            };
        }
        // The rule's digest goes at the end of its window, or when the user's quiet hours end
        // if they hold that time.
        if let Some(end) = pacing.window_end(now) {
            let until = self.quiet_until(end).map_or(end, |(_, until)| until);
            return Decision::Hold {
                held: Held::Digest,
                until,
                reason: format!(
                    "held for the rule's digest every {} minutes",
                    pacing.digest_window_minutes
                ),
            };
        }
        // The user's cap, then the rule's: (cap, sent in the last hour, whose).
        let caps = [
            (self.hourly_email_cap, recent.to_user, ""),
            (pacing.max_emails_per_hour, recent.of_rule, "the rule's "),
        ];
        match caps.into_iter().find(|(cap, sent, _)| *cap > 0 && sent >= cap) {
            Some((cap, _, whose)) => Decision::Hold {
                held: Held::Cap,
                until: now + Duration::hours(1),
                reason: format!("held: {whose}{cap} emails an hour reached; a digest carries it"),
            },
            None => Decision::Send,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recent(to_user: u32) -> Recent {
        Recent { to_user, of_rule: 0 }
    }

    fn at(hour: u32, minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 6, hour, minute, 0)
            .single()
            .expect("time")
    }

    fn hm(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).expect("time")
    }

    #[test]
    fn quiet_hours_hold_email_until_they_end_in_the_users_time_zone() {
        // Berlin is UTC+1 in December: 22:00-07:00 there is 21:00-06:00 UTC.
        let berlin = Fatigue {
            time_zone: chrono_tz::Europe::Berlin,
            quiet_hours: Some(QuietHours {
                start: hm(22, 0),
                end: hm(7, 0),
            }),
            ..Fatigue::default()
        };
        assert_eq!(
            berlin.decide("deals", false, Pacing::default(), at(20, 59), recent(0)),
            Decision::Send
        );
        match berlin.decide("deals", false, Pacing::default(), at(21, 30), recent(0)) {
            Decision::Hold { held, until, .. } => {
                assert_eq!(held, Held::QuietHours);
                assert_eq!(
                    until,
                    Utc.with_ymd_and_hms(2026, 12, 7, 6, 0, 0).single().expect("time")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(berlin.decide("deals", false, Pacing::default(), at(5, 0), recent(0)), Decision::Hold { until, .. } if until == at(6, 0))
        );
        assert_eq!(
            berlin.decide("deals", false, Pacing::default(), at(6, 0), recent(0)),
            Decision::Send
        );
        assert_eq!(
            berlin.decide("deals", true, Pacing::default(), at(23, 0), recent(0)),
            Decision::Send,
            "critical"
        );
    }

    #[test]
    fn an_opt_out_refuses_a_digest_holds_and_a_cap_holds_the_rest_of_the_hour() {
        let mut prefs = Fatigue {
            muted: vec![Mute {
                category: "deals".into(),
                channel: Channel::Email,
            }],
            hourly_email_cap: 3,
            ..Fatigue::default()
        };
        assert!(matches!(
            prefs.decide("deals", false, Pacing::default(), at(9, 0), recent(0)),
            Decision::Refuse(_)
        ));
        assert_eq!(
            prefs.decide("tasks", false, Pacing::default(), at(9, 0), recent(2)),
            Decision::Send
        );
        assert!(
            matches!(prefs.decide("tasks", false, Pacing::default(), at(9, 0), recent(3)), Decision::Hold { held: Held::Cap, until, .. } if until == at(10, 0))
        );
        prefs.daily_digest = true;
        assert!(
            matches!(prefs.decide("tasks", false, Pacing::default(), at(9, 0), recent(0)), Decision::Hold { held: Held::Digest, until, .. }
                if until == Utc.with_ymd_and_hms(2026, 12, 7, 8, 0, 0).single().expect("time"))
        );
        assert!(
            matches!(prefs.decide("tasks", false, Pacing::default(), at(7, 0), recent(0)), Decision::Hold { held: Held::Digest, until, .. } if until == at(8, 0))
        );
    }

    #[test]
    fn a_wall_time_skipped_by_daylight_saving_is_taken_an_hour_later() {
        // 2026-03-29 02:30 does not exist in Berlin (clocks go from 02:00 to 03:00).
        let before = Utc.with_ymd_and_hms(2026, 3, 28, 12, 0, 0).single().expect("time");
        let next = next_local(chrono_tz::Europe::Berlin, before, hm(2, 30));
        assert_eq!(
            next,
            Utc.with_ymd_and_hms(2026, 3, 29, 1, 30, 0).single().expect("time")
        );
    }
    #[test]
    fn a_rules_pacing_holds_its_emails_for_its_window_or_past_its_cap() {
        let user = Fatigue::default();
        let window = Pacing {
            digest_window_minutes: 15,
            max_emails_per_hour: 0,
        };
        // Held to the end of the quarter hour it falls in; the digest then carries it.
        match user.decide("deals", false, window, at(9, 7), recent(0)) {
            Decision::Hold { held, until, reason } => {
                assert_eq!((held, until), (Held::Digest, at(9, 15)));
                assert!(reason.contains("15 minutes"), "{reason}");
            }
            other => panic!("held, not {other:?}"),
        }
        assert!(matches!(
            user.decide("deals", false, window, at(9, 15), recent(0)),
            Decision::Hold { until, .. } if until == at(9, 30)
        ));
        // Critical: sent; muted: refused; the user's own daily digest comes first.
        assert_eq!(user.decide("deals", true, window, at(9, 7), recent(0)), Decision::Send);
        let muted = Fatigue {
            muted: vec![Mute {
                category: "deals".into(),
                channel: Channel::Email,
            }],
            ..Fatigue::default()
        };
        assert!(matches!(
            muted.decide("deals", false, window, at(9, 7), recent(0)),
            Decision::Refuse(_)
        ));
        let daily = Fatigue {
            daily_digest: true,
            ..Fatigue::default()
        };
        assert!(matches!(
            daily.decide("deals", false, window, at(9, 7), recent(0)),
            Decision::Hold { held: Held::Digest, until, .. } if until == at(8, 0) + Duration::days(1)
        ));
        // The rule's cap counts the rule's own emails to the user.
        let capped = Pacing {
            digest_window_minutes: 0,
            max_emails_per_hour: 2,
        };
        let sent = |to_user, of_rule| Recent { to_user, of_rule };
        assert_eq!(
            user.decide("deals", false, capped, at(9, 0), sent(50, 1)),
            Decision::Send
        );
        match user.decide("deals", false, capped, at(9, 0), sent(2, 2)) {
            Decision::Hold { held, until, reason } => {
                assert_eq!((held, until), (Held::Cap, at(10, 0)));
                assert!(reason.contains("rule's 2 emails"), "{reason}");
            }
            other => panic!("held, not {other:?}"),
        }
        assert_eq!(user.decide("deals", true, capped, at(9, 0), sent(2, 9)), Decision::Send);
        // Its options' ranges.
        assert!(window.problems().is_empty() && capped.problems().is_empty());
        let wrong = Pacing {
            digest_window_minutes: 10081,
            max_emails_per_hour: 1001,
        };
        let fields: Vec<&str> = wrong.problems().iter().map(|(f, _)| *f).collect();
        assert_eq!(fields, ["digest_window_minutes", "max_emails_per_hour"]);
        assert_eq!(Pacing::default().window_end(at(9, 7)), None);
        // In quiet hours the email waits for their end, and is decided again then; a window
        // ending in quiet hours goes when they end.
        let night = Fatigue {
            quiet_hours: Some(QuietHours {
                start: NaiveTime::from_hms_opt(9, 10, 0).expect("time"),
                end: NaiveTime::from_hms_opt(9, 40, 0).expect("time"),
            }),
            ..Fatigue::default()
        };
        assert!(matches!(
            night.decide("deals", false, window, at(9, 20), recent(0)),
            Decision::Hold { held: Held::QuietHours, until, .. } if until == at(9, 40)
        ));
        assert!(matches!(
            night.decide("deals", false, window, at(9, 7), recent(0)),
            Decision::Hold { held: Held::Digest, until, .. } if until == at(9, 40)
        ));
        assert!(matches!(
            night.decide("deals", false, window, at(9, 41), recent(0)),
            Decision::Hold { held: Held::Digest, until, .. } if until == at(9, 45)
        ));
    }
}
