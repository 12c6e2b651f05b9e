//! Email delivery, a [`Channel`] of the [`dispatch`] worker: each due email goes to an SMTP
//! server through a pool of connections (plain, STARTTLS or TLS, as the server's URL says),
//! or, in `crm serve` without a server, into a directory of `.eml` files a newcomer can open.
//! A server's temporary refusal, a dropped connection or a timeout is retried on the webhook
//! schedule; a permanent refusal (5xx) fails the email with the server's answer; an email with
//! no address is refused with the reason. Every outcome is kept on the email.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crm_platform::TenantId;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::app::NotificationApp;
use crate::dispatch::{self, Channel, QueueConfig, chain, retry_time};
use crate::domain::{DueEmail, EmailState};
use crate::store::{Sent, StoreError};

/// The SMTP server email goes through, as a URL: `smtp://host:25` (plain),
/// `smtp://user:password@host:587?tls=required` (STARTTLS), `smtps://user:password@host`
/// (TLS); or `CRM_SMTP_URL_FILE`, a file holding it (how Kubernetes mounts a Secret).
pub const SMTP_URL_ENV: &str = "CRM_SMTP_URL";
/// The sender of every email (default `CRM <crm@localhost>`).
pub const FROM_ENV: &str = "CRM_EMAIL_FROM";
/// The default sender.
const DEFAULT_FROM: &str = "CRM <crm@localhost>";
/// How long one SMTP attempt may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// SMTP connections kept at most.
const POOL_SIZE: u32 = 8;

/// Where email goes.
#[derive(Clone)]
pub enum Transport {
    /// An SMTP server, through a pool of connections.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// `.eml` files in a directory (`crm serve` without a server).
    Files(PathBuf, AsyncFileTransport<Tokio1Executor>),
    /// Nowhere: every attempt fails with the reason, and is retried on the schedule, until an
    /// operator configures a server.
    Unconfigured,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Smtp(_) => f.write_str("Smtp"),
            Transport::Files(dir, _) => write!(f, "Files({})", dir.display()),
            Transport::Unconfigured => f.write_str("Unconfigured"),
        }
    }
}

/// How email is sent.
#[derive(Debug, Clone)]
pub struct MailConfig {
    pub transport: Transport,
    pub from: Mailbox,
    /// How long a claim holds an email.
    pub lease: Duration,
}

impl MailConfig {
    /// From [`SMTP_URL_ENV`] (or its `_FILE`) and [`FROM_ENV`]; without a server, email is written under
    /// `files` when given (`crm serve`), else not sent (a Kubernetes role without SMTP).
    pub fn from_env(files: Option<&Path>, lease: Duration) -> Result<Self, String> {
        let from = std::env::var(FROM_ENV).unwrap_or_else(|_| DEFAULT_FROM.to_owned());
        let from: Mailbox = from
            .parse()
            .map_err(|e| format!("{FROM_ENV}: `{from}` is not a sender such as `CRM <crm@example.com>`: {e}"))?;
        let value = std::env::var(SMTP_URL_ENV).ok().filter(|v| !v.trim().is_empty());
        let file = std::env::var_os(format!("{SMTP_URL_ENV}_FILE")).map(PathBuf::from);
        let url = crm_platform::config::value_or_file(value.as_deref(), file.as_deref(), SMTP_URL_ENV)
            .map_err(|e| e.0)?
            .filter(|url| !url.trim().is_empty());
        let transport = match url {
            Some(url) => smtp(url.trim())?,
            None => match files {
                Some(dir) => {
                    crm_platform::db::create_private_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                    Transport::Files(dir.to_owned(), AsyncFileTransport::new(dir))
                }
                None => Transport::Unconfigured,
            },
        };
        Ok(Self { transport, from, lease })
    }
}

/// A pooled SMTP transport for `url`.
pub fn smtp(url: &str) -> Result<Transport, String> {
    let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
        // The URL may hold a password: never repeat it.
        .map_err(|e| format!("{SMTP_URL_ENV} is not an SMTP URL such as smtp://host:587?tls=required: {e}"))?;
    Ok(Transport::Smtp(
        builder
            .timeout(Some(TIMEOUT))
            .pool_config(PoolConfig::new().max_size(POOL_SIZE))
            .build(),
    ))
}

/// Sends email until `shutdown` (see [`dispatch::run`]).
pub async fn run(app: NotificationApp, config: MailConfig, shutdown: CancellationToken) {
    match &config.transport {
        Transport::Unconfigured => {
            tracing::warn!("{SMTP_URL_ENV} is not set: emails wait, retried, until a mail server is configured");
        }
        Transport::Files(dir, _) => tracing::info!(dir = %dir.display(), "no mail server: emails are written to files"),
        Transport::Smtp(_) => {}
    }
    let queue = QueueConfig {
        lease: config.lease,
        batch: 64,
        concurrency: POOL_SIZE as usize,
    };
    dispatch::run(Arc::new(Mailer { app, config }), queue, shutdown).await;
}

/// The email channel.
struct Mailer {
    app: NotificationApp,
    config: MailConfig,
}

/// What an attempt came to: the state it leaves the email in and why.
type Outcome = (EmailState, String);

impl Mailer {
    /// Sends `due` to `address`.
    async fn send(&self, due: &DueEmail) -> Result<(), Outcome> {
        let to: Mailbox = due
            .address
            .parse()
            .map_err(|e| (EmailState::Failed, format!("`{}` is not an address: {e}", due.address)))?;
        let message = Message::builder()
            .from(self.config.from.clone())
            .to(to)
            .subject(due.rendered.subject.clone())
            // The same id at every attempt: a receiver's duplicate filter sees one email.
            .message_id(Some(format!("<{}@crm-notification>", due.id)))
            .multipart(MultiPart::alternative_plain_html(
                due.rendered.text.clone(),
                due.rendered.html.clone(),
            ))
            .map_err(|e| (EmailState::Failed, format!("the email cannot be built: {e}")))?;
        let sent = match &self.config.transport {
            Transport::Smtp(smtp) => match tokio::time::timeout(TIMEOUT, smtp.send(message)).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) if e.is_permanent() => return Err((EmailState::Failed, chain(&e))),
                Ok(Err(e)) => Err(chain(&e)),
                Err(_) => Err(format!("no answer within {TIMEOUT:?}")),
            },
            Transport::Files(_, files) => files.send(message).await.map(|_| ()).map_err(|e| chain(&e)),
            Transport::Unconfigured => Err(format!("no mail server is configured ({SMTP_URL_ENV})")),
        };
        sent.map_err(|reason| (EmailState::Pending, reason))
    }
}

#[async_trait]
impl Channel for Mailer {
    type Due = DueEmail;
    type Done = Sent;

    fn name(&self) -> &'static str {
        "email"
    }

    async fn claim(&self, now: DateTime<Utc>, lease: Duration, limit: usize) -> Result<Vec<DueEmail>, StoreError> {
        self.app.store().claim_emails(now, lease, limit).await
    }

    async fn attempt(&self, due: DueEmail) -> Option<Sent> {
        let number = due.attempts.saturating_add(1);
        let time = self.app.clock().now();
        let outcome = if due.address.is_empty() {
            Err((
                EmailState::Refused,
                format!(
                    "{} has no email address: set one in its notificationPreferences",
                    due.recipient
                ),
            ))
        } else {
            self.send(&due).await
        };
        let (state, error, next_attempt_time) = match outcome {
            Ok(()) => (EmailState::Sent, String::new(), None),
            Err((EmailState::Pending, reason)) => match retry_time(number, self.app.clock().now()) {
                Some(next) => (EmailState::Pending, reason, Some(next)),
                None => (EmailState::Failed, reason, None),
            },
            Err((state, reason)) => (state, reason, None),
        };
        if !error.is_empty() {
            tracing::info!(email = %due.id, attempt = number, state = state.as_str(), reason = %error, "an email was not sent");
        }
        ::metrics::counter!("crm_notification_email_attempts_total", "outcome" => state.as_str()).increment(1);
        Some(Sent {
            tenant: TenantId::parse(&due.tenant).ok()?,
            email: due.id,
            attempt: number,
            address: due.address,
            state,
            error,
            time,
            next_attempt_time,
        })
    }

    async fn keep(&self, done: &[Sent]) -> Result<(), StoreError> {
        self.app.store().finish_emails(done).await
    }

    fn due(&self) -> &Notify {
        self.app.mail_due()
    }

    fn now(&self) -> DateTime<Utc> {
        self.app.clock().now()
    }
}
