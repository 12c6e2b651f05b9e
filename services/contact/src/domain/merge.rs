//! Survivorship: the state of a survivor after other contacts are merged into it.

use std::collections::BTreeMap;

use super::contact::{Contact, ContactField, ContactFields};
use super::ids::ContactId;

/// The merged state. For each field the caller's choice (which contact's value wins) applies;
/// otherwise single values take the most recently updated non-empty value, and lists and
/// maps (emails, phones, tags, attributes) are united, the most recent value winning per
/// attribute key. Consent takes, per channel, the most recently given or withdrawn. The
/// survivor keeps its owner unless the caller chooses another's.
pub fn merge_fields(
    survivor: &Contact,
    merged: &[Contact],
    choices: &BTreeMap<ContactField, ContactId>,
) -> ContactFields {
    let mut all: Vec<&Contact> = std::iter::once(survivor).chain(merged).collect();
    // Most recently updated first; the survivor wins ties.
    all.sort_by(|a, b| {
        b.update_time
            .cmp(&a.update_time)
            .then_with(|| (b.id == survivor.id).cmp(&(a.id == survivor.id)))
    });
    let chosen = |field: ContactField| {
        choices
            .get(&field)
            .and_then(|id| all.iter().find(|c| c.id == *id))
            .map(|c| &c.fields)
    };
    let recent = |non_empty: &dyn Fn(&ContactFields) -> bool| {
        all.iter()
            .map(|c| &c.fields)
            .find(|f| non_empty(f))
            .unwrap_or(&survivor.fields)
    };
    let pick = |field: ContactField, non_empty: &dyn Fn(&ContactFields) -> bool| {
        chosen(field).unwrap_or_else(|| recent(non_empty))
    };

    let mut out = survivor.fields.clone();
    out.given_name
        .clone_from(&pick(ContactField::GivenName, &|f| !f.given_name.is_empty()).given_name);
    out.family_name
        .clone_from(&pick(ContactField::FamilyName, &|f| !f.family_name.is_empty()).family_name);
    out.title
        .clone_from(&pick(ContactField::Title, &|f| !f.title.is_empty()).title);
    out.company = pick(ContactField::Company, &|f| f.company.is_some()).company;
    out.lifecycle_stage = pick(ContactField::LifecycleStage, &|_| true).lifecycle_stage;
    out.source = pick(ContactField::Source, &|_| true).source;
    out.owner
        .clone_from(&chosen(ContactField::Owner).unwrap_or(&survivor.fields).owner);

    // The survivor's entries come first, so its primary address and number stay primary.
    out.emails = match chosen(ContactField::Emails) {
        Some(f) => f.emails.clone(),
        None => {
            let mut emails = survivor.fields.emails.clone();
            for e in merged.iter().flat_map(|c| &c.fields.emails) {
                if !emails.iter().any(|x| x.address.key() == e.address.key()) {
                    emails.push(super::ContactEmail {
                        address: e.address.clone(),
                        primary: false,
                    });
                }
            }
            emails
        }
    };
    out.phones = match chosen(ContactField::Phones) {
        Some(f) => f.phones.clone(),
        None => {
            let mut phones = survivor.fields.phones.clone();
            for p in merged.iter().flat_map(|c| &c.fields.phones) {
                if !phones.iter().any(|x| x.number == p.number) {
                    phones.push(super::ContactPhone {
                        number: p.number.clone(),
                        primary: false,
                    });
                }
            }
            phones
        }
    };
    out.tags = match chosen(ContactField::Tags) {
        Some(f) => f.tags.clone(),
        None => all.iter().flat_map(|c| c.fields.tags.iter().cloned()).collect(),
    };
    out.attributes = match chosen(ContactField::Attributes) {
        Some(f) => f.attributes.clone(),
        None => {
            let mut attributes = BTreeMap::new();
            // Oldest first, so that more recent values overwrite.
            for c in all.iter().rev() {
                attributes.extend(c.fields.attributes.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            attributes
        }
    };
    out.consent = match chosen(ContactField::Consent) {
        Some(f) => f.consent.clone(),
        None => {
            let latest = |get: &dyn Fn(&ContactFields) -> Option<&super::ChannelConsent>| {
                all.iter()
                    .filter_map(|c| get(&c.fields))
                    .max_by_key(|consent| consent.time)
                    .cloned()
            };
            super::Consent {
                email: latest(&|f| f.consent.email.as_ref()),
                sms: latest(&|f| f.consent.sms.as_ref()),
                phone: latest(&|f| f.consent.phone.as_ref()),
            }
        }
    };
    out.normalise();
    out
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};
    use crm_platform::UserId;

    use super::*;
    use crate::domain::*;

    fn contact(given: &str, title: &str, email: &str, minutes_ago: i64) -> Contact {
        let at = to_micros(Utc::now() - Duration::minutes(minutes_ago));
        let mut fields = ContactFields {
            external_id: None,
            given_name: given.into(),
            family_name: "Smith".into(),
            emails: vec![ContactEmail {
                address: EmailAddress::parse(email).expect("email"),
                primary: true,
            }],
            phones: vec![],
            title: title.into(),
            company: None,
            lifecycle_stage: LifecycleStage::Lead,
            source: SourceChannel::Web,
            owner: UserId::parse(given).expect("user"),
            tags: vec![Tag::parse(given).expect("tag")],
            attributes: BTreeMap::new(),
            consent: Consent::default(),
        };
        fields.normalise();
        Contact {
            id: ContactId::generate(),
            fields,
            create_time: at,
            update_time: at,
            revision: Revision::FIRST,
            erase_time: None,
            merged_into: None,
        }
    }

    #[test]
    fn most_recent_non_empty_wins_unless_the_caller_chooses() {
        let survivor = contact("jon", "", "jon@a.example", 60);
        let mut newer = contact("jonathan", "CTO", "jonathan@b.example", 5);
        newer.fields.lifecycle_stage = LifecycleStage::Customer;
        newer
            .fields
            .attributes
            .insert(AttributeKey::parse("seats").expect("key"), AttributeValue::Int(10));
        let merged = merge_fields(&survivor, std::slice::from_ref(&newer), &BTreeMap::new());
        assert_eq!(merged.given_name, "jonathan", "most recent non-empty");
        assert_eq!(merged.title, "CTO");
        assert_eq!(merged.lifecycle_stage, LifecycleStage::Customer);
        assert_eq!(merged.owner.as_str(), "jon", "the survivor keeps its owner");
        let emails: Vec<&str> = merged.emails.iter().map(|e| e.address.as_str()).collect();
        assert_eq!(
            emails,
            ["jon@a.example", "jonathan@b.example"],
            "united, survivor's first"
        );
        assert!(merged.emails[0].primary && !merged.emails[1].primary);
        assert_eq!(merged.tags.len(), 2);
        assert_eq!(merged.attributes.len(), 1);

        let choices = BTreeMap::from([(ContactField::GivenName, survivor.id), (ContactField::Owner, newer.id)]);
        let chosen = merge_fields(&survivor, std::slice::from_ref(&newer), &choices);
        assert_eq!(chosen.given_name, "jon");
        assert_eq!(chosen.owner.as_str(), "jonathan");
        assert_eq!(chosen.title, "CTO", "unchosen fields still follow the rules");
    }
}
