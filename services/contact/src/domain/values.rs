//! Value types shared by contacts, companies and interactions. Each can only be built valid.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Declares a closed set of values stored as lower-case words and named in filters by their
/// upper-case proto value name (with or without the enum prefix).
macro_rules! word_enum {
    ($(#[$meta:meta])* $name:ident, $prefix:literal { $($variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored form.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }

            /// Parses the stored form.
            pub fn parse(word: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == word)
            }

            /// Parses a filter value: `LEAD`, `LIFECYCLE_STAGE_LEAD` or `lead`.
            pub fn parse_filter(value: &str) -> Option<Self> {
                let upper = value.to_ascii_uppercase();
                let bare = upper.strip_prefix(concat!($prefix, "_")).unwrap_or(&upper);
                Self::parse(&bare.to_ascii_lowercase())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let word = String::deserialize(deserializer)?;
                Self::parse(&word).ok_or_else(|| serde::de::Error::custom(format!("unknown value `{word}`")))
            }
        }
    };
}
pub(crate) use word_enum;

word_enum!(
    /// Where a contact stands in the customer lifecycle.
    LifecycleStage, "LIFECYCLE_STAGE" {
        Subscriber => "subscriber",
        Lead => "lead",
        Prospect => "prospect",
        Customer => "customer",
        Churned => "churned",
    }
);

word_enum!(
    /// First-touch channel of a contact.
    SourceChannel, "SOURCE_CHANNEL" {
        Web => "web",
        CallCentre => "call_centre",
        ContactCentre => "contact_centre",
        Support => "support",
        Referral => "referral",
        Event => "event",
        Partner => "partner",
        Import => "import",
        Other => "other",
    }
);

word_enum!(
    /// Opted in or out.
    ConsentStatus, "CONSENT_STATUS" {
        OptedIn => "opted_in",
        OptedOut => "opted_out",
    }
);

word_enum!(
    /// Head-count band of a company.
    SizeBand, "SIZE_BAND" {
        Micro => "micro",
        Small => "small",
        Medium => "medium",
        Large => "large",
        Enterprise => "enterprise",
    }
);

word_enum!(
    /// Kind of touch point.
    InteractionType, "INTERACTION_TYPE" {
        Call => "call",
        Email => "email",
        Meeting => "meeting",
        Note => "note",
        SupportTicket => "support_ticket",
        Chat => "chat",
        Visit => "visit",
    }
);

word_enum!(
    /// Who started an interaction.
    Direction, "DIRECTION" {
        Inbound => "inbound",
        Outbound => "outbound",
        Internal => "internal",
    }
);

word_enum!(
    /// Medium of an interaction.
    InteractionChannel, "INTERACTION_CHANNEL" {
        Phone => "phone",
        Email => "email",
        Web => "web",
        InPerson => "in_person",
        Video => "video",
        Sms => "sms",
        Chat => "chat",
        Social => "social",
        Other => "other",
    }
);

/// Longest email address (RFC 5321 path limit).
const MAX_EMAIL_LEN: usize = 254;

/// A normalised email address: trimmed, domain in lower case. The local part keeps its case
/// (RFC 5321), but [`EmailAddress::key`] compares addresses case-insensitively, as every
/// mail provider in practice does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err("must not be empty".into());
        }
        if trimmed.len() > MAX_EMAIL_LEN {
            return Err(format!("must be at most {MAX_EMAIL_LEN} characters"));
        }
        let (local, domain) = trimmed.rsplit_once('@').ok_or("must contain '@'")?;
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .chars()
                .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
        if !local_ok {
            return Err("has an invalid part before '@'".into());
        }
        let domain = domain.to_lowercase();
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_alphanumeric() || c == '-')
            })
            && labels
                .last()
                .is_some_and(|tld| tld.chars().all(char::is_alphabetic) || tld.starts_with("xn--"));
        if !domain_ok {
            return Err("has an invalid domain".into());
        }
        Ok(Self(format!("{local}@{domain}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form duplicates are detected on: entirely lower case.
    pub fn key(&self) -> String {
        self.0.to_lowercase()
    }
}

impl TryFrom<String> for EmailAddress {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<EmailAddress> for String {
    fn from(value: EmailAddress) -> Self {
        value.0
    }
}

/// A phone number in E.164 form (`+4930123456`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Parses an international number (leading `+` or `00`), with any spacing or punctuation.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err("must not be empty".into());
        }
        let international = match trimmed.strip_prefix("00") {
            Some(rest) => format!("+{rest}"),
            None => trimmed.to_owned(),
        };
        if !international.starts_with('+') {
            return Err("must be international, starting with + and the country code".into());
        }
        let parsed = phonenumber::parse(None, &international).map_err(|_| "is not a phone number".to_owned())?;
        if !phonenumber::is_valid(&parsed) {
            return Err("is not a valid phone number for its country".into());
        }
        Ok(Self(parsed.format().mode(phonenumber::Mode::E164).to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PhoneNumber {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<PhoneNumber> for String {
    fn from(value: PhoneNumber) -> Self {
        value.0
    }
}

/// A label: lower-case letters, digits, '-', '_' and ':', 1 to 64 characters. Input is trimmed
/// and lower-cased first.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tag(String);

impl Tag {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let tag = raw.trim().to_lowercase();
        let valid = !tag.is_empty()
            && tag.chars().count() <= 64
            && tag.chars().all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ':'));
        if valid {
            Ok(Self(tag))
        } else {
            Err("must be 1 to 64 letters, digits, '-', '_' or ':'".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Tag {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Tag> for String {
    fn from(value: Tag) -> Self {
        value.0
    }
}

/// Key of a custom attribute: lower_snake_case, starting with a letter, at most 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AttributeKey(String);

impl AttributeKey {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let valid = raw.len() <= 64
            && raw.starts_with(|c: char| c.is_ascii_lowercase())
            && raw
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err("keys must be lower_snake_case, start with a letter and be at most 64 characters".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AttributeKey {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<AttributeKey> for String {
    fn from(value: AttributeKey) -> Self {
        value.0
    }
}

/// Longest string attribute value.
pub const MAX_ATTRIBUTE_TEXT: usize = 4096;

/// A typed custom attribute value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum AttributeValue {
    String(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    Time(DateTime<Utc>),
}

impl AttributeValue {
    /// Checks limits a value must respect.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            AttributeValue::String(s) if s.chars().count() > MAX_ATTRIBUTE_TEXT => {
                Err(format!("text values must be at most {MAX_ATTRIBUTE_TEXT} characters"))
            }
            AttributeValue::Double(d) if !d.is_finite() => Err("numbers must be finite".into()),
            _ => Ok(()),
        }
    }
}

pub use crm_platform::text::check as check_text;

pub use crm_platform::time::{now, to_micros};

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            EmailAddress::parse("  Ann.Lee@Example.COM ").expect("valid").as_str(),
            "Ann.Lee@example.com"
        );
        assert_eq!(
            EmailAddress::parse("Ann@Example.com").expect("valid").key(),
            "ann@example.com"
        );
        for bad in [
            "",
            "ann",
            "ann@",
            "@x.com",
            "ann@x",
            "ann@@x.com",
            "a b@x.com",
            "ann@-x.com",
            "ann@x..com",
            ".a@x.com",
            "ann@x.c0m",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn phones_become_e164() {
        assert_eq!(
            PhoneNumber::parse("+49 30 1234567").expect("de").as_str(),
            "+49301234567"
        );
        assert_eq!(
            PhoneNumber::parse("0044 20 7946 0958").expect("uk").as_str(),
            "+442079460958"
        );
        assert_eq!(
            PhoneNumber::parse("+1 (415) 555-2671").expect("us").as_str(),
            "+14155552671"
        );
        for bad in ["", "12345", "+1 555", "call me", "+999 1234567"] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tags_and_keys() {
        assert_eq!(Tag::parse(" VIP ").expect("tag").as_str(), "vip");
        assert!(Tag::parse("two words").is_err());
        assert!(AttributeKey::parse("annual_revenue").is_ok());
        assert!(AttributeKey::parse("AnnualRevenue").is_err());
        assert!(AttributeKey::parse("1st").is_err());
    }

    #[test]
    fn enum_filter_names() {
        assert_eq!(LifecycleStage::parse_filter("LEAD"), Some(LifecycleStage::Lead));
        assert_eq!(
            LifecycleStage::parse_filter("LIFECYCLE_STAGE_CUSTOMER"),
            Some(LifecycleStage::Customer)
        );
        assert_eq!(
            SourceChannel::parse_filter("call_centre"),
            Some(SourceChannel::CallCentre)
        );
        assert_eq!(LifecycleStage::parse_filter("BOSS"), None);
    }
}
