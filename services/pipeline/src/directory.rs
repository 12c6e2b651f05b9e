//! References into the contact service, checked over its gRPC API with the caller's own
//! credentials: a contact or company another tenant owns is as unknown as one that never
//! existed, and a merged id resolves to its survivor.

use async_trait::async_trait;
use crm_platform::ApiError;
use crm_proto::crm::contact::v1 as pb;
use crm_proto::crm::contact::v1::contact_service_client::ContactServiceClient;
use tonic::transport::Endpoint;
use uuid::Uuid;

use crate::app::Caller;

/// How long a reference check may take.
const CHECK_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

#[async_trait]
pub trait Directory: Send + Sync + 'static {
    /// The live contact `id` names in the caller's tenant (its survivor if it was merged),
    /// or None when there is none.
    async fn contact(&self, caller: &Caller, id: Uuid) -> Result<Option<Uuid>, ApiError>;
    /// The same for a company.
    async fn company(&self, caller: &Caller, id: Uuid) -> Result<Option<Uuid>, ApiError>;
}

/// The contact service over gRPC.
#[derive(Clone)]
pub struct GrpcDirectory {
    client: ContactServiceClient<crm_platform::telemetry::TracedChannel>,
}

impl GrpcDirectory {
    /// Connects lazily to the contact service at `endpoint` (e.g. `http://contact:50051`).
    pub fn new(endpoint: &str) -> Result<Self, String> {
        // Each check is a client span of the caller's trace.
        let channel = crm_platform::telemetry::traced(
            Endpoint::from_shared(endpoint.to_owned())
                .map_err(|e| format!("contact endpoint {endpoint}: {e}"))?
                .tcp_nodelay(true)
                .connect_lazy(),
        );
        Ok(Self {
            client: ContactServiceClient::new(channel),
        })
    }

    fn request<T>(caller: &Caller, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(CHECK_DEADLINE);
        if let Ok(value) = caller.credentials.parse() {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }
}

/// The id of a resource name `collection/{uuid}`.
fn id_of(name: &str) -> Option<Uuid> {
    name.rsplit('/').next().and_then(|id| Uuid::parse_str(id).ok())
}

fn outcome(result: Result<Option<String>, tonic::Status>) -> Result<Option<Uuid>, ApiError> {
    match result {
        Ok(name) => Ok(name.as_deref().and_then(id_of)),
        Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
        Err(status) if status.code() == tonic::Code::PermissionDenied => Ok(None),
        Err(status) if matches!(status.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded) => Err(
            ApiError::unavailable("the contact service cannot be reached to check the reference; retry"),
        ),
        Err(status) => Err(ApiError::internal(&format!("contact service: {status}"))),
    }
}

#[async_trait]
impl Directory for GrpcDirectory {
    async fn contact(&self, caller: &Caller, id: Uuid) -> Result<Option<Uuid>, ApiError> {
        let request = Self::request(
            caller,
            pb::GetContactRequest {
                name: format!("contacts/{id}"),
            },
        );
        let result = self.client.clone().get_contact(request).await;
        // An erased contact is an anonymous tombstone: nothing may point at it any more.
        outcome(result.map(|r| {
            r.into_inner()
                .contact
                .filter(|c| c.erase_time.is_none())
                .map(|c| c.name)
        }))
    }

    async fn company(&self, caller: &Caller, id: Uuid) -> Result<Option<Uuid>, ApiError> {
        let request = Self::request(
            caller,
            pb::GetCompanyRequest {
                name: format!("companies/{id}"),
            },
        );
        let result = self.client.clone().get_company(request).await;
        outcome(result.map(|r| r.into_inner().company.map(|c| c.name)))
    }
}
