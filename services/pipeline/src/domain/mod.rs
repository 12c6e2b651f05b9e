//! The pipeline service's records and the rules that keep them valid. Records are stored as
//! documents (their serde form) next to the columns the queries use; see `store`.

mod rec;
mod records;
pub mod values;

pub use rec::Rec;
pub use records::*;
pub use values::{Money, Period};

crm_platform::resource_id!(
    /// Id of a pipeline; name `pipelines/{id}`.
    PipelineId, "pipelines"
);
crm_platform::resource_id!(
    /// Id of a lead; name `leads/{id}`.
    LeadId, "leads"
);
crm_platform::resource_id!(
    /// Id of a deal; name `deals/{id}`.
    DealId, "deals"
);
crm_platform::resource_id!(
    /// Id of a product; name `products/{id}`.
    ProductId, "products"
);
crm_platform::resource_id!(
    /// Id of a task; name `tasks/{id}`.
    TaskId, "tasks"
);
crm_platform::resource_id!(
    /// Id of a forecast submission; name `forecasts/{id}`.
    ForecastId, "forecasts"
);
crm_platform::resource_id!(
    /// Id of a contact of the contact service; name `contacts/{id}`.
    ContactRef, "contacts"
);
crm_platform::resource_id!(
    /// Id of a company of the contact service; name `companies/{id}`.
    CompanyRef, "companies"
);

pub use crm_platform::resource::Revision;
