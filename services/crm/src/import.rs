//! `crm import FILE`: streams a CSV or NDJSON file of contacts, or of the deals and leads of the
//! years before the CRM, to a running suite over gRPC, shows progress and rows/s, and writes
//! the rejected rows to a file that can be fixed and imported again.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use crm_gateway::import::{Format, read_rows};
use crm_proto::crm::contact::v1 as pb;
use crm_proto::crm::contact::v1::contact_service_client::ContactServiceClient;
use crm_proto::crm::pipeline::v1 as deals;
use crm_proto::crm::pipeline::v1::deal_service_client::DealServiceClient;
use futures::StreamExt;

/// Default endpoint: the gRPC port of a local `crm serve`.
pub(crate) const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:50051";

#[derive(clap::Args)]
pub(crate) struct ImportArgs {
    /// The file: CSV with a header row, or NDJSON (by extension, or --format).
    file: PathBuf,
    /// gRPC endpoint of the suite.
    #[arg(long, env = "CRM_ENDPOINT", default_value = DEFAULT_ENDPOINT)]
    endpoint: String,
    /// Bearer token (see `crm token`).
    #[arg(long, env = "CRM_TOKEN", hide_env_values = true)]
    token: String,
    /// `csv` or `ndjson`; default from the file's extension.
    #[arg(long)]
    format: Option<String>,
    /// What the file holds; by default deals (and leads) when its header has a `pipeline` or
    /// `record` column (NDJSON: `{"deal": ...}` lines), else contacts.
    #[arg(long, value_enum)]
    records: Option<Records>,
    /// Contacts: what rows are matched on, `external_id` or `primary_email`. Default:
    /// `external_id` when the file has that column (NDJSON: always), else `primary_email`.
    /// Deals and leads are always matched on `external_id`.
    #[arg(long)]
    natural_key: Option<String>,
    /// Report what would happen without writing anything.
    #[arg(long)]
    dry_run: bool,
    /// CSV column mapping, `column:field,column:field`; `column:-` skips a column.
    #[arg(long, default_value = "")]
    mapping: String,
    /// Where rejected rows go; default FILE.rejected.csv (or .ndjson).
    #[arg(long)]
    rejects: Option<PathBuf>,
}

/// Counts the bytes read, for the progress bar.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Rejected rows, written as they come: for CSV the original row plus an `error` column
/// (which an import ignores), for NDJSON the original line.
struct Rejects {
    path: PathBuf,
    format: Format,
    header: String,
    file: Option<std::io::BufWriter<std::fs::File>>,
    count: u64,
}

impl Rejects {
    fn write(&mut self, raw: &str, field: &str, reason: &str) -> anyhow::Result<()> {
        if self.file.is_none() {
            let mut file = std::io::BufWriter::new(
                std::fs::File::create(&self.path).with_context(|| format!("cannot write {}", self.path.display()))?,
            );
            if self.format == Format::Csv {
                writeln!(file, "{},error", self.header)?;
            }
            self.file = Some(file);
        }
        let file = self.file.as_mut().context("rejects file")?;
        match self.format {
            Format::Csv => {
                let error = format!("{field}: {reason}").replace('"', "\"\"");
                writeln!(file, "{raw},\"{error}\"")?;
            }
            Format::Ndjson => writeln!(file, "{raw}")?,
        }
        self.count += 1;
        Ok(())
    }
}

/// What a file holds: contacts, or the deals and leads of the years before the CRM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Records {
    Contacts,
    Deals,
}

impl Records {
    /// What the start of the file says it holds: deals when a CSV header has a `pipeline` or
    /// `record` column or an NDJSON line is `{"deal": ...}` or `{"lead": ...}`, else contacts.
    fn sniff(path: &std::path::Path, format: Format) -> anyhow::Result<Records> {
        use std::io::BufRead;
        let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut first = String::new();
        std::io::BufReader::new(file).take(64 * 1024).read_line(&mut first)?;
        let deals = match format {
            Format::Csv => first
                .trim_start_matches('\u{feff}')
                .split(',')
                .map(|c| c.trim().trim_matches('"'))
                .any(|c| c == "pipeline" || c == "record"),
            Format::Ndjson => {
                let start = first.trim_start().trim_start_matches('{').trim_start();
                start.starts_with("\"deal\"") || start.starts_with("\"lead\"")
            }
        };
        Ok(if deals { Records::Deals } else { Records::Contacts })
    }
}

/// A row's result as the import reports it.
struct RowResult {
    line: i64,
    rejected: bool,
    field: String,
    reason: String,
}

/// One kind of import: its rows, its request stream and how its answers read.
trait Import {
    type Schema: crm_gateway::import::Schema<Row = Self::Row> + Send + 'static;
    type Row: Send + 'static;
    type Request: Send + 'static;
    type Response: Send + 'static;

    fn options(&self, header: &crm_gateway::import::Header) -> Self::Request;
    fn row(row: Self::Row) -> Self::Request;
    fn line(row: &Self::Row) -> i64;
    async fn call(
        channel: tonic::transport::Channel,
        bearer: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
        requests: impl futures::Stream<Item = Self::Request> + Send + 'static,
    ) -> Result<tonic::Streaming<Self::Response>, tonic::Status>;
    fn results(response: &Self::Response) -> Vec<RowResult>;
    /// The summary line, on the last response.
    fn summary(response: &Self::Response) -> Option<String>;
}

fn with_bearer(
    bearer: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |mut request: tonic::Request<()>| {
        request.metadata_mut().insert("authorization", bearer.clone());
        Ok(request)
    }
}

struct Contacts {
    named: Option<pb::NaturalKey>,
    dry_run: bool,
}

impl Import for Contacts {
    type Schema = crm_gateway::table::RowReader;
    type Row = pb::ImportRow;
    type Request = pb::ImportContactsRequest;
    type Response = pb::ImportContactsResponse;

    fn options(&self, header: &crm_gateway::import::Header) -> Self::Request {
        pb::ImportContactsRequest {
            kind: Some(pb::import_contacts_request::Kind::Options(
                crm_gateway::routes::bulk::import_options(self.named, header, self.dry_run),
            )),
        }
    }

    fn row(row: pb::ImportRow) -> Self::Request {
        pb::ImportContactsRequest {
            kind: Some(pb::import_contacts_request::Kind::Row(row)),
        }
    }

    fn line(row: &pb::ImportRow) -> i64 {
        row.line
    }

    async fn call(
        channel: tonic::transport::Channel,
        bearer: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
        requests: impl futures::Stream<Item = Self::Request> + Send + 'static,
    ) -> Result<tonic::Streaming<Self::Response>, tonic::Status> {
        Ok(ContactServiceClient::with_interceptor(channel, with_bearer(bearer))
            .import_contacts(requests)
            .await?
            .into_inner())
    }

    fn results(response: &Self::Response) -> Vec<RowResult> {
        response
            .results
            .iter()
            .map(|r| RowResult {
                line: r.line,
                rejected: r.outcome == pb::RowOutcome::Rejected as i32,
                field: r.field.clone(),
                reason: r.reason.clone(),
            })
            .collect()
    }

    fn summary(response: &Self::Response) -> Option<String> {
        let s = response.summary.as_ref()?;
        Some(
            format!(
                "{}{} created, {} updated, {} unchanged, {} rejected",
                if s.dry_run { "dry run: " } else { "" },
                s.created,
                s.updated,
                s.unchanged,
                s.rejected,
            ) + &format!(
                " (matched on {})",
                crm_gateway::routes::bulk::natural_key_name(s.natural_key)
            ),
        )
    }
}

struct Deals {
    dry_run: bool,
}

impl Import for Deals {
    type Schema = crm_gateway::import::deals::DealColumns;
    type Row = deals::ImportDealsRow;
    type Request = deals::ImportDealsRequest;
    type Response = deals::ImportDealsResponse;

    fn options(&self, _: &crm_gateway::import::Header) -> Self::Request {
        deals::ImportDealsRequest {
            kind: Some(deals::import_deals_request::Kind::Options(deals::ImportDealsOptions {
                dry_run: self.dry_run,
            })),
        }
    }

    fn row(row: deals::ImportDealsRow) -> Self::Request {
        deals::ImportDealsRequest {
            kind: Some(deals::import_deals_request::Kind::Row(row)),
        }
    }

    fn line(row: &deals::ImportDealsRow) -> i64 {
        row.line
    }

    async fn call(
        channel: tonic::transport::Channel,
        bearer: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
        requests: impl futures::Stream<Item = Self::Request> + Send + 'static,
    ) -> Result<tonic::Streaming<Self::Response>, tonic::Status> {
        Ok(DealServiceClient::with_interceptor(channel, with_bearer(bearer))
            .import_deals(requests)
            .await?
            .into_inner())
    }

    fn results(response: &Self::Response) -> Vec<RowResult> {
        response
            .results
            .iter()
            .map(|r| RowResult {
                line: r.line,
                rejected: r.outcome == deals::ImportOutcome::Rejected as i32,
                field: r.field.clone(),
                reason: r.reason.clone(),
            })
            .collect()
    }

    fn summary(response: &Self::Response) -> Option<String> {
        let s = response.summary.as_ref()?;
        Some(format!(
            "{}{} created, {} already imported, {} rejected",
            if s.dry_run { "dry run: " } else { "" },
            s.created,
            s.unchanged,
            s.rejected,
        ))
    }
}

pub(crate) async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let format = match &args.format {
        Some(raw) => Format::parse(raw).context("--format must be csv or ndjson")?,
        None => match args.file.extension().and_then(|e| e.to_str()) {
            Some("ndjson" | "jsonl") => Format::Ndjson,
            _ => Format::Csv,
        },
    };
    let records = match args.records {
        Some(records) => records,
        None => Records::sniff(&args.file, format)?,
    };
    match records {
        Records::Contacts => {
            let named = crm_gateway::routes::bulk::natural_key(args.natural_key.as_deref())
                .map_err(|err| anyhow::anyhow!("--natural-key: {}", err.message))?;
            let dry_run = args.dry_run;
            run_import(args, format, Contacts { named, dry_run }).await
        }
        Records::Deals => {
            if args.natural_key.is_some() {
                anyhow::bail!("--natural-key is for contacts: deals and leads are matched on external_id");
            }
            let dry_run = args.dry_run;
            run_import(args, format, Deals { dry_run }).await
        }
    }
}

async fn run_import<I: Import>(args: ImportArgs, format: Format, import: I) -> anyhow::Result<()> {
    let mapping =
        crm_gateway::table::parse_mapping(&args.mapping).map_err(|reason| anyhow::anyhow!("--mapping: {reason}"))?;
    let file = std::fs::File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or_default();
    let read = Arc::new(AtomicU64::new(0));
    let source = Counting {
        inner: file,
        read: Arc::clone(&read),
    };

    let (header_tx, header_rx) = tokio::sync::oneshot::channel();
    let (rows_tx, rows_rx) = tokio::sync::mpsc::channel(512);
    tokio::task::spawn_blocking(move || read_rows::<I::Schema>(source, format, &mapping, header_tx, rows_tx));
    let header = header_rx
        .await
        .context("the file could not be read")?
        .map_err(|reason| anyhow::anyhow!("{}: {reason}", args.file.display()))?;

    // The source text of rows sent and not yet answered, for the rejects file; bounded by
    // the rows in flight.
    let pending: Arc<Mutex<HashMap<i64, String>>> = Arc::default();
    let in_flight = Arc::clone(&pending);
    let first = import.options(&header);
    let rows = tokio_stream::wrappers::ReceiverStream::new(rows_rx).map(move |source| {
        if let Ok(mut pending) = in_flight.lock() {
            pending.insert(I::line(&source.row), source.raw);
        }
        I::row(source.row)
    });
    let requests = futures::stream::iter([first]).chain(rows);

    let channel = tonic::transport::Endpoint::from_shared(args.endpoint.clone())?
        .connect()
        .await
        .with_context(|| format!("cannot reach {}", args.endpoint))?;
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {}", args.token)
        .parse()
        .context("the token is not a valid header value")?;
    let mut responses = I::call(channel, bearer, requests)
        .await
        .map_err(|status| anyhow::anyhow!("import refused: {}", status.message()))?;

    let progress = indicatif::ProgressBar::new(total);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{bar:40}] {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    progress.enable_steady_tick(Duration::from_millis(200));
    let rejects_path = args.rejects.clone().unwrap_or_else(|| {
        let ext = if format == Format::Csv {
            "rejected.csv"
        } else {
            "rejected.ndjson"
        };
        args.file.with_extension(ext)
    });
    let mut rejects = Rejects {
        path: rejects_path,
        format,
        header: header.line,
        file: None,
        count: 0,
    };
    let started = Instant::now();
    let mut done: u64 = 0;
    let mut summary = None;
    loop {
        let message = match responses.message().await {
            Ok(Some(message)) => message,
            Ok(None) => break,
            Err(status) => {
                progress.abandon();
                anyhow::bail!(
                    "import stopped after {done} rows: {}; run the same command again to finish (rows already in are left unchanged)",
                    status.message()
                );
            }
        };
        let results = I::results(&message);
        for result in &results {
            let raw = pending
                .lock()
                .ok()
                .and_then(|mut p| p.remove(&result.line))
                .unwrap_or_default();
            if result.rejected {
                if raw.is_empty() {
                    // A row too large to keep (or the point where the file broke) has no text
                    // to copy: the rejects file stays importable, and the user is told where.
                    progress.suspend(|| {
                        eprintln!(
                            "line {} of {}: {}: {} (not copied to the rejects file)",
                            result.line,
                            args.file.display(),
                            result.field,
                            result.reason
                        );
                    });
                } else {
                    rejects.write(&raw, &result.field, &result.reason)?;
                }
            }
        }
        done += results.len() as u64;
        progress.set_position(read.load(Ordering::Relaxed));
        let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
        progress.set_message(format!("{done} rows, {rate:.0} rows/s"));
        if let Some(line) = I::summary(&message) {
            summary = Some(line);
        }
    }
    progress.finish_and_clear();
    if let Some(file) = rejects.file.as_mut() {
        file.flush()?;
    }
    let summary = summary.context("the import ended without a summary")?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{summary} in {seconds:.1}s ({:.0} rows/s)",
        done as f64 / seconds.max(0.001),
    );
    if rejects.count > 0 {
        println!(
            "rejected rows are in {}: fix them and import that file",
            rejects.path.display()
        );
    }
    Ok(())
}
