//! The scheduler that publishes TaskDue when a task's due time comes: it sleeps until the
//! next due time (or until a task changes), publishes what is owed, and looks again at least
//! every second, so due times set by other replicas or before a restart are honoured too.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::PipelineApp;

/// The longest the scheduler sleeps without looking.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Runs until `shutdown`.
pub async fn run(app: PipelineApp, shutdown: CancellationToken) {
    let changed = app.due_changed();
    loop {
        let now = app.now();
        let pause = match app.publish_due_tasks(now).await {
            Ok((published, _)) if published > 0 => Duration::ZERO,
            Ok((_, next)) => next
                .and_then(|next| (next - now).to_std().ok())
                .map_or(LOOK_EVERY, |wait| wait.min(LOOK_EVERY)),
            Err(err) => {
                tracing::warn!(error = %err, "publishing due tasks failed; retrying");
                LOOK_EVERY
            }
        };
        if pause.is_zero() {
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = changed.notified() => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
}
