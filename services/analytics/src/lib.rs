//! The analytics service (crm.analytics.v1): facts kept from the pipeline and contact services'
//! feeds (ids, amounts, times and categories; nothing personal), and metrics computed from them
//! with one documented, versioned formula each, on PostgreSQL or SQLite.

pub mod app;
pub mod domain;
pub mod grpc;
pub mod ingest;
pub mod own_usage;
pub mod store;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crm_platform::consumer::{ConsumerConfig, FeedStatus};
use crm_platform::feed::EventFeedService;
use crm_platform::lease;
use crm_platform::outbox::Outbox;
use crm_platform::partition::Partition;
use crm_platform::service::{Description, Hosting, Running, Scale, StartError};
use tokio_util::sync::CancellationToken;
use tonic::service::RoutesBuilder;

pub use app::AnalyticsApp;
use store::{POSTGRES_APP_ROLE, POSTGRES_MIGRATIONS, PgAnalyticsStore, SQLITE_MIGRATIONS, SqliteAnalyticsStore};

/// The proto package of this service's API.
pub const PACKAGE: &str = <crm_proto::crm::analytics::v1::Metric as crm_proto::prost::Name>::PACKAGE;

/// The names of the followed services among the suite's (see [`Hosting::endpoints`]), each
/// with its feed.
const FOLLOWED: [(&str, ingest::Feed); 2] = [("pipeline", ingest::PIPELINE), ("contact", ingest::CONTACT)];

/// The user of the `system` tenant this service's followers act as.
const SYSTEM_ACTOR: &str = "analytics";

/// The analytics service, as a process hosts it: it follows the pipeline and contact feeds,
/// whole, or (PostgreSQL with several partitions) the partitions this replica leases.
struct Hosted {
    app: AnalyticsApp,
    feeds: Vec<(ingest::Feed, ConsumerConfig)>,
    scale: Scale,
    /// The database the replicas lease partitions (and the deriving) in, when they share them.
    shared: Option<sqlx::PgPool>,
}

/// The lease unit of the deriving: one replica at a time looks for derived changes.
const DERIVE_UNIT: &str = "derive";

impl Running for Hosted {
    fn add_grpc(&self, routes: &mut RoutesBuilder) {
        let grpc = grpc::AnalyticsGrpc::new(self.app.clone());
        routes
            .add_service(grpc::MetricServiceServer::new(grpc.clone()))
            .add_service(grpc::GoalServiceServer::new(grpc.clone()))
            .add_service(grpc::ReportServiceServer::new(grpc.clone()))
            .add_service(grpc::IngestServiceServer::new(grpc.clone()))
            .add_service(grpc::SettingsServiceServer::new(grpc.clone()))
            .add_service(grpc::CustomerValueServiceServer::new(grpc.clone()))
            .add_service(grpc::RecommendationServiceServer::new(grpc));
    }

    fn health_names(&self) -> Vec<&'static str> {
        grpc::SERVICE_NAMES.to_vec()
    }

    fn event_feed(&self, heartbeat: Duration) -> Option<EventFeedService> {
        Some(EventFeedService::new(
            self.app.store().outbox(),
            PACKAGE,
            event_types(),
            None,
            heartbeat,
        ))
    }

    fn outbox(&self) -> Option<Arc<dyn Outbox>> {
        Some(own_usage::OwnUsage::new(Arc::clone(self.app.store())))
    }

    fn spawn_background(&self, shutdown: CancellationToken) -> Vec<Arc<FeedStatus>> {
        match &self.shared {
            None => {
                for (feed, config) in &self.feeds {
                    spawn_ingest(&self.app, *feed, config.clone(), shutdown.clone());
                }
                tokio::spawn(self.app.clone().derive_every(self.scale.derive_every, shutdown));
            }
            Some(pool) => share_partitions(&self.app, &self.feeds, pool.clone(), self.scale, shutdown),
        }
        self.feeds
            .iter()
            .map(|(_, config)| Arc::clone(&config.status))
            .collect()
    }
}

/// Follows the partitions of `feeds` this replica leases among the replicas alive (each
/// partition's checkpoint its own), until `shutdown`.
fn share_partitions(
    app: &AnalyticsApp,
    feeds: &[(ingest::Feed, ConsumerConfig)],
    pool: sqlx::PgPool,
    scale: Scale,
    shutdown: CancellationToken,
) {
    let mut units: BTreeMap<String, (ingest::Feed, ConsumerConfig)> = BTreeMap::new();
    for (feed, config) in feeds {
        for index in 0..scale.partitions {
            let Ok(partition) = Partition::new(index, scale.partitions) else {
                continue;
            };
            let name = ingest::partition_consumer(feed.consumer, partition);
            let mut config = config.clone();
            config.name.clone_from(&name);
            config.partition = Some(partition);
            units.insert(name, (*feed, config));
        }
    }
    let mut names: Vec<String> = units.keys().cloned().collect();
    names.push(DERIVE_UNIT.to_owned());
    let app = app.clone();
    let every = scale.derive_every;
    let start: lease::Start = Arc::new(move |unit, token| {
        if let Some((feed, config)) = units.get(unit) {
            spawn_ingest(&app, *feed, config.clone(), token);
        } else if unit == DERIVE_UNIT {
            tokio::spawn(app.clone().derive_every(every, token));
        }
    });
    let holder = format!(
        "{}-{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "analytics".into()),
        uuid::Uuid::now_v7()
    );
    tracing::info!(%holder, partitions = scale.partitions, "sharing the feeds' partitions among the replicas");
    lease::spawn(
        pool,
        lease::LeaseConfig {
            holder,
            ttl: scale.lease_ttl,
        },
        names,
        start,
        shutdown,
    );
}

/// The consumer settings of each feed this service follows (every type: a type it does not
/// know is counted, not filtered out unseen).
pub fn feeds(hosting: &Hosting) -> Result<Vec<(ingest::Feed, ConsumerConfig)>, StartError> {
    FOLLOWED
        .iter()
        .map(|(service, feed)| {
            Ok((
                *feed,
                ConsumerConfig {
                    name: feed.consumer.to_owned(),
                    endpoint: hosting.endpoint(service)?.to_owned(),
                    credentials: (hosting.credentials)(SYSTEM_ACTOR)?,
                    types: Vec::new(),
                    partition: None,
                    status: Default::default(),
                    source: Some(feed.source.to_owned()),
                },
            ))
        })
        .collect()
}

/// Every event type this service publishes on its feed.
pub fn event_types() -> Vec<crm_platform::feed::EventType> {
    use crm_platform::feed::EventType;
    use crm_proto::crm::analytics::v1 as pb;
    vec![
        EventType::of::<pb::SegmentChanged>(),
        EventType::of::<pb::GoalStatusChanged>(),
        EventType::of::<pb::DealStalled>(),
        EventType::of::<crm_proto::crm::events::v1::UsageReported>(),
    ]
}

/// The analytics service's description (see [`crm_platform::service`]).
pub fn describe() -> Description {
    Description {
        name: "analytics",
        package: PACKAGE,
        migrate_postgres: |url| {
            Box::pin(async move { crm_platform::db::migrate_postgres(&url, &POSTGRES_MIGRATIONS).await })
        },
        open_sqlite: |path, hosting| {
            Box::pin(async move {
                let feeds = feeds(&hosting)?;
                let app = open_sqlite(&path).await?;
                // One process owns the file: each feed followed whole.
                Ok(Box::new(Hosted {
                    app,
                    feeds,
                    scale: hosting.scale,
                    shared: None,
                }) as Box<dyn Running>)
            })
        },
        connect_postgres: |config, hosting| {
            Box::pin(async move {
                let feeds = feeds(&hosting)?;
                let pool =
                    crm_platform::db::connect_postgres(&config.url, POSTGRES_APP_ROLE, config.max_connections).await?;
                let store = PgAnalyticsStore::start(pool.clone())
                    .await
                    .map_err(crm_platform::db::DbError::Connect)?;
                let app = AnalyticsApp::new(Arc::new(store));
                let shared = (hosting.scale.partitions > 1).then_some(pool);
                Ok(Box::new(Hosted {
                    app,
                    feeds,
                    scale: hosting.scale,
                    shared,
                }) as Box<dyn Running>)
            })
        },
    }
}

/// Opens the embedded SQLite database (creating and migrating it) and returns the service.
pub async fn open_sqlite(path: &Path) -> Result<AnalyticsApp, crm_platform::db::DbError> {
    let pool = crm_platform::db::open_sqlite(path, &SQLITE_MIGRATIONS).await?;
    Ok(AnalyticsApp::new(Arc::new(SqliteAnalyticsStore::new(pool))))
}

/// Follows `feed` into the facts until `shutdown`.
pub fn spawn_ingest(app: &AnalyticsApp, feed: ingest::Feed, config: ConsumerConfig, shutdown: CancellationToken) {
    let sink = ingest::Ingest::new(Arc::clone(app.store()), feed, Arc::clone(app.clock()));
    crm_platform::consumer::spawn(config, sink, shutdown);
}
