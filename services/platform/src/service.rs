//! A service of the suite, described once. `crm serve`, the single-service roles, `crm
//! migrate` and the gateway are built from these descriptions, so a new service is one more
//! description (and its role's command-line entry), not another copy of the wiring.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tonic::service::RoutesBuilder;

use crate::config::ConfigError;
use crate::consumer::{Credentials, FeedStatus};
use crate::db::DbError;
use crate::feed::EventFeedService;
use crate::outbox::Outbox;

/// How a process's followers get their credentials, for the given user of the `system` tenant.
pub type CredentialSource = Arc<dyn Fn(&str) -> Result<Credentials, ConfigError> + Send + Sync>;

/// A service starting, as a process hosts it.
pub type Starting = BoxFuture<'static, Result<Box<dyn Running>, StartError>>;

/// What a process gives a service it hosts.
#[derive(Clone)]
pub struct Hosting {
    /// The gRPC endpoint of each service this one calls or follows, by name (in `crm serve`,
    /// the process's own loopback address for every one).
    pub endpoints: BTreeMap<&'static str, String>,
    /// The credentials its followers present to the feeds they follow, minted or read for the
    /// given user of the `system` tenant.
    pub credentials: CredentialSource,
    /// How a service that follows feeds shares them among its replicas.
    pub scale: Scale,
}

/// How the replicas of a service share the feeds it follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    /// Each followed feed's tenants are split into this many partitions, each followed by one
    /// replica at a time (1: one consumer follows the whole feed). Fixed for a deployment:
    /// changing it follows the feeds again from their start under new checkpoints.
    pub partitions: u32,
    /// How long a replica's lease of a partition lasts without renewal: a dead replica's
    /// partitions are taken over after it.
    pub lease_ttl: Duration,
    /// How often derived changes are looked for (one replica at a time does it).
    pub derive_every: Duration,
}

impl Default for Scale {
    fn default() -> Self {
        Scale {
            partitions: 1,
            lease_ttl: Duration::from_secs(15),
            derive_every: Duration::from_secs(60),
        }
    }
}

impl Hosting {
    /// The endpoint of the service named `name`.
    pub fn endpoint(&self, name: &str) -> Result<&str, ConfigError> {
        self.endpoints
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| ConfigError(format!("no endpoint given for the {name} service")))
    }
}

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// A started service, as a process serves it.
pub trait Running: Send + Sync {
    /// Adds its gRPC services to the process's server.
    fn add_grpc(&self, routes: &mut RoutesBuilder);
    /// The names its gRPC health reports (its gRPC service names).
    fn health_names(&self) -> Vec<&'static str>;
    /// Its change feed, heartbeating every `heartbeat` while idle, if it publishes events.
    fn event_feed(&self, heartbeat: Duration) -> Option<EventFeedService>;
    /// The outbox its writes fill (pruned by the process), if it publishes events.
    fn outbox(&self) -> Option<Arc<dyn Outbox>>;
    /// Starts its background work (scheduled jobs, followed feeds) until `shutdown`; returns
    /// the status of each feed it follows, for readiness.
    fn spawn_background(&self, shutdown: CancellationToken) -> Vec<Arc<FeedStatus>>;
}

/// How a role connects to PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    pub url: String,
    pub max_connections: u32,
}

/// A service of the suite.
pub struct Description {
    /// Its name: the role (`crm <name>`), `crm migrate --service <name>`, the file of its
    /// embedded database (`<name>.db`) and the key of its endpoint in [`Hosting`].
    pub name: &'static str,
    /// Its proto package: the gateway sends the REST bindings of this package to it.
    pub package: &'static str,
    /// Applies its PostgreSQL migrations with the owning role.
    pub migrate_postgres: fn(String) -> BoxFuture<'static, Result<(), DbError>>,
    /// Opens (creating and migrating) its embedded SQLite database at the path.
    pub open_sqlite: fn(PathBuf, Hosting) -> Starting,
    /// Connects to its PostgreSQL database as its serving role.
    pub connect_postgres: fn(PostgresConfig, Hosting) -> Starting,
}
