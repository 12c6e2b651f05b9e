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
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::app::NotificationApp;
use crate::dispatch::{self, Channel, QueueConfig, chain, retry_time};
use crate::domain::fatigue::{Decision, Recent};
use crate::domain::matching::DIGEST_RULE;
use crate::domain::{DueEmail, EmailState, NewEmail, Recipient, template};
use crate::store::{Claim, Sent, StoreError};

/// The SMTP server email goes through, as a URL: `smtp://host:25` (plain),
/// `smtp://user:password@host:587?tls=required` (STARTTLS), `smtps://user:password@host`
/// (TLS); or `CRM_SMTP_URL_FILE`, a file holding it (how Kubernetes mounts a Secret).
pub const SMTP_URL_ENV: &str = "CRM_SMTP_URL";
/// A PEM file of the certificate authorities the SMTP server's certificate may chain to, besides
/// the public ones (a company's own mail relay): TLS only.
pub const CA_FILE_ENV: &str = "CRM_SMTP_CA_FILE";
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
    /// How long a claim holds an email: the webhooks' lease, and at least twice an attempt's
    /// timeout.
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
            Some(url) => {
                let ca = std::env::var_os(CA_FILE_ENV)
                    .filter(|path| !path.is_empty())
                    .map(|path| {
                        std::fs::read(&path).map_err(|e| format!("{CA_FILE_ENV}: {}: {e}", Path::new(&path).display()))
                    })
                    .transpose()?;
                smtp(url.trim(), ca.as_deref())?
            }
            None => {
                if std::env::var_os(CA_FILE_ENV).is_some_and(|path| !path.is_empty()) {
                    tracing::warn!("{CA_FILE_ENV} is set but {SMTP_URL_ENV} is not: the file is not used");
                }
                match files {
                    Some(dir) => {
                        crm_platform::db::create_private_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                        Transport::Files(dir.to_owned(), AsyncFileTransport::new(dir))
                    }
                    None => Transport::Unconfigured,
                }
            }
        };
        Ok(Self {
            transport,
            from,
            lease: lease.max(TIMEOUT * 2),
        })
    }
}

/// A pooled SMTP transport for `url`, trusting the certificate authorities of the PEM `ca`
/// besides the public ones when given.
pub fn smtp(url: &str, ca: Option<&[u8]>) -> Result<Transport, String> {
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
        // The URL may hold a password: never repeat it.
        .map_err(|e| format!("{SMTP_URL_ENV} is not an SMTP URL such as smtp://host:587?tls=required: {e}"))?;
    if let Some(pem) = ca {
        builder = builder.tls(tls_trusting(url, pem)?);
    }
    Ok(Transport::Smtp(
        builder
            .timeout(Some(TIMEOUT))
            .pool_config(PoolConfig::new().max_size(POOL_SIZE))
            .build(),
    ))
}

/// How a PEM certificate begins.
const CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----";

/// The TLS `url` asks for (as `from_url` reads it), trusting the authorities of `pem` too.
fn tls_trusting(url: &str, pem: &[u8]) -> Result<Tls, String> {
    let url = reqwest::Url::parse(url).map_err(|e| format!("{SMTP_URL_ENV} is not a URL: {e}"))?;
    let host = url.host_str().ok_or_else(|| format!("{SMTP_URL_ENV} names no host"))?;
    let mode = url.query_pairs().find(|(k, _)| k == "tls").map(|(_, v)| v.into_owned());
    let no_certificate = || format!("{CA_FILE_ENV} holds no PEM certificate");
    if !pem.windows(CERTIFICATE.len()).any(|w| w == CERTIFICATE.as_bytes()) {
        return Err(no_certificate());
    }
    let authorities = Certificate::from_pem(pem).map_err(|e| format!("{}: {e}", no_certificate()))?;
    let parameters = TlsParameters::builder(host.trim_start_matches('[').trim_end_matches(']').to_owned())
        .add_root_certificate(authorities)
        .build()
        .map_err(|e| format!("{CA_FILE_ENV}: {e}"))?;
    match (url.scheme(), mode.as_deref()) {
        ("smtps", _) => Ok(Tls::Wrapper(parameters)),
        ("smtp", Some("required")) => Ok(Tls::Required(parameters)),
        ("smtp", Some("opportunistic")) => Ok(Tls::Opportunistic(parameters)),
        _ => Err(format!(
            "{CA_FILE_ENV} is set but {SMTP_URL_ENV} asks for no TLS: use smtps:// or ?tls=required"
        )),
    }
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
        timeout: TIMEOUT,
    };
    let digests = tokio::spawn(release_digests_until(app.clone(), shutdown.clone()));
    dispatch::run(Arc::new(Mailer::new(app, config)), queue, shutdown).await;
    let _ = digests.await;
}

/// How often held emails whose digest is due are looked for.
const DIGEST_POLL: Duration = Duration::from_secs(10);
/// Users whose digests are made in one pass at most.
const DIGESTS_PER_PASS: usize = 100;

/// Makes due digests every [`DIGEST_POLL`] until `shutdown`.
async fn release_digests_until(app: NotificationApp, shutdown: CancellationToken) {
    loop {
        if let Err(e) = release_digests(&app).await {
            tracing::warn!(error = %e, "digests could not be made");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(DIGEST_POLL) => {}
        }
    }
}

/// Makes one digest email for each user whose emails held for a digest or a cap are due: it
/// lists them, is sent like any email (critical: nothing holds it again), and they become
/// digested, in one transaction. Returns how many digests were made.
pub async fn release_digests(app: &NotificationApp) -> Result<usize, StoreError> {
    let now = app.clock().now();
    let mut made = 0;
    for due in app.store().due_digests(now, DIGESTS_PER_PASS).await? {
        let Ok(tenant) = TenantId::parse(&due.tenant) else {
            continue;
        };
        let id = uuid::Uuid::now_v7();
        let digest = NewEmail {
            id,
            rule: DIGEST_RULE,
            contact: None,
            category: "digest".to_owned(),
            critical: true,
            pacing: crate::domain::fatigue::Pacing::default(),
            recipient: Recipient::User(due.user.clone()),
            event_id: format!("digest:{id}"),
            event_type: "digest".to_owned(),
            rendered: Ok(template::digest(&due.held)),
            create_time: now,
        };
        let ids: Vec<uuid::Uuid> = due.held.iter().map(|e| e.id).collect();
        if app.store().bundle_digest(&tenant, &ids, &digest).await? {
            made += 1;
        }
    }
    if made > 0 {
        app.mail_due().notify_one();
    }
    Ok(made)
}

/// Emails decided to be sent and not kept yet, per (tenant, user): (email, rule).
type Unkept = std::collections::HashMap<(String, String), Vec<(uuid::Uuid, uuid::Uuid)>>;

/// The email channel.
struct Mailer {
    app: NotificationApp,
    config: MailConfig,
    /// Emails this worker decided to send whose outcome is not kept yet, per (tenant, user):
    /// each with its rule. A cap counts them beside the sent ones the store counts, so that a
    /// burst claimed together does not pass it. Held across a decision's counts, and by the
    /// keeping of outcomes once they are in the store: an email is always counted once at
    /// least.
    unkept: tokio::sync::Mutex<Unkept>,
}

impl Mailer {
    fn new(app: NotificationApp, config: MailConfig) -> Self {
        Self {
            app,
            config,
            unkept: tokio::sync::Mutex::default(),
        }
    }
}

/// What an attempt came to: the state it leaves the email in and why.
type Outcome = (EmailState, String);

impl Mailer {
    /// Emails sent to `user` (by `rule` alone, when given) since `since`, as the store counts
    /// them; None (nothing kept: attempted again when the claim's lease ends) when it cannot.
    async fn sent(&self, tenant: &TenantId, user: &str, rule: Option<uuid::Uuid>, since: DateTime<Utc>) -> Option<u32> {
        match self.app.store().sent_since(tenant, user, rule, since).await {
            Ok(sent) => Some(u32::try_from(sent).unwrap_or(u32::MAX)),
            Err(e) => {
                tracing::warn!(error = %e, "a user's emails of the last hour could not be counted");
                None
            }
        }
    }

    /// What becomes of `due` to `user`, a cap applying, with the emails of the last hour
    /// counted: the store's, and those this worker decided to send and has not kept. Counted
    /// and decided, and when sent noted, under the lock: attempts side by side see each
    /// other's. None when the store cannot count.
    async fn counted(&self, tenant: &TenantId, user: &str, due: &DueEmail, time: DateTime<Utc>) -> Option<Decision> {
        let hour_ago = time - chrono::Duration::hours(1);
        let mut unkept = self.unkept.lock().await;
        let mut recent = Recent::default();
        if due.fatigue.hourly_email_cap > 0 {
            recent.to_user = self.sent(tenant, user, None, hour_ago).await?;
        }
        if due.pacing.max_emails_per_hour > 0 {
            recent.of_rule = self.sent(tenant, user, Some(due.rule), hour_ago).await?;
        }
        let mine = unkept.entry((due.tenant.clone(), user.to_owned())).or_default();
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        recent.to_user = recent.to_user.saturating_add(count(mine.len()));
        recent.of_rule = recent
            .of_rule
            .saturating_add(count(mine.iter().filter(|(_, rule)| *rule == due.rule).count()));
        let decision = due
            .fatigue
            .decide(&due.category, due.critical, due.pacing, time, recent);
        if decision == Decision::Send {
            mine.push((due.id, due.rule));
        }
        Some(decision)
    }

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

    async fn claim(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Claim<DueEmail, Sent>, StoreError> {
        Ok(Claim::leased(self.app.store().claim_emails(now, lease, limit).await?))
    }

    async fn attempt(&self, due: DueEmail) -> Option<Sent> {
        let tenant = TenantId::parse(&due.tenant).ok()?;
        let time = self.app.clock().now();
        let decision = match &due.user {
            // A user's preferences and the rule's pacing decide first: what they muted, their
            // quiet hours, digest and cap, the rule's digest window and cap (the emails sent in
            // the last hour, to them and by the rule, counted when a cap needs them).
            Some(user) => {
                // Caps are decided last: an email sent, held or refused before them is decided
                // without counting anything.
                let uncounted = due
                    .fatigue
                    .decide(&due.category, due.critical, due.pacing, time, Recent::default());
                let capped = due.fatigue.hourly_email_cap > 0 || due.pacing.max_emails_per_hour > 0;
                if uncounted == Decision::Send && capped && !due.critical {
                    self.counted(&tenant, user, &due, time).await?
                } else {
                    uncounted
                }
            }
            None => Decision::Send,
        };
        let kept = |state, held, error: String, attempt, next_attempt_time| Sent {
            tenant: tenant.clone(),
            email: due.id,
            attempt,
            address: due.address.clone(),
            state,
            held,
            error,
            time,
            next_attempt_time,
        };
        // Held and refused emails made no attempt.
        match decision {
            Decision::Refuse(reason) => return Some(kept(EmailState::Refused, None, reason, due.attempts, None)),
            Decision::Hold { held, until, reason } => {
                ::metrics::counter!("crm_notification_emails_held_total", "why" => held.as_str()).increment(1);
                return Some(kept(EmailState::Held, Some(held), reason, due.attempts, Some(until)));
            }
            Decision::Send => {}
        }
        let number = due.attempts.saturating_add(1);
        // Email reaches a contact only with their consent (their `consent.email`); a contact
        // not known yet (the contact feed is behind) is looked up again on the schedule.
        let to_contact = due.recipient.starts_with("contacts/");
        if to_contact && due.contact_consent == Some(false) {
            return Some(kept(
                EmailState::Refused,
                None,
                format!("{} has not consented to email (consent.email)", due.recipient),
                due.attempts,
                None,
            ));
        }
        let outcome = if to_contact && due.contact_consent.is_none() {
            Err((
                EmailState::Pending,
                format!("{} is not known (yet) from the contact feed", due.recipient),
            ))
        } else if due.address.is_empty() {
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
        Some(kept(state, None, error, number, next_attempt_time))
    }

    async fn keep(&self, done: &[Sent]) -> Result<(), StoreError> {
        let kept = self.app.store().finish_emails(done).await;
        // Kept (or to be attempted again): the store counts them from now on.
        let done: std::collections::HashSet<uuid::Uuid> = done.iter().map(|sent| sent.email).collect();
        let mut unkept = self.unkept.lock().await;
        unkept.retain(|_, emails| {
            emails.retain(|(id, _)| !done.contains(id));
            !emails.is_empty()
        });
        kept
    }

    fn due(&self) -> &Notify {
        self.app.mail_due()
    }

    fn now(&self) -> DateTime<Utc> {
        self.app.clock().now()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::TimeZone;
    use crm_platform::time::{Clock, ManualClock};

    use super::*;

    /// A self-signed certificate authority (its key thrown away): only parsed here.
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBgzCCASmgAwIBAgIUcE1+GPy5obXlpBVN7JfAMpRUi2gwCgYIKoZIzj0EAwIw
FjEUMBIGA1UEAwwLQ1JNIHRlc3QgQ0EwIBcNMjYxMjA2MjMwODM1WhgPMjEyNjEx
MTIyMzA4MzVaMBYxFDASBgNVBAMMC0NSTSB0ZXN0IENBMFkwEwYHKoZIzj0CAQYI
KoZIzj0DAQcDQgAELUata8LzI8VyVWL1o4CyWS3FEFwO8mpEGAW4qpkWEOxJZuHK
FzAn2y35Hz6AjOVI1ZxleyzO0xuLg6AB58ticaNTMFEwHQYDVR0OBBYEFDfAUp54
Kcmn/JbEbw8onMdxnd1yMB8GA1UdIwQYMBaAFDfAUp54Kcmn/JbEbw8onMdxnd1y
MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgRBfkQmpEQQkPfbqM
KX70BV64Yyojd01GxgtNWMND34oCIQCCHwVC0r8LhY7xon+nXyRMiLbKF60Ff7pG
s/GxggEDUA==
-----END CERTIFICATE-----
";

    #[tokio::test]
    async fn a_certificate_authority_is_trusted_for_the_tls_the_url_asks_for_and_refused_without_tls() {
        let mode = |url| tls_trusting(url, TEST_CA.as_bytes()).map(|tls| format!("{tls:?}"));
        assert!(mode("smtps://relay.acme.test").expect("smtps").starts_with("Wrapper"));
        assert!(
            mode("smtp://user:pw@relay.acme.test:587?tls=required")
                .expect("starttls")
                .starts_with("Required")
        );
        assert!(
            mode("smtp://relay.acme.test?tls=opportunistic")
                .expect("opportunistic")
                .starts_with("Opportunistic")
        );
        let plain = mode("smtp://relay.acme.test:25").expect_err("no TLS");
        assert!(plain.contains(CA_FILE_ENV) && plain.contains("no TLS"), "{plain}");
        for garbage in [
            "",
            "not a certificate",
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        ] {
            let refused = tls_trusting("smtps://relay.acme.test", garbage.as_bytes()).expect_err(garbage);
            assert!(refused.starts_with(CA_FILE_ENV), "{refused}");
        }
        assert!(smtp("smtps://relay.acme.test", Some(TEST_CA.as_bytes())).is_ok());
    }
    use crate::domain::fatigue::Fatigue;
    use crate::domain::matching::Matched;
    use crate::domain::template::Rendered;
    use crate::domain::{Preferences, Recipient};

    /// Works what is due once: the states it left.
    async fn work(mailer: &Mailer) -> Vec<EmailState> {
        dispatch::work_once(mailer).await.into_iter().map(|s| s.state).collect()
    }

    #[tokio::test]
    async fn a_digest_users_emails_are_held_then_sent_as_one_at_their_digest_time() {
        let (dir, store) = crate::store::sqlite_for_test().await;
        let clock = Arc::new(ManualClock::at(
            Utc.with_ymd_and_hms(2026, 12, 6, 9, 0, 0).single().expect("time"),
        ));
        let app = NotificationApp::with_clock(Arc::clone(&store), Arc::clone(&clock) as _);
        let acme = TenantId::parse("acme").expect("tenant");
        let erin = Preferences {
            email_address: "erin@acme.test".into(),
            fatigue: Fatigue {
                daily_digest: true,
                digest_time: chrono::NaiveTime::from_hms_opt(10, 0, 0).expect("time"),
                ..Fatigue::default()
            },
            update_time: None,
        };
        store.set_preferences(&acme, "erin", &erin).await.expect("preferences");
        let email = |event: &str, subject: &str| NewEmail {
            id: uuid::Uuid::now_v7(),
            rule: uuid::Uuid::now_v7(),
            contact: None,
            category: "deals".into(),
            critical: false,
            pacing: crate::domain::fatigue::Pacing::default(),
            recipient: Recipient::User("erin".into()),
            event_id: event.into(),
            event_type: "crm.pipeline.v1.DealWon".into(),
            rendered: Ok(Rendered {
                subject: subject.into(),
                text: "text".into(),
                html: "<p>html</p>".into(),
            }),
            create_time: clock.now(),
        };
        let matched = Matched {
            emails: vec![email("e1", "Won: Initech"), email("e2", "Won: Globex")],
            ..Matched::default()
        };
        assert!(
            store
                .record("c", 0, 1, &[(acme.clone(), matched)])
                .await
                .expect("record")
        );
        let files = dir.path().join("mail");
        let config = MailConfig {
            transport: Transport::Files(files.clone(), AsyncFileTransport::new(&files)),
            from: DEFAULT_FROM.parse().expect("from"),
            lease: Duration::from_secs(60),
        };
        std::fs::create_dir_all(&files).expect("mail dir");
        let mailer = Mailer::new(app.clone(), config);
        assert_eq!(work(&mailer).await, [EmailState::Held, EmailState::Held]);
        assert_eq!(release_digests(&app).await.expect("digests"), 0, "not 10:00 yet");
        clock.advance(chrono::Duration::hours(1));
        assert_eq!(release_digests(&app).await.expect("digests"), 1);
        assert_eq!(release_digests(&app).await.expect("digests"), 0, "once");
        assert_eq!(
            work(&mailer).await,
            [EmailState::Sent],
            "the digest bypasses the digest"
        );
        let listed = store.emails(&acme, None, 10).await.expect("list");
        let digest = listed.iter().find(|e| e.state == EmailState::Sent).expect("digest");
        assert_eq!(digest.subject, "2 notifications held for you");
        assert_eq!(digest.recipient, "users/erin");
        assert!(
            listed
                .iter()
                .filter(|e| e.id != digest.id)
                .all(|e| e.state == EmailState::Digested && e.digest == Some(digest.id))
        );
        let written: Vec<_> = std::fs::read_dir(&files).expect("files").collect();
        assert_eq!(written.len(), 1);
        let mail = std::fs::read_to_string(written[0].as_ref().expect("entry").path()).expect("read");
        assert!(mail.contains("Won: Initech") && mail.contains("Won: Globex"), "{mail}");
    }
}
