//! Who holds which role in a tenant, for a rule's `roles/{role}` recipient. The suite has no
//! user directory of its own (users and roles come with each request's token), so the members
//! of a tenant are the users the suite saw at work: every service reports each user's requests
//! with their roles on its feed (`UsageReported`), and this service keeps, per user, the roles
//! of their latest report. A role reaches the users who held it when last seen, within the
//! last [`ACTIVE_DAYS`]: someone who left stops being notified once their access ends.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use crm_platform::identity::Role;
use crm_proto::crm::events::v1 as events;
use crm_proto::prost::{Message, Name};

/// How long a user not seen since still counts as a member.
pub const ACTIVE_DAYS: i64 = 90;

/// Users a role reaches at most (the first by user id beyond it are left out, and logged).
pub const MAX_ROLE_USERS: usize = 10_000;

/// A user seen at work on `day`, holding `roles` at their latest request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSeen {
    pub user: String,
    pub roles: Vec<Role>,
    pub day: NaiveDate,
}

/// The member a usage report shows, if `event` is one (from a user with a role a rule may
/// name: not a service).
pub fn member_seen(event: &events::Event) -> Option<MemberSeen> {
    if event.r#type != events::UsageReported::full_name() {
        return None;
    }
    let bytes = event.payload.as_ref().map(|p| p.value.as_slice()).unwrap_or_default();
    let report = events::UsageReported::decode(bytes).ok()?;
    let day = NaiveDate::parse_from_str(&report.day, "%Y-%m-%d").ok()?;
    let roles: Vec<Role> = report
        .roles
        .iter()
        .filter_map(|r| Role::parse(r))
        .filter(|r| *r != Role::Service)
        .collect();
    (!report.user.is_empty()).then_some(MemberSeen {
        user: report.user,
        roles,
        day,
    })
}

/// The first day a member must have been seen on to count at `now`.
pub fn active_since(now: DateTime<Utc>) -> NaiveDate {
    (now - chrono::Duration::days(ACTIVE_DAYS)).date_naive()
}

/// The members of a tenant: each user's roles at their latest report, and who holds each role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    /// Each user's latest report's day and roles.
    users: BTreeMap<String, (NaiveDate, Vec<Role>)>,
    /// The users holding each role, in user id order.
    by_role: BTreeMap<Role, Vec<String>>,
}

impl Members {
    /// From each member's user id, roles and the day they were last seen.
    pub fn new(members: impl IntoIterator<Item = (String, Vec<Role>, NaiveDate)>) -> Self {
        let mut kept = Self {
            users: members
                .into_iter()
                .map(|(user, roles, day)| (user, (day, roles)))
                .collect(),
            by_role: BTreeMap::new(),
        };
        kept.index();
        kept
    }

    /// A member seen at work: their roles are now those of this report, unless the kept one
    /// is of a later day (the rule the store keeps them by).
    pub fn saw(&mut self, seen: &MemberSeen) {
        if self.users.get(&seen.user).is_some_and(|(day, _)| *day > seen.day) {
            return;
        }
        self.users.insert(seen.user.clone(), (seen.day, seen.roles.clone()));
        self.index();
    }

    fn index(&mut self) {
        self.by_role.clear();
        // Users in id order, so each role's list is too.
        for (user, (_, roles)) in &self.users {
            for role in roles {
                let holding = self.by_role.entry(*role).or_default();
                if holding.last() != Some(user) {
                    holding.push(user.clone());
                }
            }
        }
    }

    /// The users holding `role`, [`MAX_ROLE_USERS`] at most.
    pub fn holding(&self, role: Role) -> &[String] {
        let users = self.by_role.get(&role).map(Vec::as_slice).unwrap_or_default();
        if users.len() > MAX_ROLE_USERS {
            tracing::warn!(
                role = role.as_str(),
                users = users.len(),
                "a role reaches more users than a rule may: the first {MAX_ROLE_USERS} by id are notified"
            );
        }
        &users[..users.len().min(MAX_ROLE_USERS)]
    }
}

/// Parses the role of a `roles/{role}` recipient: one a user may hold.
pub fn parse_role(raw: &str) -> Result<Role, String> {
    Role::parse(raw)
        .filter(|r| *r != Role::Service)
        .ok_or_else(|| format!("`{raw}` is not a role: `admin`, `manager`, `rep` or `viewer`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(user: &str, roles: &[&str]) -> events::Event {
        let payload = events::UsageReported {
            user: user.into(),
            area: "crm.contact.v1.ContactService".into(),
            day: "2026-12-01".into(),
            requests: 3,
            changes: 1,
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        };
        events::Event {
            r#type: events::UsageReported::full_name(),
            payload: Some(crm_proto::prost_types::Any {
                type_url: format!("type.googleapis.com/{}", events::UsageReported::full_name()),
                value: payload.encode_to_vec(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_usage_report_shows_a_member_with_the_roles_a_rule_may_name() {
        let seen = member_seen(&report("ann", &["manager", "service", "wizard"])).expect("a member");
        assert_eq!(seen.user, "ann");
        assert_eq!(seen.roles, [Role::Manager]);
        assert_eq!(seen.day, NaiveDate::from_ymd_opt(2026, 12, 1).expect("day"));
        let other = events::Event {
            r#type: "crm.pipeline.v1.DealCreated".into(),
            ..report("ann", &["manager"])
        };
        assert_eq!(member_seen(&other), None);
    }

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, d).expect("day")
    }

    #[test]
    fn members_are_listed_per_role_once_in_user_order() {
        let members = Members::new([
            ("cy".to_owned(), vec![Role::Manager, Role::Rep], day(1)),
            ("al".to_owned(), vec![Role::Manager], day(1)),
            ("bo".to_owned(), vec![Role::Rep, Role::Rep], day(1)),
        ]);
        assert_eq!(members.holding(Role::Manager), ["al", "cy"]);
        assert_eq!(members.holding(Role::Rep), ["bo", "cy"]);
        assert!(members.holding(Role::Admin).is_empty());
        assert!(parse_role("service").is_err());
        assert!(parse_role("boss").is_err());
        assert_eq!(parse_role("viewer"), Ok(Role::Viewer));
    }

    #[test]
    fn a_member_seen_takes_the_roles_of_their_latest_report() {
        let mut members = Members::new([
            ("al".to_owned(), vec![Role::Manager], day(3)),
            ("bo".to_owned(), vec![Role::Rep], day(3)),
        ]);
        let seen = |user: &str, roles: Vec<Role>, d| MemberSeen {
            user: user.into(),
            roles,
            day: day(d),
        };
        // A new member, and one whose roles changed on a later day.
        members.saw(&seen("cy", vec![Role::Manager], 4));
        members.saw(&seen("bo", vec![Role::Manager], 4));
        assert_eq!(members.holding(Role::Manager), ["al", "bo", "cy"]);
        assert!(members.holding(Role::Rep).is_empty());
        // A report of an earlier day changes nothing; one of the same day does.
        members.saw(&seen("bo", vec![Role::Rep], 2));
        assert_eq!(members.holding(Role::Manager), ["al", "bo", "cy"]);
        members.saw(&seen("al", Vec::new(), 3));
        assert_eq!(members.holding(Role::Manager), ["bo", "cy"]);
    }
}
