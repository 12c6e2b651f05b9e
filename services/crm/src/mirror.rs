//! `crm mirror`: keeps a copy of a service's change feed in a table of another PostgreSQL
//! database, each event exactly once and in order, resuming where it stopped. For integrators
//! who want the events next to their own data, and the reference consumer of the consumer
//! library (crm_platform::consumer).

use async_trait::async_trait;
use crm_platform::consumer::{Apply, ConsumerConfig};
use crm_proto::crm::events::v1 as pb;
use sqlx::{Postgres, Transaction};

#[derive(clap::Args)]
pub(crate) struct MirrorArgs {
    /// gRPC endpoint of the producing service.
    #[arg(long, env = "CRM_ENDPOINT", default_value = crate::import::DEFAULT_ENDPOINT)]
    endpoint: String,
    /// Bearer token; a `service` role token mirrors every tenant, a user's token their tenant.
    #[arg(long, env = "CRM_TOKEN", hide_env_values = true)]
    token: String,
    /// The PostgreSQL database the events are copied into (table `mirrored_events`).
    #[arg(long, env = "CRM_MIRROR_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// The producing service, when the endpoint serves several feeds (`crm serve`), e.g.
    /// `crm.pipeline.v1`; by default the endpoint's first (the contact service's).
    #[arg(long)]
    source: Option<String>,
    /// The checkpoint's name: one name per mirrored feed.
    #[arg(long, default_value = "mirror")]
    name: String,
    /// Only these event types, comma-separated (all when empty).
    #[arg(long, value_delimiter = ',')]
    types: Vec<String>,
    #[command(flatten)]
    pub(crate) telemetry: crm_platform::telemetry::TelemetryArgs,
}

struct Mirror;

#[async_trait]
impl Apply for Mirror {
    async fn apply(&self, tx: &mut Transaction<'static, Postgres>, event: &pb::Event) -> anyhow::Result<()> {
        let time = event
            .time
            .as_ref()
            .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)));
        let payload = event.payload.as_ref().map(|p| p.value.clone()).unwrap_or_default();
        sqlx::query(
            "INSERT INTO mirrored_events (seq, id, tenant, source, type, subject, time, actor, traceparent, payload) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(i64::try_from(event.sequence)?)
        .bind(&event.id)
        .bind(&event.tenant)
        .bind(&event.source)
        .bind(&event.r#type)
        .bind(&event.subject)
        .bind(time)
        .bind(&event.actor)
        .bind(&event.traceparent)
        .bind(payload)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    fn schema(&self) -> &'static [&'static str] {
        &[
            "CREATE TABLE IF NOT EXISTS mirrored_events (seq bigint PRIMARY KEY, id text NOT NULL, \
           tenant text NOT NULL, source text NOT NULL, type text NOT NULL, subject text NOT NULL, \
           time timestamptz, actor text NOT NULL, traceparent text NOT NULL, payload bytea NOT NULL)",
        ]
    }
}

pub(crate) async fn run(args: MirrorArgs) -> anyhow::Result<()> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&args.database_url)
        .await?;
    let sink = crm_platform::consumer::PgSink::new(pool, Mirror).await?;
    let config = ConsumerConfig {
        name: args.name,
        endpoint: args.endpoint,
        credentials: crm_platform::consumer::Credentials::Token(args.token),
        source: args.source,
        types: args.types,
        partition: None,
        status: Default::default(),
    };
    eprintln!("crm mirror is up: following {} as {}", config.endpoint, config.name);
    crm_platform::consumer::run(config, &sink, crate::shutdown_token()).await
}
