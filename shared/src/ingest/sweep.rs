//! The sweeper: documents whose ingest never finished, so none stays `pending` or
//! `processing` for ever without a word.
//!
//! S3 invokes ingest asynchronously; an event Lambda gave up on goes to the ingest
//! dead-letter queue (see template.yaml) and can be re-driven, but a record can also be left
//! behind by an invocation that died (a timeout, a crash) after marking it `processing`, or
//! by an event that was lost. On a schedule, ingest looks at the records whose status has
//! not changed for `COACH_INGEST_STUCK_MINUTES` (15):
//!
//! - `processing`: the invocation reading it died and no retry came. It is `failed` with the
//!   reason (a retry that still comes marks it `processing` again and finishes it).
//! - `pending` with its upload in the bucket: the upload's event never arrived. The upload is
//!   ingested again, through the jobs queue (or at once, without one).
//! - `pending` with no upload: its upload URL (5 minutes) has long expired, so none can come.
//!   It is `failed` with the reason (and its record still expires a day after the URL).

use std::time::Duration;

use serde::Serialize;

use super::{Ingestor, KeyedDocument, ObjectEvent};
use crate::{
    deadline::Deadline,
    error::Error,
    model::{Finished, Job, ObjectJob, Status},
};

/// Records looked at per page, and pages per sweep.
const PAGE: i32 = 100;
const PAGES: usize = 10;

/// Why a document the sweeper failed is `failed`.
pub const DIED: &str = "ingest stopped before it finished (the function timed out or crashed); upload the file again";
pub const NO_UPLOAD: &str = "no upload arrived before the upload URL expired; upload the file again";

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Swept {
    /// Records marked `failed`.
    pub failed: usize,
    /// Uploads ingested again (queued, or at once).
    pub redriven: usize,
}

impl Ingestor {
    /// One sweep at `now_ms` (see the module's description), in an invocation that ends at
    /// `deadline`. Errors are transient: the next sweep picks up where this one stopped.
    pub async fn sweep(&self, now_ms: u64, deadline: Deadline) -> Result<Swept, Error> {
        let before = now_ms.saturating_sub(self.stuck_after.as_millis() as u64);
        let mut swept = Swept::default();
        for _ in 0..PAGES {
            let page = self.records.unfinished(before, PAGE).await?;
            let full = page.len() == PAGE as usize;
            for (scope, document) in page {
                let target = KeyedDocument {
                    scope: scope.clone(),
                    id: document.document_id.clone(),
                    filename: document.filename.clone(),
                };
                let reason = match document.status {
                    Status::Processing => DIED,
                    Status::Pending if self.blobs.version(&document.key).await?.is_some() => {
                        match &self.queue {
                            Some(queue) => queue.send(&Job::Object(ObjectJob { key: document.key.clone() })).await?,
                            None => {
                                let event = ObjectEvent { created: true, key: document.key.clone() };
                                self.handle(&event, deadline).await?;
                            }
                        }
                        swept.redriven += 1;
                        continue;
                    }
                    Status::Pending => NO_UPLOAD,
                    Status::Ready | Status::Failed => continue,
                };
                self.finish(&target, Finished::Failed { reason }).await?;
                swept.failed += 1;
            }
            // Queued uploads stay `pending` (and listed) until ingested: one page is enough.
            if !full || swept.redriven > 0 {
                break;
            }
        }
        if swept != Swept::default() {
            tracing::info!(failed = swept.failed, redriven = swept.redriven, "swept unfinished documents");
        }
        Ok(swept)
    }
}

/// `COACH_INGEST_STUCK_MINUTES`: how long a record may stay `pending` or `processing`.
pub fn stuck_after(env: &crate::config::Env) -> Result<Duration, crate::config::ConfigError> {
    Ok(Duration::from_secs(60 * env.number("COACH_INGEST_STUCK_MINUTES")?))
}
