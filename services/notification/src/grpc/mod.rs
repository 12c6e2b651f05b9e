//! The gRPC servers of crm.notification.v1: convert at the edge and delegate to
//! [`NotificationApp`] (the auth layer has authenticated the caller).

use crm_platform::ApiError;
use crm_platform::identity::principal;
use crm_platform::paging::PageRequest;
use crm_platform::time::timestamp;
use crm_proto::crm::notification::v1 as pb;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::app::emails::{PreferencesSpec, preferences_name, preferences_user};
use crate::app::endpoints::EndpointSpec;
use crate::app::rules::{RuleSpec, Sample};
use crate::app::{NotificationApp, Watched};
use crate::domain::{
    Attempt, Channel, Delivery, DeliveryId, DeliveryState, Email, EmailId, EmailState, EmailTemplate, Endpoint,
    EndpointId, Notification, NotificationId, Preferences, Recipient, Rule, RuleId,
};
use crate::store::View;

pub use pb::delivery_service_server::DeliveryServiceServer;
pub use pb::inbox_service_server::InboxServiceServer;
pub use pb::preference_service_server::PreferenceServiceServer;
pub use pb::rule_service_server::RuleServiceServer;
pub use pb::webhook_endpoint_service_server::WebhookEndpointServiceServer;

/// The fully qualified names clients and health checks use.
pub const SERVICE_NAMES: &[&str] = &[
    "crm.notification.v1.WebhookEndpointService",
    "crm.notification.v1.RuleService",
    "crm.notification.v1.DeliveryService",
    "crm.notification.v1.InboxService",
    "crm.notification.v1.PreferenceService",
];

/// Implements every generated service trait of crm.notification.v1.
#[derive(Clone)]
pub struct NotificationGrpc {
    app: NotificationApp,
}

impl NotificationGrpc {
    pub fn new(app: NotificationApp) -> Self {
        Self { app }
    }
}

fn endpoint(e: Endpoint) -> pb::WebhookEndpoint {
    pb::WebhookEndpoint {
        name: EndpointId(e.id).name(),
        url: e.url,
        event_types: e.event_types,
        description: e.description,
        secret: e.secret,
        create_time: Some(timestamp(e.create_time)),
        previous_secret: e.previous_secret,
        previous_secret_expire_time: e.previous_until.map(timestamp),
        max_per_second: i32::try_from(e.max_per_second).unwrap_or(i32::MAX),
        created_by: e.created_by,
        failing_since: e.failing_since.map(timestamp),
        disable_time: e.disable_time.map(timestamp),
        disable_reason: e.disable_reason,
    }
}

fn rule(r: Rule) -> pb::Rule {
    pb::Rule {
        name: RuleId(r.id).name(),
        display_name: r.display_name,
        event_types: r.event_types,
        condition: r.condition,
        recipients: r.recipients.iter().map(Recipient::name).collect(),
        created_by: r.created_by,
        create_time: Some(timestamp(r.create_time)),
        channels: r.channels.iter().copied().map(channel_to).collect(),
        email_template: Some(pb::EmailTemplate {
            subject: r.email_template.subject,
            text: r.email_template.text,
            html: r.email_template.html,
        }),
        category: r.category,
        critical: r.critical,
        digest_window_minutes: i32::try_from(r.pacing.digest_window_minutes).unwrap_or(i32::MAX),
        max_emails_per_hour: i32::try_from(r.pacing.max_emails_per_hour).unwrap_or(i32::MAX),
    }
}

fn channel_of(raw: i32) -> Option<Channel> {
    match pb::Channel::try_from(raw) {
        Ok(pb::Channel::InApp) => Some(Channel::InApp),
        Ok(pb::Channel::Email) => Some(Channel::Email),
        _ => None,
    }
}

fn channel_to(c: Channel) -> i32 {
    match c {
        Channel::InApp => pb::Channel::InApp as i32,
        Channel::Email => pb::Channel::Email as i32,
    }
}

/// What a request's rule asks for, checked by the service (after the caller's role).
fn rule_spec(r: pb::Rule) -> RuleSpec {
    let template = r.email_template.unwrap_or_default();
    RuleSpec {
        display_name: r.display_name,
        event_types: r.event_types,
        condition: r.condition,
        recipients: r.recipients,
        channels: r.channels.into_iter().map(channel_of).collect(),
        email_template: EmailTemplate {
            subject: template.subject,
            text: template.text,
            html: template.html,
        },
        category: r.category,
        critical: r.critical,
        digest_window_minutes: r.digest_window_minutes,
        max_emails_per_hour: r.max_emails_per_hour,
    }
}

fn email(e: Email) -> pb::Email {
    let state = match e.state {
        EmailState::Pending => pb::EmailState::Pending,
        EmailState::Sent => pb::EmailState::Sent,
        EmailState::Failed => pb::EmailState::Failed,
        EmailState::Refused => pb::EmailState::Refused,
        EmailState::Held => pb::EmailState::Held,
        EmailState::Digested => pb::EmailState::Digested,
    };
    pb::Email {
        name: EmailId(e.id).name(),
        rule: RuleId(e.rule).name(),
        recipient: e.recipient,
        address: e.address,
        event_id: e.event_id,
        event_type: e.event_type,
        subject: e.subject,
        state: state as i32,
        attempts: e.attempts,
        last_error: e.last_error,
        next_attempt_time: e.next_attempt_time.map(timestamp),
        create_time: Some(timestamp(e.create_time)),
        send_time: e.send_time.map(timestamp),
        digest: e.digest.map(|d| EmailId(d).name()).unwrap_or_default(),
    }
}

fn preferences(user: &str, p: Preferences) -> pb::NotificationPreferences {
    pb::NotificationPreferences {
        name: preferences_name(user),
        email_address: p.email_address,
        update_time: p.update_time.map(timestamp),
        time_zone: p.fatigue.time_zone.name().to_owned(),
        quiet_hours: p.fatigue.quiet_hours.map(|q| pb::QuietHours {
            start: q.start.format("%H:%M").to_string(),
            end: q.end.format("%H:%M").to_string(),
        }),
        daily_digest: p.fatigue.daily_digest,
        digest_time: p.fatigue.digest_time.format("%H:%M").to_string(),
        muted: p
            .fatigue
            .muted
            .into_iter()
            .map(|m| pb::Mute {
                category: m.category,
                channel: channel_to(m.channel),
            })
            .collect(),
        hourly_email_cap: i32::try_from(p.fatigue.hourly_email_cap).unwrap_or(i32::MAX),
    }
}

fn delivery(d: Delivery) -> pb::Delivery {
    let state = match d.state {
        DeliveryState::Pending => pb::DeliveryState::Pending,
        DeliveryState::Delivered => pb::DeliveryState::Delivered,
        DeliveryState::Failed => pb::DeliveryState::Failed,
    };
    pb::Delivery {
        name: DeliveryId(d.id).name(),
        rule: RuleId(d.rule).name(),
        webhook_endpoint: EndpointId(d.endpoint).name(),
        event_id: d.event_id,
        event_type: d.event_type,
        state: state as i32,
        attempts: d.attempts,
        next_attempt_time: d.next_attempt_time.map(timestamp),
        create_time: Some(timestamp(d.create_time)),
    }
}

fn attempt(a: Attempt) -> pb::DeliveryAttempt {
    pb::DeliveryAttempt {
        attempt: a.attempt,
        time: Some(timestamp(a.time)),
        status_code: a.status_code,
        error: a.error,
        latency_ms: a.latency_ms,
        response_head: a.response_head,
    }
}

fn notification(n: Notification) -> pb::Notification {
    pb::Notification {
        name: NotificationId(n.id).name(),
        rule: RuleId(n.rule).name(),
        event_type: n.event_type,
        subject: n.subject,
        title: n.title,
        read: n.read,
        create_time: Some(timestamp(n.create_time)),
        seen: n.seen,
        archived: n.archived,
    }
}

fn page(size: i32, token: &str, shape: &[&str]) -> Result<PageRequest<Uuid>, ApiError> {
    PageRequest::parse(size, token, shape)
}

/// The id `parse` reads from the request's `field`, or a 400 naming it.
fn id_in<T>(field: &str, name: &str, parse: fn(&str) -> Result<T, String>) -> Result<T, ApiError> {
    crm_platform::error::parse_field(field, parse(name))
}

#[tonic::async_trait]
impl pb::webhook_endpoint_service_server::WebhookEndpointService for NotificationGrpc {
    async fn create_webhook_endpoint(
        &self,
        request: Request<pb::CreateWebhookEndpointRequest>,
    ) -> Result<Response<pb::CreateWebhookEndpointResponse>, Status> {
        let who = principal(&request)?;
        let Some(e) = request.into_inner().webhook_endpoint else {
            return Err(ApiError::invalid_field("webhook_endpoint", "is required").into());
        };
        let spec = EndpointSpec {
            url: e.url,
            event_types: e.event_types,
            description: e.description,
            max_per_second: e.max_per_second,
        };
        let created = self.app.create_endpoint(&who, spec).await?;
        Ok(Response::new(pb::CreateWebhookEndpointResponse {
            webhook_endpoint: Some(endpoint(created)),
        }))
    }

    async fn get_webhook_endpoint(
        &self,
        request: Request<pb::GetWebhookEndpointRequest>,
    ) -> Result<Response<pb::GetWebhookEndpointResponse>, Status> {
        let who = principal(&request)?;
        let id = id_in("name", &request.get_ref().name, EndpointId::parse_name)?.0;
        let found = self.app.endpoint(&who, id).await?;
        Ok(Response::new(pb::GetWebhookEndpointResponse {
            webhook_endpoint: Some(endpoint(found)),
        }))
    }

    async fn list_webhook_endpoints(
        &self,
        request: Request<pb::ListWebhookEndpointsRequest>,
    ) -> Result<Response<pb::ListWebhookEndpointsResponse>, Status> {
        let who = principal(&request)?;
        let r = request.get_ref();
        let listed = self
            .app
            .endpoints(&who, &page(r.page_size, &r.page_token, &[EndpointId::COLLECTION])?)
            .await?;
        Ok(Response::new(pb::ListWebhookEndpointsResponse {
            webhook_endpoints: listed.items.into_iter().map(endpoint).collect(),
            next_page_token: listed.next_page_token,
        }))
    }

    async fn rotate_webhook_endpoint_secret(
        &self,
        request: Request<pb::RotateWebhookEndpointSecretRequest>,
    ) -> Result<Response<pb::RotateWebhookEndpointSecretResponse>, Status> {
        let who = principal(&request)?;
        let r = request.get_ref();
        let id = id_in("name", &r.name, EndpointId::parse_name)?.0;
        let rotated = self.app.rotate_secret(&who, id, r.overlap_seconds).await?;
        Ok(Response::new(pb::RotateWebhookEndpointSecretResponse {
            webhook_endpoint: Some(endpoint(rotated)),
        }))
    }

    async fn enable_webhook_endpoint(
        &self,
        request: Request<pb::EnableWebhookEndpointRequest>,
    ) -> Result<Response<pb::EnableWebhookEndpointResponse>, Status> {
        let who = principal(&request)?;
        let id = id_in("name", &request.get_ref().name, EndpointId::parse_name)?.0;
        let enabled = self.app.enable_endpoint(&who, id).await?;
        Ok(Response::new(pb::EnableWebhookEndpointResponse {
            webhook_endpoint: Some(endpoint(enabled)),
        }))
    }

    async fn redeliver_webhook_endpoint_deliveries(
        &self,
        request: Request<pb::RedeliverWebhookEndpointDeliveriesRequest>,
    ) -> Result<Response<pb::RedeliverWebhookEndpointDeliveriesResponse>, Status> {
        let who = principal(&request)?;
        let r = request.get_ref();
        let id = id_in("name", &r.name, EndpointId::parse_name)?.0;
        let since = r
            .since
            .as_ref()
            .map(|t| crm_platform::time::from_timestamp(t).map_err(|reason| ApiError::invalid_field("since", reason)))
            .transpose()?;
        let (again, since) = self.app.redeliver_since(&who, id, since).await?;
        Ok(Response::new(pb::RedeliverWebhookEndpointDeliveriesResponse {
            redelivered: i64::try_from(again).unwrap_or(i64::MAX),
            since: Some(timestamp(since)),
        }))
    }

    async fn delete_webhook_endpoint(
        &self,
        request: Request<pb::DeleteWebhookEndpointRequest>,
    ) -> Result<Response<pb::DeleteWebhookEndpointResponse>, Status> {
        let who = principal(&request)?;
        let id = id_in("name", &request.get_ref().name, EndpointId::parse_name)?.0;
        self.app.delete_endpoint(&who, id).await?;
        Ok(Response::new(pb::DeleteWebhookEndpointResponse {}))
    }
}

#[tonic::async_trait]
impl pb::rule_service_server::RuleService for NotificationGrpc {
    async fn create_rule(
        &self,
        request: Request<pb::CreateRuleRequest>,
    ) -> Result<Response<pb::CreateRuleResponse>, Status> {
        let who = principal(&request)?;
        let Some(r) = request.into_inner().rule else {
            return Err(ApiError::invalid_field("rule", "is required").into());
        };
        let created = self.app.create_rule(&who, rule_spec(r)).await?;
        Ok(Response::new(pb::CreateRuleResponse {
            rule: Some(rule(created)),
        }))
    }

    async fn get_rule(&self, request: Request<pb::GetRuleRequest>) -> Result<Response<pb::GetRuleResponse>, Status> {
        let who = principal(&request)?;
        let id = id_in("name", &request.get_ref().name, RuleId::parse_name)?.0;
        let found = self.app.rule(&who, id).await?;
        Ok(Response::new(pb::GetRuleResponse {
            rule: Some(rule(found)),
        }))
    }

    async fn list_rules(
        &self,
        request: Request<pb::ListRulesRequest>,
    ) -> Result<Response<pb::ListRulesResponse>, Status> {
        let who = principal(&request)?;
        let r = request.get_ref();
        let listed = self
            .app
            .rules(&who, &page(r.page_size, &r.page_token, &[RuleId::COLLECTION])?)
            .await?;
        Ok(Response::new(pb::ListRulesResponse {
            rules: listed.items.into_iter().map(rule).collect(),
            next_page_token: listed.next_page_token,
        }))
    }

    async fn delete_rule(
        &self,
        request: Request<pb::DeleteRuleRequest>,
    ) -> Result<Response<pb::DeleteRuleResponse>, Status> {
        let who = principal(&request)?;
        let id = id_in("name", &request.get_ref().name, RuleId::parse_name)?.0;
        self.app.delete_rule(&who, id).await?;
        Ok(Response::new(pb::DeleteRuleResponse {}))
    }

    async fn backtest_rule(
        &self,
        request: Request<pb::BacktestRuleRequest>,
    ) -> Result<Response<pb::BacktestRuleResponse>, Status> {
        let who = principal(&request)?;
        let credentials = crm_platform::identity::credentials(&request);
        let r = request.into_inner();
        let Some(draft) = r.rule else {
            return Err(ApiError::invalid_field("rule", "is required").into());
        };
        let result = self.app.backtest(&who, &credentials, rule_spec(draft), r.days).await?;
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        Ok(Response::new(pb::BacktestRuleResponse {
            since: result.since.map(timestamp),
            events: count(result.events),
            matched_events: count(result.matched),
            webhooks: count(result.webhooks),
            emails: count(result.emails),
            notifications: count(result.notifications),
            recipients: result
                .recipients
                .into_iter()
                .map(|(recipient, n)| pb::BacktestRecipient {
                    recipient,
                    count: count(n),
                })
                .collect(),
            samples: result
                .samples
                .into_iter()
                .map(|s| pb::BacktestSample {
                    event_id: s.event_id,
                    event_type: s.event_type,
                    subject: s.subject,
                    time: s.time.map(timestamp),
                    recipients: s.recipients,
                })
                .collect(),
            truncated: result.truncated,
        }))
    }

    async fn preview_rule_email(
        &self,
        request: Request<pb::PreviewRuleEmailRequest>,
    ) -> Result<Response<pb::PreviewRuleEmailResponse>, Status> {
        let who = principal(&request)?;
        let r = request.into_inner();
        let Some(draft) = r.rule else {
            return Err(ApiError::invalid_field("rule", "is required").into());
        };
        let sample = Sample {
            event_type: r.sample_event_type,
            payload: r.sample_payload,
        };
        let rendered = self.app.preview_email(&who, rule_spec(draft), sample).await?;
        Ok(Response::new(pb::PreviewRuleEmailResponse {
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
        }))
    }
}

#[tonic::async_trait]
impl pb::preference_service_server::PreferenceService for NotificationGrpc {
    async fn get_notification_preferences(
        &self,
        request: Request<pb::GetNotificationPreferencesRequest>,
    ) -> Result<Response<pb::GetNotificationPreferencesResponse>, Status> {
        let who = principal(&request)?;
        let user = preferences_user(&who, &request.get_ref().name)?;
        let found = self.app.preferences(&who, &user).await?;
        Ok(Response::new(pb::GetNotificationPreferencesResponse {
            notification_preferences: Some(preferences(&user, found)),
        }))
    }

    async fn update_notification_preferences(
        &self,
        request: Request<pb::UpdateNotificationPreferencesRequest>,
    ) -> Result<Response<pb::UpdateNotificationPreferencesResponse>, Status> {
        let who = principal(&request)?;
        let Some(p) = request.into_inner().notification_preferences else {
            return Err(ApiError::invalid_field("notification_preferences", "is required").into());
        };
        let user = preferences_user(&who, &p.name).map_err(|_| {
            ApiError::invalid_field(
                "notification_preferences.name",
                "must be `users/{user}/notificationPreferences`",
            )
        })?;
        let asked = PreferencesSpec {
            email_address: p.email_address,
            time_zone: p.time_zone,
            quiet_hours: p.quiet_hours.map(|q| (q.start, q.end)),
            daily_digest: p.daily_digest,
            digest_time: p.digest_time,
            muted: p
                .muted
                .into_iter()
                .map(|m| (m.category, channel_of(m.channel)))
                .collect(),
            hourly_email_cap: p.hourly_email_cap,
        };
        let kept = self.app.set_preferences(&who, &user, asked).await?;
        Ok(Response::new(pb::UpdateNotificationPreferencesResponse {
            notification_preferences: Some(preferences(&user, kept)),
        }))
    }
}

#[tonic::async_trait]
impl pb::delivery_service_server::DeliveryService for NotificationGrpc {
    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        let who = principal(&request)?;
        let r = request.get_ref();
        let listed = self
            .app
            .deliveries(&who, &page(r.page_size, &r.page_token, &[DeliveryId::COLLECTION])?)
            .await?;
        Ok(Response::new(pb::ListDeliveriesResponse {
            deliveries: listed.items.into_iter().map(delivery).collect(),
            next_page_token: listed.next_page_token,
        }))
    }

    async fn list_delivery_attempts(
        &self,
        request: Request<pb::ListDeliveryAttemptsRequest>,
    ) -> Result<Response<pb::ListDeliveryAttemptsResponse>, Status> {
        let who = principal(&request)?;
        let id = id_in("parent", &request.get_ref().parent, DeliveryId::parse_name)?.0;
        let attempts = self.app.attempts(&who, id).await?;
        Ok(Response::new(pb::ListDeliveryAttemptsResponse {
            attempts: attempts.into_iter().map(attempt).collect(),
        }))
    }

    async fn list_emails(
        &self,
        request: Request<pb::ListEmailsRequest>,
    ) -> Result<Response<pb::ListEmailsResponse>, Status> {
        let who = principal(&request)?;
        let r = request.get_ref();
        let listed = self
            .app
            .emails(&who, &page(r.page_size, &r.page_token, &[EmailId::COLLECTION])?)
            .await?;
        Ok(Response::new(pb::ListEmailsResponse {
            emails: listed.items.into_iter().map(email).collect(),
            next_page_token: listed.next_page_token,
        }))
    }

    async fn redeliver_delivery(
        &self,
        request: Request<pb::RedeliverDeliveryRequest>,
    ) -> Result<Response<pb::RedeliverDeliveryResponse>, Status> {
        let who = principal(&request)?;
        let id = id_in("name", &request.get_ref().name, DeliveryId::parse_name)?.0;
        let again = self.app.redeliver(&who, id).await?;
        Ok(Response::new(pb::RedeliverDeliveryResponse {
            delivery: Some(delivery(again)),
        }))
    }
}

#[tonic::async_trait]
impl pb::inbox_service_server::InboxService for NotificationGrpc {
    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let who = principal(&request)?;
        let r = request.get_ref();
        let (view, shape) = match (r.archived, r.unread_only) {
            (true, _) => (View::Archived, "archived"),
            (false, true) => (View::Unread, "unread"),
            (false, false) => (View::Inbox, "all"),
        };
        let listed = self
            .app
            .inbox(
                &who,
                view,
                &page(r.page_size, &r.page_token, &[NotificationId::COLLECTION, shape])?,
            )
            .await?;
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications: listed.items.into_iter().map(notification).collect(),
            next_page_token: listed.next_page_token,
        }))
    }

    async fn get_unread_count(
        &self,
        request: Request<pb::GetUnreadCountRequest>,
    ) -> Result<Response<pb::GetUnreadCountResponse>, Status> {
        let who = principal(&request)?;
        let counts = self.app.counts(&who).await?;
        Ok(Response::new(pb::GetUnreadCountResponse {
            unread: counts.unread,
            unseen: counts.unseen,
        }))
    }

    async fn mark_notifications_seen(
        &self,
        request: Request<pb::MarkNotificationsSeenRequest>,
    ) -> Result<Response<pb::MarkNotificationsSeenResponse>, Status> {
        let who = principal(&request)?;
        let marked = self.app.mark_seen(&who).await?;
        Ok(Response::new(pb::MarkNotificationsSeenResponse { marked }))
    }

    async fn archive_notifications(
        &self,
        request: Request<pb::ArchiveNotificationsRequest>,
    ) -> Result<Response<pb::ArchiveNotificationsResponse>, Status> {
        let who = principal(&request)?;
        let archived = self.app.archive(&who, &request.get_ref().names).await?;
        Ok(Response::new(pb::ArchiveNotificationsResponse { archived }))
    }

    type WatchNotificationsStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::WatchNotificationsResponse, Status>> + Send>>;

    async fn watch_notifications(
        &self,
        request: Request<pb::WatchNotificationsRequest>,
    ) -> Result<Response<Self::WatchNotificationsStream>, Status> {
        use futures::StreamExt;
        let who = principal(&request)?;
        let until = crm_platform::identity::token_expiry(&request);
        let watched = self.app.watch(&who, until).await?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(watched).map(|item| {
            let kind = match item.map_err(Status::from)? {
                Watched::Notification(n) => pb::watch_notifications_response::Kind::Notification(notification(n)),
                Watched::Counts(c) => pb::watch_notifications_response::Kind::Counts(pb::InboxCounts {
                    unread: c.unread,
                    unseen: c.unseen,
                }),
            };
            Ok(pb::WatchNotificationsResponse { kind: Some(kind) })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn mark_notifications_read(
        &self,
        request: Request<pb::MarkNotificationsReadRequest>,
    ) -> Result<Response<pb::MarkNotificationsReadResponse>, Status> {
        let who = principal(&request)?;
        let marked = self.app.mark_read(&who, &request.get_ref().names).await?;
        Ok(Response::new(pb::MarkNotificationsReadResponse { marked }))
    }
}
