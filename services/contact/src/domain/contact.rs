//! Contacts: people the company deals with.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use crm_platform::UserId;
use serde::{Deserialize, Serialize};

use super::ids::{CompanyId, ContactId, Revision};
use super::values::{
    AttributeKey, AttributeValue, ConsentStatus, EmailAddress, LifecycleStage, PhoneNumber, SourceChannel, Tag,
};

/// At most this many emails, phones, tags, attributes per record.
pub const MAX_EMAILS: usize = 20;
pub const MAX_PHONES: usize = 20;
pub const MAX_TAGS: usize = 100;
pub const MAX_ATTRIBUTES: usize = 200;
/// Longest name or title.
pub const MAX_NAME: usize = 200;
/// Longest external id.
pub const MAX_EXTERNAL_ID: usize = 128;

/// Checks an external id: 1 to 128 characters, no control characters, trimmed.
pub fn parse_external_id(raw: &str) -> Result<String, String> {
    let id = raw.trim();
    if id.is_empty() || id.chars().count() > MAX_EXTERNAL_ID || id.chars().any(char::is_control) {
        return Err(format!("must be 1 to {MAX_EXTERNAL_ID} printable characters"));
    }
    Ok(id.to_owned())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactEmail {
    pub address: EmailAddress,
    pub primary: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactPhone {
    pub number: PhoneNumber,
    pub primary: bool,
}

/// Consent on one channel, with when and where it was captured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelConsent {
    pub status: ConsentStatus,
    pub time: DateTime<Utc>,
    pub source: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    pub email: Option<ChannelConsent>,
    pub sms: Option<ChannelConsent>,
    pub phone: Option<ChannelConsent>,
}

/// A stored contact.
#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    pub id: ContactId,
    pub fields: ContactFields,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub revision: Revision,
    /// Set once the personal data was erased; the contact is then an anonymous tombstone.
    pub erase_time: Option<DateTime<Utc>>,
    /// Set once the contact was merged into another; its name then resolves to that one.
    pub merged_into: Option<ContactId>,
}

/// Everything about a contact a client may write, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactFields {
    /// The contact's id in another system; unique per tenant.
    pub external_id: Option<String>,
    pub given_name: String,
    pub family_name: String,
    pub emails: Vec<ContactEmail>,
    pub phones: Vec<ContactPhone>,
    pub title: String,
    pub company: Option<CompanyId>,
    pub lifecycle_stage: LifecycleStage,
    pub source: SourceChannel,
    pub owner: UserId,
    pub tags: Vec<Tag>,
    pub attributes: BTreeMap<AttributeKey, AttributeValue>,
    pub consent: Consent,
}

/// A field of a contact named by an update mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ContactField {
    ExternalId,
    GivenName,
    FamilyName,
    Emails,
    Phones,
    Title,
    Company,
    LifecycleStage,
    Source,
    Owner,
    Tags,
    Attributes,
    Consent,
    EmailConsent,
    SmsConsent,
    PhoneConsent,
}

impl ContactField {
    /// Parses an update-mask path (proto field names).
    pub fn parse(path: &str) -> Result<Self, String> {
        Ok(match path {
            "external_id" => Self::ExternalId,
            "given_name" => Self::GivenName,
            "family_name" => Self::FamilyName,
            "emails" => Self::Emails,
            "phones" => Self::Phones,
            "title" => Self::Title,
            "company" => Self::Company,
            "lifecycle_stage" => Self::LifecycleStage,
            "source" => Self::Source,
            "owner" => Self::Owner,
            "tags" => Self::Tags,
            "attributes" => Self::Attributes,
            "consent" => Self::Consent,
            "consent.email" => Self::EmailConsent,
            "consent.sms" => Self::SmsConsent,
            "consent.phone" => Self::PhoneConsent,
            "name" | "create_time" | "update_time" | "etag" => return Err(format!("`{path}` is output only")),
            other => return Err(format!("`{other}` is not a field of Contact")),
        })
    }
}

impl ContactFields {
    /// Checks the rules that span fields. Single values were checked when parsed.
    pub fn check(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.given_name.trim().is_empty() && self.family_name.trim().is_empty() && self.emails.is_empty() {
            problems.push(("given_name".into(), "a contact needs a name or an email address".into()));
        }
        if self.emails.iter().filter(|e| e.primary).count() > 1 {
            problems.push(("emails".into(), "at most one email may be primary".into()));
        }
        if self.phones.iter().filter(|p| p.primary).count() > 1 {
            problems.push(("phones".into(), "at most one phone may be primary".into()));
        }
        problems
    }

    /// Makes the first email and phone primary when none is, and sorts and deduplicates tags.
    pub fn normalise(&mut self) {
        if !self.emails.is_empty() && !self.emails.iter().any(|e| e.primary) {
            self.emails[0].primary = true;
        }
        if !self.phones.is_empty() && !self.phones.iter().any(|p| p.primary) {
            self.phones[0].primary = true;
        }
        self.tags.sort();
        self.tags.dedup();
    }

    /// Copies the fields named by `mask` from `patch`.
    pub fn apply(&mut self, patch: &ContactFields, mask: &[ContactField]) {
        for field in mask {
            match field {
                ContactField::ExternalId => self.external_id.clone_from(&patch.external_id),
                ContactField::GivenName => self.given_name.clone_from(&patch.given_name),
                ContactField::FamilyName => self.family_name.clone_from(&patch.family_name),
                ContactField::Emails => self.emails.clone_from(&patch.emails),
                ContactField::Phones => self.phones.clone_from(&patch.phones),
                ContactField::Title => self.title.clone_from(&patch.title),
                ContactField::Company => self.company = patch.company,
                ContactField::LifecycleStage => self.lifecycle_stage = patch.lifecycle_stage,
                ContactField::Source => self.source = patch.source,
                ContactField::Owner => self.owner = patch.owner.clone(),
                ContactField::Tags => self.tags.clone_from(&patch.tags),
                ContactField::Attributes => self.attributes.clone_from(&patch.attributes),
                ContactField::Consent => self.consent = patch.consent.clone(),
                ContactField::EmailConsent => self.consent.email.clone_from(&patch.consent.email),
                ContactField::SmsConsent => self.consent.sms.clone_from(&patch.consent.sms),
                ContactField::PhoneConsent => self.consent.phone.clone_from(&patch.consent.phone),
            }
        }
        self.normalise();
    }

    pub fn primary_email(&self) -> Option<&EmailAddress> {
        self.emails.iter().find(|e| e.primary).map(|e| &e.address)
    }

    /// The text full-text search indexes: names, emails (whole, local part and domain) and
    /// phones (E.164 and digits only). The company name is added by the store.
    pub fn search_text(&self) -> String {
        let mut words = vec![self.given_name.clone(), self.family_name.clone()];
        for email in &self.emails {
            let address = email.address.key();
            if let Some((local, domain)) = address.split_once('@') {
                words.push(local.replace(['.', '_', '-', '+'], " "));
                words.push(domain.to_owned());
            }
            words.push(address);
        }
        for phone in &self.phones {
            words.push(phone.number.as_str().trim_start_matches('+').to_owned());
        }
        words.retain(|w| !w.is_empty());
        words.join(" ")
    }
}

impl Contact {
    pub fn etag(&self) -> String {
        self.revision.etag()
    }

    /// The order duplicate candidates are offered in: most recently updated first, then by id.
    pub fn most_recent_first(a: &Contact, b: &Contact) -> std::cmp::Ordering {
        b.update_time.cmp(&a.update_time).then(a.id.0.cmp(&b.id.0))
    }

    /// The anonymous tombstone this contact becomes when its personal data is erased: only
    /// non-personal facts stay (id, owner, lifecycle stage, source, company, times).
    pub fn erased(&self, at: DateTime<Utc>) -> Contact {
        let f = &self.fields;
        Contact {
            id: self.id,
            fields: ContactFields {
                external_id: None,
                given_name: String::new(),
                family_name: String::new(),
                emails: Vec::new(),
                phones: Vec::new(),
                title: String::new(),
                company: f.company,
                lifecycle_stage: f.lifecycle_stage,
                source: f.source,
                owner: f.owner.clone(),
                tags: Vec::new(),
                attributes: BTreeMap::new(),
                consent: Consent::default(),
            },
            create_time: self.create_time,
            update_time: at,
            revision: self.revision.next(),
            erase_time: Some(at),
            merged_into: self.merged_into,
        }
    }
}
