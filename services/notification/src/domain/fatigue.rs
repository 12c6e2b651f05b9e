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

    /// What becomes of an email of `category` (critical or not) at `now`, with `sent_last_hour`
    /// emails sent to the user in the hour before.
    pub fn decide(&self, category: &str, critical: bool, now: DateTime<Utc>, sent_last_hour: u32) -> Decision {
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
        if let Some(quiet) = self.quiet_hours
            && quiet.contains(now.with_timezone(&self.time_zone).time())
        {
            let until = next_local(self.time_zone, now, quiet.end);
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
        if self.hourly_email_cap > 0 && sent_last_hour >= self.hourly_email_cap {
            return Decision::Hold {
                held: Held::Cap,
                until: now + Duration::hours(1),
                reason: format!(
                    "held: {} emails an hour reached; a digest carries it",
                    self.hourly_email_cap
                ),
            };
        }
        Decision::Send
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(berlin.decide("deals", false, at(20, 59), 0), Decision::Send);
        match berlin.decide("deals", false, at(21, 30), 0) {
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
            matches!(berlin.decide("deals", false, at(5, 0), 0), Decision::Hold { until, .. } if until == at(6, 0))
        );
        assert_eq!(berlin.decide("deals", false, at(6, 0), 0), Decision::Send);
        assert_eq!(berlin.decide("deals", true, at(23, 0), 0), Decision::Send, "critical");
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
        assert!(matches!(prefs.decide("deals", false, at(9, 0), 0), Decision::Refuse(_)));
        assert_eq!(prefs.decide("tasks", false, at(9, 0), 2), Decision::Send);
        assert!(
            matches!(prefs.decide("tasks", false, at(9, 0), 3), Decision::Hold { held: Held::Cap, until, .. } if until == at(10, 0))
        );
        prefs.daily_digest = true;
        assert!(
            matches!(prefs.decide("tasks", false, at(9, 0), 0), Decision::Hold { held: Held::Digest, until, .. }
                if until == Utc.with_ymd_and_hms(2026, 12, 7, 8, 0, 0).single().expect("time"))
        );
        assert!(
            matches!(prefs.decide("tasks", false, at(7, 0), 0), Decision::Hold { held: Held::Digest, until, .. } if until == at(8, 0))
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
}
