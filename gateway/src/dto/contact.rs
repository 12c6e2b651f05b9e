//! JSON forms of contacts, companies and interactions (proto3 JSON names), and their
//! conversion to and from crm.contact.v1.

use std::collections::BTreeMap;

use crm_platform::ApiError;
use crm_platform::error::Violations;
use crm_proto::crm::contact::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::common::*;

json_enum!(LifecycleStage, pb::LifecycleStage, "LIFECYCLE_STAGE_");
json_enum!(SourceChannel, pb::SourceChannel, "SOURCE_CHANNEL_");
json_enum!(ConsentStatus, pb::ConsentStatus, "CONSENT_STATUS_");
json_enum!(SizeBand, pb::SizeBand, "SIZE_BAND_");
json_enum!(InteractionType, pb::InteractionType, "INTERACTION_TYPE_");
json_enum!(Direction, pb::Direction, "DIRECTION_");
json_enum!(InteractionChannel, pb::InteractionChannel, "INTERACTION_CHANNEL_");
json_enum!(ChangeAction, pb::ChangeAction, "CHANGE_ACTION_");
json_enum!(MatchReason, pb::MatchReason, "MATCH_REASON_");
json_enum!(RowOutcome, pb::RowOutcome, "ROW_OUTCOME_");

fn nonzero<T>(value: i32, wrap: fn(i32) -> T) -> Option<T> {
    (value != 0).then(|| wrap(value))
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmailAddress {
    /// The address; stored trimmed with a lower-case domain.
    pub address: String,
    /// The preferred address (the first one when none is marked).
    #[serde(default)]
    pub primary: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PhoneNumber {
    /// International number; stored in E.164 form.
    pub number: String,
    #[serde(default)]
    pub primary: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChannelConsent {
    pub status: Option<ConsentStatus>,
    /// When consent was given or withdrawn; the server's time when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<String>,
    /// Where the consent was captured.
    #[serde(default)]
    pub source: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Consent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<ChannelConsent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<ChannelConsent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<ChannelConsent>,
}

/// A contact. Output-only fields (name, createTime, updateTime, etag) are refused in writes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Contact {
    /// `contacts/{id}`.
    #[schema(read_only)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The contact's id in another system; unique within the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emails: Option<Vec<EmailAddress>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phones: Option<Vec<PhoneNumber>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// `companies/{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_stage: Option<LifecycleStage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceChannel>,
    /// User id of the owner; defaults to the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, AttributeValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<Consent>,
    #[schema(read_only)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    #[schema(read_only)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<String>,
    #[schema(read_only)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// When the personal data was erased; the contact is then an anonymous tombstone.
    #[schema(read_only)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erase_time: Option<String>,
}

fn consent_to_proto(v: &mut Violations, field: &str, c: Option<&ChannelConsent>) -> Option<pb::ChannelConsent> {
    let c = c?;
    Some(pb::ChannelConsent {
        status: enum_value(c.status, |s| s.0),
        update_time: time_from_json(v, &format!("{field}.update_time"), c.update_time.as_ref()),
        source: c.source.clone(),
    })
}

fn consent_from_proto(c: Option<&pb::ChannelConsent>) -> Option<ChannelConsent> {
    c.map(|c| ChannelConsent {
        status: nonzero(c.status, ConsentStatus),
        update_time: time_to_json(c.update_time.as_ref()),
        source: c.source.clone(),
    })
}

impl Contact {
    /// The proto message for a write; output-only fields must be absent.
    pub fn to_proto(&self, prefix: &str) -> Result<pb::Contact, ApiError> {
        let mut v = Violations::new(prefix);
        reject_read_only(
            &mut v,
            &[
                ("name", self.name.is_some()),
                ("create_time", self.create_time.is_some()),
                ("update_time", self.update_time.is_some()),
            ],
        );
        let consent = self.consent.as_ref().map(|c| pb::Consent {
            email: consent_to_proto(&mut v, "consent.email", c.email.as_ref()),
            sms: consent_to_proto(&mut v, "consent.sms", c.sms.as_ref()),
            phone: consent_to_proto(&mut v, "consent.phone", c.phone.as_ref()),
        });
        let contact = pb::Contact {
            name: String::new(),
            given_name: self.given_name.clone().unwrap_or_default(),
            family_name: self.family_name.clone().unwrap_or_default(),
            emails: self
                .emails
                .iter()
                .flatten()
                .map(|e| pb::EmailAddress {
                    address: e.address.clone(),
                    primary: e.primary,
                })
                .collect(),
            phones: self
                .phones
                .iter()
                .flatten()
                .map(|p| pb::PhoneNumber {
                    number: p.number.clone(),
                    primary: p.primary,
                })
                .collect(),
            title: self.title.clone().unwrap_or_default(),
            company: self.company.clone().unwrap_or_default(),
            lifecycle_stage: enum_value(self.lifecycle_stage, |s| s.0),
            source: enum_value(self.source, |s| s.0),
            owner: self.owner.clone().unwrap_or_default(),
            tags: self.tags.clone().unwrap_or_default(),
            attributes: attributes_to_proto(
                &mut v,
                "attributes",
                self.attributes.as_ref().unwrap_or(&BTreeMap::new()),
            ),
            consent,
            create_time: None,
            update_time: None,
            etag: self.etag.clone().unwrap_or_default(),
            erase_time: None,
            external_id: self.external_id.clone().unwrap_or_default(),
        };
        v.finish()?;
        Ok(contact)
    }

    /// The update mask of a PATCH: the (proto) names of the fields present in the body.
    pub fn present_paths(&self) -> Vec<String> {
        let mut paths: Vec<&str> = Vec::new();
        let present = [
            ("external_id", self.external_id.is_some()),
            ("given_name", self.given_name.is_some()),
            ("family_name", self.family_name.is_some()),
            ("emails", self.emails.is_some()),
            ("phones", self.phones.is_some()),
            ("title", self.title.is_some()),
            ("company", self.company.is_some()),
            ("lifecycle_stage", self.lifecycle_stage.is_some()),
            ("source", self.source.is_some()),
            ("owner", self.owner.is_some()),
            ("tags", self.tags.is_some()),
            ("attributes", self.attributes.is_some()),
        ];
        paths.extend(present.iter().filter(|(_, p)| *p).map(|(name, _)| *name));
        if let Some(consent) = &self.consent {
            let channels = [
                ("consent.email", consent.email.is_some()),
                ("consent.sms", consent.sms.is_some()),
                ("consent.phone", consent.phone.is_some()),
            ];
            paths.extend(channels.iter().filter(|(_, p)| *p).map(|(name, _)| *name));
        }
        paths.into_iter().map(str::to_owned).collect()
    }
}

impl From<&pb::Contact> for Contact {
    fn from(c: &pb::Contact) -> Self {
        Contact {
            name: Some(c.name.clone()),
            external_id: (!c.external_id.is_empty()).then(|| c.external_id.clone()),
            given_name: Some(c.given_name.clone()),
            family_name: Some(c.family_name.clone()),
            emails: Some(
                c.emails
                    .iter()
                    .map(|e| EmailAddress {
                        address: e.address.clone(),
                        primary: e.primary,
                    })
                    .collect(),
            ),
            phones: Some(
                c.phones
                    .iter()
                    .map(|p| PhoneNumber {
                        number: p.number.clone(),
                        primary: p.primary,
                    })
                    .collect(),
            ),
            title: Some(c.title.clone()),
            company: Some(c.company.clone()),
            lifecycle_stage: nonzero(c.lifecycle_stage, LifecycleStage),
            source: nonzero(c.source, SourceChannel),
            owner: Some(c.owner.clone()),
            tags: Some(c.tags.clone()),
            attributes: Some(attributes_from_proto(&c.attributes)),
            consent: c.consent.as_ref().map(|c| Consent {
                email: consent_from_proto(c.email.as_ref()),
                sms: consent_from_proto(c.sms.as_ref()),
                phone: consent_from_proto(c.phone.as_ref()),
            }),
            create_time: time_to_json(c.create_time.as_ref()),
            update_time: time_to_json(c.update_time.as_ref()),
            etag: Some(c.etag.clone()),
            erase_time: time_to_json(c.erase_time.as_ref()),
        }
    }
}

/// A company. `displayName` is its name as people write it; `name` is the resource name.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Company {
    /// `companies/{id}`.
    #[schema(read_only)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub industry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_band: Option<SizeBand>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, AttributeValue>>,
    #[schema(read_only)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    #[schema(read_only)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<String>,
    #[schema(read_only)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

impl Company {
    pub fn to_proto(&self, prefix: &str) -> Result<pb::Company, ApiError> {
        let mut v = Violations::new(prefix);
        reject_read_only(
            &mut v,
            &[
                ("name", self.name.is_some()),
                ("create_time", self.create_time.is_some()),
                ("update_time", self.update_time.is_some()),
            ],
        );
        let company = pb::Company {
            name: String::new(),
            display_name: self.display_name.clone().unwrap_or_default(),
            domain: self.domain.clone().unwrap_or_default(),
            industry: self.industry.clone().unwrap_or_default(),
            size_band: enum_value(self.size_band, |s| s.0),
            owner: self.owner.clone().unwrap_or_default(),
            tags: self.tags.clone().unwrap_or_default(),
            attributes: attributes_to_proto(
                &mut v,
                "attributes",
                self.attributes.as_ref().unwrap_or(&BTreeMap::new()),
            ),
            create_time: None,
            update_time: None,
            etag: self.etag.clone().unwrap_or_default(),
        };
        v.finish()?;
        Ok(company)
    }

    pub fn present_paths(&self) -> Vec<String> {
        [
            ("display_name", self.display_name.is_some()),
            ("domain", self.domain.is_some()),
            ("industry", self.industry.is_some()),
            ("size_band", self.size_band.is_some()),
            ("owner", self.owner.is_some()),
            ("tags", self.tags.is_some()),
            ("attributes", self.attributes.is_some()),
        ]
        .iter()
        .filter(|(_, present)| *present)
        .map(|(name, _)| (*name).to_owned())
        .collect()
    }
}

impl From<&pb::Company> for Company {
    fn from(c: &pb::Company) -> Self {
        Company {
            name: Some(c.name.clone()),
            display_name: Some(c.display_name.clone()),
            domain: Some(c.domain.clone()),
            industry: Some(c.industry.clone()),
            size_band: nonzero(c.size_band, SizeBand),
            owner: Some(c.owner.clone()),
            tags: Some(c.tags.clone()),
            attributes: Some(attributes_from_proto(&c.attributes)),
            create_time: time_to_json(c.create_time.as_ref()),
            update_time: time_to_json(c.update_time.as_ref()),
            etag: Some(c.etag.clone()),
        }
    }
}

/// One touch point on a contact's timeline.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Interaction {
    /// `contacts/{contact}/interactions/{id}`.
    #[schema(read_only)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub interaction_type: Option<InteractionType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<InteractionChannel>,
    /// When it happened (RFC 3339). Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occur_time: Option<String>,
    /// How long it lasted, e.g. "90s".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
    /// User who acted; defaults to the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The contact's company when it was logged.
    #[schema(read_only)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    #[schema(read_only)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
}

impl Interaction {
    pub fn to_proto(&self) -> Result<pb::Interaction, ApiError> {
        let mut v = Violations::new("interaction.");
        reject_read_only(
            &mut v,
            &[
                ("name", self.name.is_some()),
                ("company", self.company.is_some()),
                ("create_time", self.create_time.is_some()),
            ],
        );
        let interaction = pb::Interaction {
            name: String::new(),
            r#type: enum_value(self.interaction_type, |t| t.0),
            direction: enum_value(self.direction, |d| d.0),
            channel: enum_value(self.channel, |c| c.0),
            occur_time: time_from_json(&mut v, "occur_time", self.occur_time.as_ref()),
            duration: duration_from_json(&mut v, "duration", self.duration.as_ref()),
            subject: self.subject.clone().unwrap_or_default(),
            body: self.body.clone().unwrap_or_default(),
            outcome: self.outcome.clone().unwrap_or_default(),
            campaign_id: self.campaign_id.clone().unwrap_or_default(),
            actor: self.actor.clone().unwrap_or_default(),
            company: String::new(),
            create_time: None,
        };
        v.finish()?;
        Ok(interaction)
    }
}

impl From<&pb::Interaction> for Interaction {
    fn from(i: &pb::Interaction) -> Self {
        Interaction {
            name: Some(i.name.clone()),
            interaction_type: nonzero(i.r#type, InteractionType),
            direction: nonzero(i.direction, Direction),
            channel: nonzero(i.channel, InteractionChannel),
            occur_time: time_to_json(i.occur_time.as_ref()),
            duration: duration_to_json(i.duration.as_ref()),
            subject: Some(i.subject.clone()),
            body: Some(i.body.clone()),
            outcome: Some(i.outcome.clone()),
            campaign_id: Some(i.campaign_id.clone()),
            actor: Some(i.actor.clone()),
            company: Some(i.company.clone()),
            create_time: time_to_json(i.create_time.as_ref()),
        }
    }
}

/// A page of contacts.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContactPage {
    pub contacts: Vec<Contact>,
    /// Pass as `pageToken` for the next page; empty on the last page.
    pub next_page_token: String,
}

/// A page of companies.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompanyPage {
    pub companies: Vec<Company>,
    pub next_page_token: String,
}

/// A page of a timeline, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InteractionPage {
    pub interactions: Vec<Interaction>,
    pub next_page_token: String,
}

/// One field's change, with JSON values (null when unset or erased).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FieldChange {
    pub field: String,
    pub old_value: serde_json::Value,
    pub new_value: serde_json::Value,
}

/// One audited change of a contact or company.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// `contacts/{id}/history/{entry}` or `companies/{id}/history/{entry}`.
    pub name: String,
    pub action: Option<ChangeAction>,
    /// The user who made the change.
    pub actor: String,
    pub create_time: Option<String>,
    pub changes: Vec<FieldChange>,
}

/// A page of history, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPage {
    pub entries: Vec<HistoryEntry>,
    pub next_page_token: String,
}

fn json_value(value: Option<&crm_proto::prost_types::Value>) -> serde_json::Value {
    use crm_proto::prost_types::value::Kind;
    match value.and_then(|v| v.kind.as_ref()) {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            serde_json::Number::from_f64(*n).map_or(serde_json::Value::Null, serde_json::Value::Number)
        }
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::ListValue(list)) => {
            serde_json::Value::Array(list.values.iter().map(|v| json_value(Some(v))).collect())
        }
        Some(Kind::StructValue(map)) => serde_json::Value::Object(
            map.fields
                .iter()
                .map(|(k, v)| (k.clone(), json_value(Some(v))))
                .collect(),
        ),
    }
}

impl From<&pb::HistoryEntry> for HistoryEntry {
    fn from(e: &pb::HistoryEntry) -> Self {
        HistoryEntry {
            name: e.name.clone(),
            action: nonzero(e.action, ChangeAction),
            actor: e.actor.clone(),
            create_time: time_to_json(e.create_time.as_ref()),
            changes: e
                .changes
                .iter()
                .map(|c| FieldChange {
                    field: c.field.clone(),
                    old_value: json_value(c.old_value.as_ref()),
                    new_value: json_value(c.new_value.as_ref()),
                })
                .collect(),
        }
    }
}

/// Moves a user's portfolio.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReassignOwnerRequest {
    /// The user whose contacts and companies move.
    pub from_user: String,
    /// One user takes everything; several share it round-robin.
    pub to_users: Vec<String>,
    /// Only report what would move.
    #[serde(default)]
    pub dry_run: bool,
}

/// What one receiving user got.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OwnerShare {
    pub user: String,
    pub contacts: Int64,
    pub companies: Int64,
}

/// What moved (or would move, on a dry run).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReassignOwnerResponse {
    pub contacts: Int64,
    pub companies: Int64,
    pub shares: Vec<OwnerShare>,
    pub dry_run: bool,
}

impl From<&pb::ReassignOwnerResponse> for ReassignOwnerResponse {
    fn from(r: &pb::ReassignOwnerResponse) -> Self {
        ReassignOwnerResponse {
            contacts: Int64(r.contacts),
            companies: Int64(r.companies),
            shares: r
                .shares
                .iter()
                .map(|s| OwnerShare {
                    user: s.user.clone(),
                    contacts: Int64(s.contacts),
                    companies: Int64(s.companies),
                })
                .collect(),
            dry_run: r.dry_run,
        }
    }
}

/// Contacts that are likely one person.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DuplicateGroup {
    /// `contacts/{id}` of each member.
    pub contacts: Vec<String>,
    /// Likelihood from 0 to 1.
    pub score: f64,
    pub reasons: Vec<MatchReason>,
}

/// A page of duplicate groups.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DuplicateGroupPage {
    /// A page searches a bounded stretch of match keys: it may hold fewer groups than asked
    /// for, even none, while more pages follow.
    pub groups: Vec<DuplicateGroup>,
    /// Token for the next page; empty on the last page (and only there).
    pub next_page_token: String,
}

impl From<&pb::DuplicateGroup> for DuplicateGroup {
    fn from(g: &pb::DuplicateGroup) -> Self {
        DuplicateGroup {
            contacts: g.contacts.clone(),
            score: g.score,
            reasons: g.reasons.iter().map(|r| MatchReason(*r)).collect(),
        }
    }
}

/// Merges contacts into the one named in the path.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MergeRequest {
    /// `contacts/{id}` of each contact merged into the survivor.
    pub merged: Vec<String>,
    /// Field name (e.g. `title`) -> the contact whose value wins; other fields take the most
    /// recently updated non-empty value, and emails, phones, tags and attributes are united.
    #[serde(default)]
    pub field_sources: BTreeMap<String, String>,
}

/// The result of one imported row (a line of the response).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RowResult {
    /// The row's line in the file.
    pub line: Int64,
    pub outcome: Option<RowOutcome>,
    /// The contact created or matched.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub contact: String,
    /// For a rejected row: the offending field.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub field: String,
    /// For a rejected row: why.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

impl From<&pb::RowResult> for RowResult {
    fn from(r: &pb::RowResult) -> Self {
        RowResult {
            line: Int64(r.line),
            outcome: nonzero(r.outcome, RowOutcome),
            contact: r.contact.clone(),
            field: r.field.clone(),
            reason: r.reason.clone(),
        }
    }
}

/// Totals of an import (the last line of the response, as `{"summary": {...}}`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportSummary {
    pub created: Int64,
    pub updated: Int64,
    pub unchanged: Int64,
    pub rejected: Int64,
    pub dry_run: bool,
    /// What the rows were matched on: `external_id` or `primary_email`.
    pub natural_key: String,
}

impl From<&pb::ImportSummary> for ImportSummary {
    fn from(s: &pb::ImportSummary) -> Self {
        ImportSummary {
            created: Int64(s.created),
            updated: Int64(s.updated),
            unchanged: Int64(s.unchanged),
            rejected: Int64(s.rejected),
            dry_run: s.dry_run,
            natural_key: natural_key_name(s.natural_key).to_owned(),
        }
    }
}

/// The name an import's natural key goes by in its parameters.
pub fn natural_key_name(key: i32) -> &'static str {
    match pb::NaturalKey::try_from(key) {
        Ok(pb::NaturalKey::PrimaryEmail) => "primary_email",
        _ => "external_id",
    }
}

/// Companies that are likely one organisation.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompanyDuplicateGroup {
    /// `companies/{id}` of each member.
    pub companies: Vec<String>,
    /// Likelihood from 0 to 1.
    pub score: f64,
    pub reasons: Vec<MatchReason>,
}

/// A page of duplicate company groups.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompanyDuplicateGroupPage {
    /// A page searches a bounded stretch of match keys: it may hold fewer groups than asked
    /// for, even none, while more pages follow.
    pub groups: Vec<CompanyDuplicateGroup>,
    /// Token for the next page; empty on the last page (and only there).
    pub next_page_token: String,
}

impl From<&pb::CompanyDuplicateGroup> for CompanyDuplicateGroup {
    fn from(g: &pb::CompanyDuplicateGroup) -> Self {
        CompanyDuplicateGroup {
            companies: g.companies.clone(),
            score: g.score,
            reasons: g.reasons.iter().map(|r| MatchReason(*r)).collect(),
        }
    }
}
