//! The records Coach keeps and returns: sessions and messages, documents and their status,
//! chunks, sources and token usage, and the ingest function's jobs (`model/jobs.rs`).
//!
//! Plain data shared by the domain modules and the stores that persist them, so neither
//! has to import the other. Nothing here does I/O or knows how a record is stored (key
//! layout and attribute conversion belong to [`crate::store`]).

pub mod access;
mod jobs;

use serde::{Deserialize, Serialize};

pub use access::Clearance;
pub use jobs::{EmbedJob, Job, ObjectJob, PurgeJob, ReembedJob, TitleJob};

/// Whose data a read or write is about: every key a store builds starts with these, taken
/// from the verified token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner<'a> {
    pub tenant: &'a str,
    pub user: &'a str,
}

// ------------------------------------------------------------------ chat history

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Author {
    User,
    Assistant,
}

impl Author {
    pub fn as_str(self) -> &'static str {
        match self {
            Author::User => "user",
            Author::Assistant => "assistant",
        }
    }
}

/// Token counts of one model call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// What the usage ledger counts, for one model in one day, or in all for a month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct UsageCounts {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Estimated cost in billionths of a US dollar (integers, so counters add exactly).
    pub cost_nanos: u64,
    /// Model or embedding calls.
    pub requests: u64,
}

impl UsageCounts {
    pub fn add(&mut self, other: &UsageCounts) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cost_nanos += other.cost_nanos;
        self.requests += other.requests;
    }
}

/// What calls of one model used, to record in the usage ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelUsage {
    /// The model as the provider named it in its answer (`gpt-4o-mini-2024-07-18`).
    pub model: String,
    /// The model as Coach asked for it (`gpt-4o-mini`), to price a served name the price
    /// table does not know.
    pub requested: String,
    pub usage: Usage,
    pub calls: u64,
}

/// One day's counts of one model, as the ledger keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayUsage {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    pub model: String,
    /// The interface the calls came through.
    pub surface: Surface,
    pub counts: UsageCounts,
}

/// The interface a model call came through, a dimension of the usage ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Surface {
    /// Coach's own routes (`/chat`, `/qa`, ...) and its background work (ingest, titles).
    #[default]
    Api,
    /// The OpenAI-compatible API (`/v1/chat/completions`).
    OpenAi,
    /// The MCP server's tools (`/mcp`).
    Mcp,
}

impl Surface {
    pub const ALL: [Surface; 3] = [Surface::Api, Surface::OpenAi, Surface::Mcp];

    pub fn as_str(self) -> &'static str {
        match self {
            Surface::Api => "api",
            Surface::OpenAi => "openai",
            Surface::Mcp => "mcp",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// Where a reply's grounding came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub document_id: String,
    pub title: String,
    pub chunk: u32,
    pub score: f32,
    pub snippet: String,
    /// The heading path of the passage's section ("Giving feedback > Praise"), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heading: Option<String>,
    /// The PDF pages the passage is on, first and last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages: Option<[u32; 2]>,
    /// Where the passage is in the document's extracted text, in characters (Unicode code
    /// points): from `start`, up to `end`. Absent for documents indexed before Coach recorded
    /// it, until they are indexed again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<u64>,
}

impl Source {
    /// How a numbered reference names the source: its title, the heading path when `heading`
    /// is asked for and there is one, and its pages ("guide.pdf > Praise, pages 3-4").
    pub fn citation(&self, heading: bool) -> String {
        let mut citation = self.title.replace(['\n', '\r'], " ");
        if let Some(path) = self.heading.as_deref().filter(|_| heading) {
            citation.push_str(&format!(" > {}", path.replace(['\n', '\r'], " ")));
        }
        match self.pages {
            Some([first, last]) if first == last => citation.push_str(&format!(", page {first}")),
            Some([first, last]) => citation.push_str(&format!(", pages {first}-{last}")),
            None => {}
        }
        citation
    }
}

/// An answer's numbered sources as text a plain client shows after it (`Sources:`, then
/// `[n]` and each source as `name` gives it), so what `[n]` cites is there; empty without
/// sources.
pub fn numbered_sources(sources: &[Source], name: impl Fn(&Source) -> String) -> String {
    if sources.is_empty() {
        return String::new();
    }
    let mut text = String::from("\n\nSources:");
    for (i, source) in sources.iter().enumerate() {
        text.push_str(&format!("\n[{}] {}", i + 1, name(source)));
    }
    text
}

/// A retrieved passage: what to cite, and the text to put in the prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Passage {
    pub source: Source,
    /// The heading path of the chunk's section ("Giving feedback > Praise"), if it has one.
    pub heading: Option<String>,
    /// What the prompt gets: the heading path (when there is one) on a line, then the text.
    pub text: String,
}

impl Passage {
    /// Longest snippet stored with a source, in characters.
    pub const SNIPPET_CHARS: usize = 300;

    /// A passage of chunk number `number` (within its document) with its fused `score`: the
    /// prompt gets the heading path and the text, the source a snippet of the text and where
    /// the passage is.
    pub fn of_chunk(document_id: &str, title: &str, number: u32, score: f32, chunk: &Chunk) -> Self {
        let snippet: String = chunk.text.chars().take(Self::SNIPPET_CHARS).collect();
        let heading = chunk.heading.as_deref();
        let text = match heading {
            Some(h) => format!("{h}\n{}", chunk.text),
            None => chunk.text.clone(),
        };
        let span = chunk.span.as_ref();
        Passage {
            source: Source {
                document_id: document_id.to_owned(),
                title: title.to_owned(),
                chunk: number,
                score,
                snippet,
                heading: heading.map(str::to_owned),
                pages: span.and_then(|s| s.pages),
                start: span.map(|s| s.start),
                end: span.map(|s| s.end),
            },
            heading: heading.map(str::to_owned),
            text,
        }
    }
}

/// A search as the index stores run it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// Search terms ([`crate::analysis`]) with their weights: each adds its BM25 score
    /// times its weight. A question alone weighs each of its terms by its share of them;
    /// in a conversation the earlier turns add theirs ([`crate::retrieval`]).
    pub terms: Vec<(String, f32)>,
    /// The query's embedding and the model that made it; `None` (no embedding provider, or
    /// it failed): by words only.
    pub vector: Option<(String, Vec<f32>)>,
}

impl Query {
    /// The terms a store ranks by: those of a positive, finite weight.
    pub fn ranked_terms(&self) -> impl Iterator<Item = &(String, f32)> {
        self.terms.iter().filter(|(_, w)| *w > 0.0 && w.is_finite())
    }
}

/// How a search ranks and cuts its passages (`COACH_RETRIEVAL_*`), whichever index store
/// runs it: a word ranking and a vector ranking, fused by a weighted mean of their scores,
/// each divided by its ranking's best.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranking {
    pub top_k: usize,
    /// Least fused score a passage needs, 0 to 1 (1: the best of every ranking; 0 keeps
    /// every match).
    pub min_score: f32,
    /// Least cosine similarity for a vector match to count.
    pub min_similarity: f32,
    /// Weight of the vector ranking in the fusion (the word ranking's is 1).
    pub vector_weight: f32,
}

impl Ranking {
    /// BM25's parameters, in both stores: k1 = 1.2 and b = 0.75, the values of Robertson and
    /// Walker's experiments that Lucene and Elasticsearch default to.
    pub const BM25_K1: f32 = 1.2;
    pub const BM25_B: f32 = 0.75;
    /// How many of each ranking take part in fusion, at least (see [`Ranking::window`]).
    const LEAST_WINDOW: usize = 100;
    /// Candidates of each ranking per passage asked, past the least window.
    const CANDIDATES_PER_PASSAGE: usize = 10;

    /// How many of each ranking to fuse: the best 100 (the depth of the handbook's reference
    /// fusion), or ten per passage asked when more than ten are.
    pub fn window(&self) -> usize {
        Self::LEAST_WINDOW.max(Self::CANDIDATES_PER_PASSAGE * self.top_k)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Session {
    pub session_id: String,
    pub title: String,
    pub created_at: String,
    pub updated_at: String,
    pub message_count: u64,
    /// Whether the title is still the automatic one (from the first message, or the default),
    /// which the first exchange replaces; false once the user named the session.
    #[serde(skip)]
    pub auto_title: bool,
}

/// A user's verdict on a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rating {
    Up,
    Down,
}

impl Rating {
    pub fn as_str(self) -> &'static str {
        match self {
            Rating::Up => "up",
            Rating::Down => "down",
        }
    }
}

/// Why a reply was rated as it was: one of a fixed set, so it can be counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackReason {
    Inaccurate,
    Incomplete,
    NotHelpful,
    OffTopic,
    Outdated,
    Unsafe,
    Other,
}

impl FeedbackReason {
    pub const ALL: [FeedbackReason; 7] = [
        FeedbackReason::Inaccurate,
        FeedbackReason::Incomplete,
        FeedbackReason::NotHelpful,
        FeedbackReason::OffTopic,
        FeedbackReason::Outdated,
        FeedbackReason::Unsafe,
        FeedbackReason::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackReason::Inaccurate => "inaccurate",
            FeedbackReason::Incomplete => "incomplete",
            FeedbackReason::NotHelpful => "not_helpful",
            FeedbackReason::OffTopic => "off_topic",
            FeedbackReason::Outdated => "outdated",
            FeedbackReason::Unsafe => "unsafe",
            FeedbackReason::Other => "other",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

/// The feedback on a reply, as its author's user gave it last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Feedback {
    pub rating: Rating,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<FeedbackReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub updated_at: String,
    /// When it was given (epoch ms): its version, and the day it is counted on.
    #[serde(skip)]
    pub at_ms: u64,
}

/// Ratings as the tenant's usage report counts them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct FeedbackCounts {
    pub up: u64,
    pub down: u64,
    /// By reason, the reasons given at least once.
    pub reasons: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub message_id: String,
    pub role: Author,
    pub content: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<Source>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A reply cut short (the client left, the stream's time ran out, the model failed
    /// midway): what was generated until then.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub incomplete: bool,
    pub created_at: String,
    /// The user's rating of a reply, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback: Option<Feedback>,
}

/// A message to store: the user's (content only) or a reply (with sources, usage, model).
#[derive(Debug, Clone, Copy)]
pub struct NewMessage<'a> {
    pub role: Author,
    pub content: &'a str,
    pub sources: &'a [Source],
    pub usage: Option<Usage>,
    pub model: Option<&'a str>,
    /// A reply cut short (see [`Message::incomplete`]).
    pub incomplete: bool,
}

impl<'a> NewMessage<'a> {
    /// The user's message.
    pub fn user(content: &'a str) -> Self {
        Self { role: Author::User, content, sources: &[], usage: None, model: None, incomplete: false }
    }
}

/// One page of a listing, with the cursor for the next page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

// ------------------------------------------------------------------ documents

/// The kinds of document Coach can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Pdf,
    Text,
    Markdown,
    Html,
    /// Comma-separated values with a header row: each row becomes a passage naming its columns.
    Csv,
    /// A Word document (Office Open XML).
    Docx,
}

impl Kind {
    /// From a MIME type (parameters such as `charset` ignored).
    pub fn from_content_type(content_type: &str) -> Option<Kind> {
        match content_type.split(';').next()?.trim().to_ascii_lowercase().as_str() {
            "application/pdf" => Some(Kind::Pdf),
            "text/plain" => Some(Kind::Text),
            "text/markdown" | "text/x-markdown" => Some(Kind::Markdown),
            "text/html" => Some(Kind::Html),
            "text/csv" => Some(Kind::Csv),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => Some(Kind::Docx),
            _ => None,
        }
    }

    /// From a file name's extension.
    pub fn from_filename(name: &str) -> Option<Kind> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "pdf" => Some(Kind::Pdf),
            "txt" | "text" => Some(Kind::Text),
            "md" | "markdown" => Some(Kind::Markdown),
            "html" | "htm" => Some(Kind::Html),
            "csv" => Some(Kind::Csv),
            "docx" => Some(Kind::Docx),
            _ => None,
        }
    }

    /// The canonical MIME type, as signed into upload URLs.
    pub fn content_type(self) -> &'static str {
        match self {
            Kind::Pdf => "application/pdf",
            Kind::Text => "text/plain",
            Kind::Markdown => "text/markdown",
            Kind::Html => "text/html",
            Kind::Csv => "text/csv",
            Kind::Docx => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        }
    }
}

/// Where a document belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Tenant(String),
    /// Shared coaching docs under `docs/`, visible to every tenant.
    Global,
}

impl Scope {
    /// The shared docs' name where scopes are named (index keys, database rows, logs): tenant
    /// ids never start with `_`, so it cannot be a tenant's.
    pub const GLOBAL_NAME: &'static str = "_global";

    /// The scope's name: the tenant id, or [`Scope::GLOBAL_NAME`].
    pub fn name(&self) -> &str {
        match self {
            Scope::Tenant(t) => t,
            Scope::Global => Self::GLOBAL_NAME,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Processing,
    Ready,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Processing => "processing",
            Status::Ready => "ready",
            Status::Failed => "failed",
        }
    }

    pub fn parse(value: &str) -> Option<Status> {
        match value {
            "pending" => Some(Status::Pending),
            "processing" => Some(Status::Processing),
            "ready" => Some(Status::Ready),
            "failed" => Some(Status::Failed),
            _ => None,
        }
    }
}

/// A document as callers see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Document {
    pub document_id: String,
    pub filename: String,
    pub content_type: String,
    pub size_bytes: u64,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunks: Option<u64>,
    /// For a document embedded in steps after it was indexed by its words (more chunks than
    /// one invocation embeds): how many chunks have vectors so far, up to `chunks`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedded_chunks: Option<u64>,
    pub created_at: String,
    pub updated_at: String,
    /// Object key in the bucket (not sent to callers).
    #[serde(skip)]
    pub key: String,
    /// ETag of the version last indexed (not sent to callers).
    #[serde(skip)]
    pub etag: Option<String>,
    /// What the uploader attached to an inline upload (`POST /documents`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
    /// Who may read it: `None` everyone in the tenant (shown as `"tenant"`), else these
    /// groups (see [`access`]).
    #[serde(serialize_with = "serialize_access")]
    pub access: Option<Vec<String>>,
    /// Counts the changes of `access` (not sent to callers): each change is conditional on it.
    #[serde(skip)]
    pub access_rev: u64,
}

/// A document's access as the API shows it: `"tenant"` or the list of groups.
pub fn serialize_access<S: serde::Serializer>(access: &Option<Vec<String>>, out: S) -> Result<S::Ok, S::Error> {
    match access {
        None => out.serialize_str("tenant"),
        Some(groups) => groups.serialize(out),
    }
}

/// A document record about to be created, `pending` until its upload is ingested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDocument<'a> {
    pub document_id: &'a str,
    pub filename: &'a str,
    pub kind: Kind,
    pub size_bytes: u64,
    pub key: &'a str,
    /// The uploader's user id (shared docs have none, and their records do not keep one).
    pub uploaded_by: &'a str,
    /// Key-value pairs the uploader attached (inline uploads).
    pub metadata: Option<&'a std::collections::BTreeMap<String, String>>,
    /// Who may read it (`None`: the tenant); see [`access`].
    pub access: Option<&'a [String]>,
}

/// How ingestion of a document ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished<'a> {
    /// `embedded_chunks`: `Some(0)` when the vectors follow in steps (see [`Document`]).
    Ready {
        chunks: u64,
        etag: &'a str,
        size_bytes: u64,
        embedded_chunks: Option<u64>,
    },
    Failed {
        reason: &'a str,
    },
}

// ------------------------------------------------------------------ the index

/// One piece of a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Heading path of the section, for markdown.
    pub heading: Option<String>,
    pub text: String,
    /// Where the chunk is in its document's extracted text (`None`: indexed before Coach
    /// recorded it).
    pub span: Option<Span>,
}

/// Where a chunk is in its document's extracted text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// From this character (Unicode code point) ...
    pub start: u64,
    /// ... up to this one.
    pub end: u64,
    /// The PDF pages it is on, first and last (pages are counted by the form feeds
    /// extraction puts between them).
    pub pages: Option<[u32; 2]>,
}

/// One document's index data: its chunks and, when an embedding provider is configured,
/// one vector per chunk. What ingest produces, and what the index stores take (the S3
/// store builds its segments from it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shard {
    pub document_id: String,
    /// Shown as the source title (the file name).
    pub title: String,
    pub chunks: Vec<Chunk>,
    /// Model that made the vectors, when there are any.
    pub embedding_model: Option<String>,
    /// Length of each vector (0 when there are none).
    pub dims: u32,
    /// `chunks.len() * dims` values, chunk after chunk.
    pub vectors: Vec<f32>,
}
