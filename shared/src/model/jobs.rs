//! Follow-up work the ingest function queues for itself: embedding steps, objects ingested
//! again, re-embeddings, purges, session titles.

use serde::{Deserialize, Serialize};

/// Follow-up work the ingest function queues for itself (its jobs queue), told apart from S3
/// events by the `job` field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "lowercase")]
pub enum Job {
    /// One step of a document's embedding.
    Embed(EmbedJob),
    /// Queue an [`EmbedJob`] for every `ready` document of a tenant, a page at a time.
    Reembed(ReembedJob),
    /// An object event handled again: an upload whose event never arrived, found by the
    /// sweeper (see `ingest::sweep`).
    Object(ObjectJob),
    /// A session titled from its first exchange by the model (see `titles`), queued by chat
    /// after the reply is stored so the answer never waits for it.
    Title(TitleJob),
    /// Erasing deleted documents' data from a scope's index objects once readers may no
    /// longer need them (see `DocumentIndex::purge`), queued by ingest after a delete.
    Purge(PurgeJob),
}

/// The scope to purge: a tenant's, or the shared docs' (`None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeJob {
    #[serde(default)]
    pub tenant: Option<String>,
}

/// The session to title: its owner and id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TitleJob {
    pub tenant: String,
    pub user_id: String,
    pub session_id: String,
}

/// An object's event, as a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectJob {
    /// The object key.
    pub key: String,
}

/// One step of a document's embedding (see `ingest::jobs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbedJob {
    /// The document's object key.
    pub key: String,
    /// The version (ETag) being embedded.
    pub etag: String,
    /// Chunks embedded so far.
    pub done: usize,
    /// Keys of the parts stored so far, in chunk order.
    pub parts: Vec<String>,
}

impl EmbedJob {
    /// The first step for version `etag` of `key`.
    pub fn first(key: &str, etag: &str) -> Self {
        Self { key: key.into(), etag: etag.into(), done: 0, parts: Vec::new() }
    }
}

/// Re-embedding a tenant's documents (after a model change, or documents indexed before
/// embeddings were on), from `cursor` on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReembedJob {
    pub tenant: String,
    #[serde(default)]
    pub cursor: Option<String>,
}
