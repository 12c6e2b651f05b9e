//! The contact domain: types that can only be built valid. No transport or storage here.

pub mod audit;
pub mod company;
pub mod contact;
pub mod duplicates;
pub mod ids;
pub mod interaction;
pub mod merge;
pub mod query;
pub mod values;

pub use audit::{AuditRecord, Audited, ChangeAction, FieldChange, HistoryEntry, changes};
pub use company::{Company, CompanyField, CompanyFields};
pub use contact::{ChannelConsent, Consent, Contact, ContactEmail, ContactField, ContactFields, ContactPhone};
pub use duplicates::{KeyKind, MatchKey, MatchReason};
pub use ids::{CompanyId, ContactId, InteractionId, Revision};
pub use interaction::{Interaction, InteractionFields};
pub use query::{CompanyFilter, ContactFilter, Cursor, ListQuery, Order, SearchTerms, SortField, SortKey, TimeBound};
pub use values::*;
