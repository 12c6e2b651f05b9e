//! Starts real `crm` processes on ephemeral ports and gives tests REST and gRPC clients.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crm_platform::{Principal, Role, TenantId, UserId};
use crm_proto::crm::contact::v1::contact_service_client::ContactServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The HS256 secret the test processes verify with.
pub(crate) const SECRET: &str = "e2e-secret-e2e-secret-e2e-secret-e2e";

/// A running process of the suite, killed when dropped.
pub(crate) struct Process {
    child: Child,
    /// Lines the process printed on stderr before it reported being up.
    pub(crate) banner: String,
    /// Everything it has printed on stderr so far.
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

/// The PostgreSQL pool of each process of a test (tests run side by side on one server).
const POOL: &str = "6";

impl Process {
    /// Starts `crm contact` on free ports over the PostgreSQL database at `url` (with `envs`
    /// besides); returns it and its gRPC endpoint.
    pub(crate) fn contact_on_postgres(url: &str, envs: &[(&str, &str)], cwd: &Path) -> (Process, String) {
        let mut all = vec![("CRM_DATABASE_URL", url), ("CRM_DB_MAX_CONNECTIONS", POOL)];
        all.extend_from_slice(envs);
        let process = Process::start(
            &["contact", "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"],
            &all,
            cwd,
            "crm contact is up",
        );
        let grpc = format!("http://{}", process.address_after("gRPC on "));
        (process, grpc)
    }

    /// Starts `crm <args>` and waits until it prints a line containing `ready_marker`.
    pub(crate) fn start(args: &[&str], envs: &[(&str, &str)], cwd: &Path, ready_marker: &str) -> Process {
        let mut command = Command::new(env!("CARGO_BIN_EXE_crm"));
        command.args(args).current_dir(cwd).env_remove("CRM_JWKS_URL");
        // Tokens are verified with the test secret unless the test gives a JWKS.
        if !envs.iter().any(|(key, _)| *key == "CRM_JWKS_URL") {
            command.env("CRM_JWT_SECRET", SECRET);
        }
        command
            .env("CRM_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn crm");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let marker = ready_marker.to_owned();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let seen = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            let mut reported = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut seen = seen.lock().expect("log");
                seen.push_str(&line);
                seen.push('\n');
                if !reported && line.contains(&marker) {
                    reported = true;
                    let _ = tx.send(Ok(seen.clone()));
                }
            }
            if !reported {
                let _ = tx.send(Err(seen.lock().expect("log").clone()));
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(banner)) => Process { child, banner, log },
            Ok(Err(output)) => panic!("crm {args:?} exited before it was up:\n{output}"),
            Err(_) => {
                let _ = child.kill();
                panic!("crm {args:?} did not come up within 60 s");
            }
        }
    }

    /// Peak resident memory of the process so far (VmHWM), in MiB.
    pub(crate) fn peak_memory_mib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("/proc status");
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
        let kib: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("kB");
        kib / 1024
    }

    /// Whether the process is still running.
    pub(crate) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Everything the process has printed on stderr so far (to say why it stopped).
    pub(crate) fn output(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    /// The address printed after `label` in the banner, e.g. "REST on http://" -> host:port.
    pub(crate) fn address_after(&self, label: &str) -> String {
        let start = self
            .banner
            .find(label)
            .unwrap_or_else(|| panic!("no `{label}` in {}", self.banner))
            + label.len();
        self.banner[start..]
            .split(|c: char| c.is_whitespace() || c == ',')
            .next()
            .unwrap_or_default()
            .trim_end_matches('.')
            .to_owned()
    }

    /// Sends SIGTERM and waits (without blocking the runtime, so open client connections can
    /// answer the server's GOAWAY) for the exit status and how long the exit took.
    pub(crate) async fn terminate(mut self) -> (std::process::ExitStatus, Duration) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let started = std::time::Instant::now();
        for _ in 0..300 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status, started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("crm did not exit within 15 s of SIGTERM");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `crm serve` in its own data directory.
pub(crate) struct Suite {
    pub(crate) process: Process,
    pub(crate) rest: String,
    pub(crate) grpc: String,
    pub(crate) data: std::sync::Arc<tempfile::TempDir>,
}

impl Suite {
    pub(crate) fn start() -> Suite {
        Suite::start_in(std::sync::Arc::new(tempfile::tempdir().expect("tempdir")))
    }

    /// `crm serve` with extra environment.
    pub(crate) fn start_with(envs: &[(&str, &str)]) -> Suite {
        Suite::start_in_with(std::sync::Arc::new(tempfile::tempdir().expect("tempdir")), envs)
    }

    /// Starts `crm serve` on an existing data directory (a restart).
    pub(crate) fn start_in(data: std::sync::Arc<tempfile::TempDir>) -> Suite {
        Suite::start_in_with(data, &[])
    }

    /// `crm serve` on an existing data directory with extra environment.
    pub(crate) fn start_in_with(data: std::sync::Arc<tempfile::TempDir>, envs: &[(&str, &str)]) -> Suite {
        let process = Process::start(
            &[
                "serve",
                "--http-addr",
                "127.0.0.1:0",
                "--grpc-addr",
                "127.0.0.1:0",
                "--shutdown-grace",
                "10s",
            ],
            envs,
            data.path(),
            "crm is up",
        );
        let rest = format!("http://{}", process.address_after("REST on http://"));
        let grpc = format!("http://{}", process.address_after("gRPC on "));
        Suite {
            process,
            rest,
            grpc,
            data,
        }
    }
}

pub(crate) fn token(tenant: &str, user: &str, role: Role) -> String {
    let principal = Principal {
        tenant: TenantId::parse(tenant).expect("tenant"),
        user: UserId::parse(user).expect("user"),
        roles: vec![role],
    };
    crm_platform::auth::mint_token(SECRET.as_bytes(), &principal, Duration::from_secs(600)).expect("mint")
}

/// A token of one user that stops being accepted `seconds` from now: its `exp` is already
/// past, within the leeway every token is accepted with.
pub(crate) fn token_expiring(tenant: &str, user: &str, role: Role, seconds: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = crm_platform::auth::Claims {
        sub: user.to_owned(),
        tenant: tenant.to_owned(),
        roles: vec![role.as_str().to_owned()],
        exp: now + seconds - crm_platform::auth::LEEWAY_SECS,
        iat: Some(now),
        iss: None,
        aud: None,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("token")
}

/// A REST client acting as one user.
#[derive(Clone)]
pub(crate) struct Rest {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Rest {
    pub(crate) fn new(base: &str, token: Option<String>) -> Rest {
        Rest {
            http: reqwest::Client::new(),
            base: base.to_owned(),
            token,
        }
    }

    pub(crate) fn as_user(base: &str, tenant: &str, user: &str, role: Role) -> Rest {
        Rest::new(base, Some(token(tenant, user, role)))
    }

    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut builder = self.request(method, path);
        if let Some(body) = body {
            builder = builder.json(&body);
        }
        let response = builder.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let json = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        };
        (status, json)
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub(crate) async fn patch(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::PATCH, path, Some(body)).await
    }

    pub(crate) async fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::DELETE, path, None).await
    }
}

/// Adds a bearer token to every gRPC call.
#[derive(Clone)]
pub(crate) struct Bearer(pub Option<String>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| tonic::Status::internal("token"))?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

pub(crate) type GrpcClient = ContactServiceClient<InterceptedService<Channel, Bearer>>;

pub(crate) async fn grpc_client(endpoint: &str, token: Option<String>) -> GrpcClient {
    let channel = Channel::from_shared(endpoint.to_owned())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    ContactServiceClient::with_interceptor(channel, Bearer(token))
}

/// The id part of a resource name.
pub(crate) fn id_of(name: &serde_json::Value) -> String {
    name.as_str()
        .and_then(|n| n.rsplit('/').next())
        .expect("resource name")
        .to_owned()
}

/// Runs `crm migrate --service <service>` on the database at `url` and checks it succeeded.
pub(crate) fn migrate(service: &str, url: &str) {
    let migrate = Command::new(env!("CARGO_BIN_EXE_crm"))
        .args(["migrate", "--service", service])
        .env("CRM_DATABASE_URL", url)
        .env("CRM_LOG", "warn")
        .output()
        .expect("migrate");
    assert!(migrate.status.success(), "{}", String::from_utf8_lossy(&migrate.stderr));
}

/// The Kubernetes shape on PostgreSQL: `crm migrate` of four fresh databases, then `crm
/// contact`, `crm pipeline`, `crm analytics`, `crm notification` and `crm gateway` as separate
/// processes.
pub(crate) struct PgSuite {
    pub(crate) rest: String,
    pub(crate) contact_grpc: String,
    pub(crate) pipeline_grpc: String,
    /// `/metrics` of the pipeline process.
    pub(crate) pipeline_metrics: String,
    /// The databases of the pipeline, analytics and notification services.
    pub(crate) pipeline_url: String,
    pub(crate) analytics_url: String,
    pub(crate) notification_url: String,
    /// What `crm analytics` and `crm notification` are started with (another replica starts
    /// the same way).
    analytics_envs: Vec<(String, String)>,
    notification_envs: Vec<(String, String)>,
    processes: Vec<Process>,
    databases: Vec<crm_platform::testing::TestDatabase>,
    _dir: tempfile::TempDir,
}

impl PgSuite {
    /// None (the test is skipped, or fails when PostgreSQL is required) without a server.
    pub(crate) async fn start(name: &str, envs: &[(&str, &str)]) -> Option<PgSuite> {
        let contact_db = crm_platform::testing::TestDatabase::create(&format!("{name}_contact")).await?;
        let pipeline_db = crm_platform::testing::TestDatabase::create(&format!("{name}_pipeline")).await?;
        let analytics_db = crm_platform::testing::TestDatabase::create(&format!("{name}_analytics")).await?;
        let notification_db = crm_platform::testing::TestDatabase::create(&format!("{name}_notification")).await?;
        for (service, db) in [
            ("contact", &contact_db),
            ("pipeline", &pipeline_db),
            ("analytics", &analytics_db),
            ("notification", &notification_db),
        ] {
            migrate(service, &db.url);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let (contact, contact_grpc) = Process::contact_on_postgres(&contact_db.url, envs, dir.path());
        let role = |name: &str, db: &str, peers: &[(&'static str, &str)]| {
            // Small pools: tests run side by side on one PostgreSQL of 100 connections.
            let mut role_envs = vec![("CRM_DATABASE_URL", db), ("CRM_DB_MAX_CONNECTIONS", POOL)];
            role_envs.extend_from_slice(peers);
            role_envs.extend_from_slice(envs);
            let process = Process::start(
                &[name, "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"],
                &role_envs,
                dir.path(),
                &format!("crm {name} is up"),
            );
            let grpc = format!("http://{}", process.address_after("gRPC on "));
            (process, grpc)
        };
        let (pipeline, pipeline_grpc) = role(
            "pipeline",
            &pipeline_db.url,
            &[("CRM_CONTACT_ENDPOINT", contact_grpc.as_str())],
        );
        let pipeline_metrics = format!("http://{}/metrics", pipeline.address_after("metrics on "));
        let (analytics, analytics_grpc) = role(
            "analytics",
            &analytics_db.url,
            &[
                ("CRM_PIPELINE_ENDPOINT", pipeline_grpc.as_str()),
                ("CRM_CONTACT_ENDPOINT", contact_grpc.as_str()),
            ],
        );
        // Webhook receivers of the tests listen on loopback, which the roles refuse by default.
        let notification_peers = [
            ("CRM_PIPELINE_ENDPOINT", pipeline_grpc.as_str()),
            ("CRM_CONTACT_ENDPOINT", contact_grpc.as_str()),
            ("CRM_ANALYTICS_ENDPOINT", analytics_grpc.as_str()),
            ("CRM_WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8"),
        ];
        let (notification, notification_grpc) = role("notification", &notification_db.url, &notification_peers);
        let mut notification_envs: Vec<(String, String)> = vec![
            ("CRM_DATABASE_URL".into(), notification_db.url.clone()),
            ("CRM_DB_MAX_CONNECTIONS".into(), POOL.into()),
        ];
        notification_envs.extend(
            notification_peers
                .iter()
                .chain(envs)
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let mut gateway_envs = vec![
            ("CRM_CONTACT_ENDPOINT", contact_grpc.as_str()),
            ("CRM_PIPELINE_ENDPOINT", pipeline_grpc.as_str()),
            ("CRM_ANALYTICS_ENDPOINT", analytics_grpc.as_str()),
            ("CRM_NOTIFICATION_ENDPOINT", notification_grpc.as_str()),
        ];
        gateway_envs.extend_from_slice(envs);
        let gateway = Process::start(
            &["gateway", "--http-addr", "127.0.0.1:0"],
            &gateway_envs,
            dir.path(),
            "crm gateway is up",
        );
        let rest = format!("http://{}", gateway.address_after("REST on http://"));
        let mut analytics_envs: Vec<(String, String)> = vec![
            ("CRM_DATABASE_URL".into(), analytics_db.url.clone()),
            ("CRM_DB_MAX_CONNECTIONS".into(), POOL.into()),
            ("CRM_PIPELINE_ENDPOINT".into(), pipeline_grpc.clone()),
            ("CRM_CONTACT_ENDPOINT".into(), contact_grpc.clone()),
        ];
        analytics_envs.extend(envs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        Some(PgSuite {
            rest,
            contact_grpc,
            pipeline_grpc,
            pipeline_metrics,
            pipeline_url: pipeline_db.url.clone(),
            analytics_url: analytics_db.url.clone(),
            notification_url: notification_db.url.clone(),
            analytics_envs,
            notification_envs,
            processes: vec![contact, pipeline, analytics, notification, gateway],
            databases: vec![contact_db, pipeline_db, analytics_db, notification_db],
            _dir: dir,
        })
    }

    /// Starts another replica of `crm analytics` on the same database (dropping it kills it
    /// with SIGKILL).
    pub(crate) fn analytics_replica(&self) -> Process {
        self.replica("analytics", &self.analytics_envs)
    }

    /// Starts another replica of `crm notification` on the same database (dropping it kills
    /// it with SIGKILL).
    pub(crate) fn notification_replica(&self) -> Process {
        self.replica("notification", &self.notification_envs)
    }

    /// Kills the first `crm notification` with SIGKILL.
    pub(crate) fn kill_notification(&mut self) {
        self.processes.remove(3);
    }

    fn replica(&self, role: &str, envs: &[(String, String)]) -> Process {
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Process::start(
            &[role, "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"],
            &envs,
            self._dir.path(),
            &format!("crm {role} is up"),
        )
    }

    /// Stops the processes and drops the databases.
    pub(crate) async fn stop(mut self) {
        self.processes.clear();
        for db in self.databases.drain(..) {
            db.drop_database().await;
        }
    }
}

/// The deployments a case runs on: `crm serve` (false), then the PostgreSQL roles (true).
pub(crate) const BACKENDS: [bool; 2] = [false, true];

/// Where a test runs: `crm serve` on SQLite, or the separate roles on PostgreSQL.
pub(crate) enum Deployment {
    Serve(Suite),
    Postgres(PgSuite),
}

impl Deployment {
    /// `crm serve` when `postgres` is false, else the PostgreSQL shape (None when skipped).
    pub(crate) async fn start(postgres: bool, name: &str) -> Option<Deployment> {
        Deployment::start_with(postgres, name, &[]).await
    }

    /// The same with extra environment for every process.
    pub(crate) async fn start_with(postgres: bool, name: &str, envs: &[(&str, &str)]) -> Option<Deployment> {
        if postgres {
            PgSuite::start(name, envs).await.map(Deployment::Postgres)
        } else {
            Some(Deployment::Serve(Suite::start_with(envs)))
        }
    }

    pub(crate) fn rest(&self) -> &str {
        match self {
            Deployment::Serve(suite) => &suite.rest,
            Deployment::Postgres(pg) => &pg.rest,
        }
    }

    pub(crate) fn contact_grpc(&self) -> &str {
        match self {
            Deployment::Serve(suite) => &suite.grpc,
            Deployment::Postgres(pg) => &pg.contact_grpc,
        }
    }

    /// Where the pipeline service's gRPC API is served.
    pub(crate) fn pipeline_grpc(&self) -> &str {
        match self {
            Deployment::Serve(suite) => &suite.grpc,
            Deployment::Postgres(pg) => &pg.pipeline_grpc,
        }
    }

    /// Where the pipeline service's metrics are rendered.
    pub(crate) fn pipeline_metrics(&self) -> String {
        match self {
            Deployment::Serve(suite) => format!("{}/metrics", suite.rest),
            Deployment::Postgres(pg) => pg.pipeline_metrics.clone(),
        }
    }

    pub(crate) async fn stop(self) {
        if let Deployment::Postgres(pg) = self {
            pg.stop().await;
        }
    }
}

/// The fields a problem's violations name, in order.
pub(crate) fn violation_fields(problem: &serde_json::Value) -> Vec<String> {
    problem["violations"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|v| v["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
