//! Duplicate detection: the keys contacts are matched on, and how alike two contacts are.

use serde::{Deserialize, Serialize};

use super::contact::ContactFields;
use super::values::word_enum;

word_enum!(
    /// Why two contacts look like the same person.
    MatchReason, "MATCH_REASON" {
        Email => "email",
        Phone => "phone",
        NameAndCompany => "name_and_company",
        Name => "name",
        Domain => "domain",
    }
);

/// Kinds of match keys, stored per contact so that candidates are found by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum KeyKind {
    /// A lower-cased email address.
    Email,
    /// An E.164 phone number.
    Phone,
    /// A blocking key on the name: contacts sharing it are compared by name similarity.
    Name,
    /// The id in another system; unique per tenant.
    External,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Email => "email",
            KeyKind::Phone => "phone",
            KeyKind::Name => "name",
            KeyKind::External => "external",
        }
    }

    pub fn parse(word: &str) -> Option<Self> {
        [KeyKind::Email, KeyKind::Phone, KeyKind::Name]
            .into_iter()
            .find(|k| k.as_str() == word)
    }
}

/// A match key of a contact.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MatchKey {
    pub kind: KeyKind,
    pub value: String,
}

/// Name similarity (Jaro-Winkler on normalised full names) from which names count as a match.
const NAME_THRESHOLD: f64 = 0.92;
/// Names that alike count as a match even without a shared company: only names that are
/// the same but for case, spacing and punctuation, since common names would flood the list.
const NAME_ONLY_THRESHOLD: f64 = 0.995;

/// Lower case, letters and digits only, single spaces.
fn normalise(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_alphanumeric() {
                c.to_lowercase().next().unwrap_or(c)
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn full_name(f: &ContactFields) -> String {
    normalise(&format!("{} {}", f.given_name, f.family_name))
}

impl ContactFields {
    /// Every key this contact can be matched on.
    pub fn match_keys(&self) -> Vec<MatchKey> {
        let mut keys: Vec<MatchKey> = self
            .emails
            .iter()
            .map(|e| MatchKey {
                kind: KeyKind::Email,
                value: e.address.key(),
            })
            .chain(self.phones.iter().map(|p| MatchKey {
                kind: KeyKind::Phone,
                value: p.number.as_str().to_owned(),
            }))
            .chain(self.external_id.iter().map(|id| MatchKey {
                kind: KeyKind::External,
                value: id.clone(),
            }))
            .collect();
        // Block on the whole family name and the given name's initial: blocks stay small even
        // for common names (a prefix block grows with the table and made every create scan
        // it), and variants of a given name (Jon, Jonathan, Jonathon) still meet.
        let family = normalise(&self.family_name).replace(' ', "");
        let given = normalise(&self.given_name);
        if let Some(initial) = given.chars().next()
            && family.chars().count() >= 2
        {
            keys.push(MatchKey {
                kind: KeyKind::Name,
                value: format!("{family}|{initial}"),
            });
        }
        keys.sort();
        keys.dedup();
        keys
    }

    /// How likely `self` and `other` are one person (0..=1), and why; None below any match.
    pub fn likeness(&self, other: &ContactFields) -> Option<(f64, Vec<MatchReason>)> {
        let mut reasons = Vec::new();
        let mut score: f64 = 0.0;
        let emails = |f: &ContactFields| f.emails.iter().map(|e| e.address.key()).collect::<Vec<_>>();
        let theirs = emails(other);
        if emails(self).iter().any(|e| theirs.contains(e)) {
            reasons.push(MatchReason::Email);
            score = score.max(0.98);
        }
        if self
            .phones
            .iter()
            .any(|p| other.phones.iter().any(|q| q.number == p.number))
        {
            reasons.push(MatchReason::Phone);
            score = score.max(0.9);
        }
        let (a, b) = (full_name(self), full_name(other));
        if !a.is_empty() && !b.is_empty() {
            let similarity = strsim::jaro_winkler(&a, &b);
            let same_company = self.company.is_some() && self.company == other.company;
            if same_company && similarity >= NAME_THRESHOLD {
                reasons.push(MatchReason::NameAndCompany);
                score = score.max(0.85 * similarity);
            } else if similarity >= NAME_ONLY_THRESHOLD {
                reasons.push(MatchReason::Name);
                score = score.max(0.6 * similarity);
            }
        }
        (!reasons.is_empty()).then_some((score, reasons))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crm_platform::UserId;

    use super::*;
    use crate::domain::{
        CompanyId, Consent, ContactEmail, ContactPhone, EmailAddress, LifecycleStage, PhoneNumber, SourceChannel,
    };

    fn person(
        given: &str,
        family: &str,
        email: Option<&str>,
        phone: Option<&str>,
        company: Option<CompanyId>,
    ) -> ContactFields {
        ContactFields {
            external_id: None,
            given_name: given.into(),
            family_name: family.into(),
            emails: email
                .map(|e| ContactEmail {
                    address: EmailAddress::parse(e).expect("email"),
                    primary: true,
                })
                .into_iter()
                .collect(),
            phones: phone
                .map(|p| ContactPhone {
                    number: PhoneNumber::parse(p).expect("phone"),
                    primary: true,
                })
                .into_iter()
                .collect(),
            title: String::new(),
            company,
            lifecycle_stage: LifecycleStage::Lead,
            source: SourceChannel::Web,
            owner: UserId::parse("alice").expect("user"),
            tags: vec![],
            attributes: BTreeMap::new(),
            consent: Consent::default(),
        }
    }

    #[test]
    fn keys_cover_emails_phones_and_a_name_block() {
        let keys = person(
            "Jon",
            "Smith-Jones",
            Some("Jon@Example.com"),
            Some("+44 20 7946 0958"),
            None,
        )
        .match_keys();
        assert!(keys.contains(&MatchKey {
            kind: KeyKind::Email,
            value: "jon@example.com".into()
        }));
        assert!(keys.contains(&MatchKey {
            kind: KeyKind::Phone,
            value: "+442079460958".into()
        }));
        assert!(keys.contains(&MatchKey {
            kind: KeyKind::Name,
            value: "smithjones|j".into()
        }));
        assert_eq!(
            person("Jonathan", "Smith", None, None, None).match_keys()[0].value,
            "smith|j",
            "a block per family name"
        );
    }

    #[test]
    fn likeness_scores_and_explains() {
        let acme = Some(CompanyId::generate());
        let a = person("Jonathan", "Smith", Some("jon@example.com"), None, acme);
        let same_email = person("J", "S", Some("JON@example.com"), None, None);
        assert_eq!(a.likeness(&same_email).map(|m| m.1), Some(vec![MatchReason::Email]));
        let colleague_typo = person("Jonathon", "Smith", None, None, acme);
        let (score, reasons) = a.likeness(&colleague_typo).expect("similar name, same company");
        assert_eq!(reasons, vec![MatchReason::NameAndCompany]);
        assert!(score > 0.75 && score < 0.9, "{score}");
        assert!(
            a.likeness(&person("Jonathon", "Smith", None, None, None)).is_none(),
            "a similar name alone is not enough"
        );
        assert!(a.likeness(&person("Maria", "Garcia", None, None, acme)).is_none());
        let phone = person("X", "Y", None, Some("+44 20 7946 0958"), None);
        assert_eq!(
            person("Q", "Z", None, Some("+442079460958"), None)
                .likeness(&phone)
                .map(|m| m.1),
            Some(vec![MatchReason::Phone])
        );
    }
}
