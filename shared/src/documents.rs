//! Document records and uploads: what the upload-url function does.
//!
//! A tenant's document is uploaded to `uploads/{tenant}/{document_id}/{safe filename}`
//! through a presigned PUT bound to that key, its content type and its exact size. Its
//! record is created `pending` before the URL is handed out, and moves through `processing`
//! to `ready` or `failed` as [`crate::ingest`] reads it. Shared coaching docs under `docs/`
//! are recorded in the global scope, which every tenant can retrieve from and no tenant can
//! write to. A text document can also be sent inline (`POST /documents`): it is stored at the
//! same key with a `pending` record, so the same ingest reads it. Deleting a document removes
//! its object, its index entry, then its record.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    auth::Principal,
    config::{ConfigError, Env},
    error::Error,
    ids::{now_ms, parse_id, rfc3339, Ids},
    model::{
        access::{group_list, MAX_DOCUMENT_GROUPS},
        Document, Job, Kind, NewDocument, ReembedJob, Scope,
    },
    store::{BlobStore, DocumentIndex, DocumentStore, JobQueue, StoreError},
};

/// Body of `POST /uploads`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadRequest {
    pub filename: String,
    pub content_type: String,
    #[serde(deserialize_with = "crate::http::whole")]
    pub size_bytes: u64,
    /// Who may read it: `"tenant"` (the default) or a list of groups.
    #[serde(default, deserialize_with = "present")]
    pub access: Option<AccessInput>,
}

/// A document's access as a request sends it: `"tenant"` (everyone in the tenant) or a list
/// of 1 to [`MAX_DOCUMENT_GROUPS`] group names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum AccessInput {
    Keyword(String),
    Groups(Vec<String>),
}

/// An access that is there when its field is (`null` is no access: a 400).
fn present<'de, D: serde::Deserializer<'de>>(input: D) -> Result<Option<AccessInput>, D::Error> {
    AccessInput::deserialize(input).map(Some)
}

/// Body of `PATCH /documents/{id}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentChange {
    pub access: AccessInput,
}

/// The access `input` asks for, as `who` may set it: `None` for the tenant, else the groups
/// (valid names, sorted, distinct). 400 for anything else; 403 when an editor who is not an
/// admin would restrict a document to groups none of which is theirs (they could not read it).
pub fn requested_access(who: &Principal, input: Option<&AccessInput>) -> Result<Option<Vec<String>>, Error> {
    let groups = match input {
        None => return Ok(None),
        Some(AccessInput::Keyword(word)) if word == "tenant" => return Ok(None),
        Some(AccessInput::Keyword(_)) => {
            return Err(Error::BadRequest("access is \"tenant\" or a list of group names".into()))
        }
        Some(AccessInput::Groups(groups)) => {
            group_list(groups).map_err(|problem| Error::BadRequest(format!("access: {problem}")))?
        }
    };
    if groups.is_empty() {
        return Err(Error::BadRequest(format!("access lists 1 to {MAX_DOCUMENT_GROUPS} groups, or is \"tenant\"")));
    }
    if !who.clearance().may_read(Some(&groups)) {
        return Err(Error::Forbidden(
            "you may restrict a document only to groups that include one of yours (you could not read it otherwise)"
                .into(),
        ));
    }
    Ok(Some(groups))
}

/// Body of `POST /documents`: a text document sent inline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InlineDocument {
    pub filename: String,
    pub content: String,
    pub content_type: String,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Who may read it: `"tenant"` (the default) or a list of groups.
    #[serde(default, deserialize_with = "present")]
    pub access: Option<AccessInput>,
}

/// Most metadata entries an inline document may carry, and their sizes in characters.
const MAX_METADATA_ENTRIES: usize = 16;
const MAX_METADATA_KEY_CHARS: usize = 64;
const MAX_METADATA_VALUE_CHARS: usize = 512;

/// Answer to `POST /uploads`.
#[derive(Debug, Clone, Serialize)]
pub struct Upload {
    pub document_id: String,
    pub upload_url: String,
    pub method: &'static str,
    pub headers: HashMap<String, String>,
    pub expires_at: String,
}

/// How long a `pending` record outlives its upload URL before DynamoDB's TTL removes it.
pub const PENDING_GRACE_SECS: u64 = 24 * 3600;

/// Upload limits (`COACH_MAX_UPLOAD_BYTES`, `COACH_UPLOAD_URL_TTL_SECS`,
/// `COACH_INLINE_UPLOAD_MAX_BYTES`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadConfig {
    pub max_bytes: u64,
    pub url_ttl: Duration,
    /// Largest text sent inline (`POST /documents`), in bytes: under API Gateway's and
    /// Lambda's request limits (10 MB, 6 MB) with room for JSON's escaping.
    pub inline_max_bytes: u64,
}

impl UploadConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let max_bytes = max_upload_bytes(env)?;
        Ok(Self {
            max_bytes,
            url_ttl: Duration::from_secs(env.number("COACH_UPLOAD_URL_TTL_SECS")?),
            inline_max_bytes: env.number("COACH_INLINE_UPLOAD_MAX_BYTES")?.min(max_bytes),
        })
    }
}

/// The largest document accepted (`COACH_MAX_UPLOAD_BYTES`), read by upload-url and ingest.
pub fn max_upload_bytes(env: &Env) -> Result<u64, ConfigError> {
    env.number("COACH_MAX_UPLOAD_BYTES")
}

/// Types a presigned upload may have.
const UPLOADED: &[Kind] = &[Kind::Pdf, Kind::Text, Kind::Markdown, Kind::Html, Kind::Csv, Kind::Docx];
/// Types a document sent inline (as JSON text) may have.
const INLINE: &[Kind] = &[Kind::Text, Kind::Markdown, Kind::Html];

/// A new document's type, one of `accepted` (else 415, naming them), and its safe file name,
/// whose extension must not contradict the type (else 400).
fn kind_and_name(content_type: &str, filename: &str, accepted: &[Kind]) -> Result<(Kind, String), Error> {
    let kind = Kind::from_content_type(content_type).filter(|k| accepted.contains(k)).ok_or_else(|| {
        let names: Vec<&str> = accepted.iter().map(|k| k.content_type()).collect();
        Error::UnsupportedMediaType(format!(
            "content_type {:?} is not accepted here; use {}",
            content_type.chars().take(100).collect::<String>(),
            names.join(", ")
        ))
    })?;
    let filename = safe_filename(filename);
    if Kind::from_filename(&filename).is_some_and(|k| k != kind) {
        return Err(Error::BadRequest("the file extension does not match content_type".into()));
    }
    Ok((kind, filename))
}

/// Metadata of an inline document: at most [`MAX_METADATA_ENTRIES`] entries, keys of
/// letters, digits, `_`, `-` and `.`, values without control characters, both bounded.
fn validate_metadata(metadata: &BTreeMap<String, String>) -> Result<(), Error> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(Error::BadRequest(format!("metadata has more than {MAX_METADATA_ENTRIES} entries")));
    }
    for (key, value) in metadata {
        let key_ok = (1..=MAX_METADATA_KEY_CHARS).contains(&key.chars().count())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !key_ok {
            return Err(Error::BadRequest(format!(
                "metadata keys are 1-{MAX_METADATA_KEY_CHARS} letters, digits, '_', '-' or '.'"
            )));
        }
        if value.chars().count() > MAX_METADATA_VALUE_CHARS || value.chars().any(char::is_control) {
            return Err(Error::BadRequest(format!(
                "metadata value of {key:?}: at most {MAX_METADATA_VALUE_CHARS} characters, no control characters"
            )));
        }
    }
    Ok(())
}

/// Longest file name kept, in characters.
const MAX_FILENAME_CHARS: usize = 120;

/// A file name safe as the last segment of an S3 key and in a header: no path, no control
/// characters, no characters outside letters, digits, space, `.`, `-`, `_`, `(`, `)`.
pub fn safe_filename(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base
        .chars()
        .map(|c| if c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ' ' | '(' | ')') { c } else { '_' })
        .collect();
    let collapsed = cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
    let trimmed = collapsed.trim_matches(|c: char| c == '.' || c == ' ' || c == '_');
    let cut: String = trimmed.chars().rev().take(MAX_FILENAME_CHARS).collect::<Vec<_>>().into_iter().rev().collect();
    if cut.is_empty() || cut.starts_with('.') {
        format!("document{cut}")
    } else {
        cut
    }
}

/// A tenant's documents: records, uploads and deletes. Build once per cold start.
/// Most chunks `GET /documents/{id}/chunks/{n}` gives on each side of the one asked for.
pub const MAX_CHUNK_CONTEXT: u32 = 5;

/// The scope a document id belongs to: a ULID is the tenant's upload, `doc-` and 16 hex
/// digits a shared doc (as ingest names them); anything else is a 400.
pub fn document_scope(tenant: &str, id: &str) -> Result<Scope, Error> {
    if ulid::Ulid::from_string(id).is_ok() {
        return Ok(Scope::Tenant(tenant.to_owned()));
    }
    let shared = id.strip_prefix("doc-").is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if shared {
        return Ok(Scope::Global);
    }
    Err(Error::BadRequest("invalid document id".into()))
}

/// A chunk as `GET /documents/{id}/chunks/{n}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PassageView {
    pub chunk: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heading: Option<String>,
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pages: Option<[u32; 2]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<u64>,
}

impl PassageView {
    fn of(chunk: u32, c: &crate::model::Chunk) -> Self {
        Self {
            chunk,
            heading: c.heading.clone(),
            text: c.text.clone(),
            pages: c.span.and_then(|s| s.pages),
            start: c.span.map(|s| s.start),
            end: c.span.map(|s| s.end),
        }
    }
}

/// A cited chunk in its context.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChunkView {
    pub document_id: String,
    pub title: String,
    /// How many chunks the document has.
    pub chunks: u32,
    pub passage: PassageView,
    /// The chunks just before it, in order.
    pub before: Vec<PassageView>,
    /// The chunks just after it, in order.
    pub after: Vec<PassageView>,
}

/// Records a list reads at most to fill a page for a caller who may not read some of them.
const MAX_LIST_EXAMINED: usize = 1000;

/// The documents of the caller's tenant they may read, in `records`, newest first: a page of
/// up to `limit` after `cursor` (the documents routes and the MCP server's `list_documents`).
///
/// Records the caller may not read are skipped, and the store read again until the page is
/// full or the tenant's records end, so the page's cursor is the last document returned
/// (the next page re-reads what was skipped) and names no document the caller may not
/// read. Only when [`MAX_LIST_EXAMINED`] records in a row are unreadable does a short page's
/// cursor stop at the last one read, so the next request goes on from there.
pub async fn list(
    records: &dyn DocumentStore,
    who: &Principal,
    limit: i32,
    cursor: Option<&str>,
) -> Result<(Vec<Document>, Option<String>), Error> {
    let scope = Scope::Tenant(who.tenant.clone());
    let clearance = who.clearance();
    let wanted = limit.max(1) as usize;
    let mut items: Vec<Document> = Vec::new();
    let mut cursor = cursor.map(str::to_owned);
    let mut examined = 0;
    loop {
        let page = records.list(&scope, (wanted - items.len()) as i32, cursor.as_deref()).await?;
        examined += page.items.len();
        let read = page.items.len();
        items.extend(page.items.into_iter().filter(|d| clearance.may_read(d.access.as_deref())));
        cursor = page.next_cursor;
        if items.len() >= wanted || cursor.is_none() || read == 0 {
            break;
        }
        if examined >= MAX_LIST_EXAMINED {
            // A run of unreadable records: go on from the last one read next time.
            return Ok((items, cursor));
        }
    }
    // Full (or the end): the next page starts after the last document returned.
    let next = cursor.and_then(|_| items.last().map(|d| d.document_id.clone()));
    Ok((items, next))
}

/// A new document of the caller's tenant, as [`Documents::record_pending`] records it.
struct Pending<'a> {
    filename: &'a str,
    kind: Kind,
    size_bytes: u64,
    metadata: Option<&'a BTreeMap<String, String>>,
    access: Option<&'a [String]>,
}

pub struct Documents {
    records: Arc<dyn DocumentStore>,
    blobs: Arc<dyn BlobStore>,
    index: Arc<dyn DocumentIndex>,
    ids: Ids,
    uploads: UploadConfig,
    /// The ingest jobs queue, for re-embedding; `None` when not configured.
    jobs: Option<Arc<dyn JobQueue>>,
}

impl Documents {
    pub fn new(
        records: Arc<dyn DocumentStore>,
        blobs: Arc<dyn BlobStore>,
        index: Arc<dyn DocumentIndex>,
        uploads: UploadConfig,
    ) -> Self {
        Self { records, blobs, index, ids: Ids::new(), uploads, jobs: None }
    }

    /// With the ingest jobs queue (`COACH_INGEST_QUEUE_URL`), which re-embedding needs.
    pub fn with_jobs(mut self, jobs: Option<Arc<dyn JobQueue>>) -> Self {
        self.jobs = jobs;
        self
    }

    /// Queues the re-embedding of the caller's tenant's documents with the current embedding
    /// model: each `ready` document without its vectors gains them, in the background.
    pub async fn reembed(&self, who: &Principal) -> Result<(), Error> {
        let Some(jobs) = &self.jobs else {
            return Err(Error::Conflict(
                "re-embedding needs the ingest jobs queue (COACH_INGEST_QUEUE_URL), which this deployment lacks".into(),
            ));
        };
        Ok(jobs.send(&Job::Reembed(ReembedJob { tenant: who.tenant.clone(), cursor: None })).await?)
    }

    /// Validates the request, records a new document as `pending`, and presigns its upload.
    pub async fn create_upload(&self, who: &Principal, req: &UploadRequest) -> Result<Upload, Error> {
        let (kind, filename) = kind_and_name(&req.content_type, &req.filename, UPLOADED)?;
        let access = requested_access(who, req.access.as_ref())?;
        if req.size_bytes == 0 {
            return Err(Error::BadRequest("size_bytes must be at least 1".into()));
        }
        if req.size_bytes > self.uploads.max_bytes {
            return Err(Error::PayloadTooLarge(format!(
                "size_bytes {} is over the limit of {} bytes",
                req.size_bytes, self.uploads.max_bytes
            )));
        }
        // A record whose upload never comes expires (DynamoDB TTL) a day after its URL does.
        let url_ttl = self.uploads.url_ttl.as_millis() as u64;
        let expiry = |now| (now + url_ttl) / 1000 + PENDING_GRACE_SECS;
        let new = Pending {
            filename: &filename,
            kind,
            size_bytes: req.size_bytes,
            metadata: None,
            access: access.as_deref(),
        };
        let (id, key, now) = self.record_pending(who, new, expiry).await?;
        let presigned = self.blobs.presign_put(&key, kind.content_type(), req.size_bytes, self.uploads.url_ttl).await?;
        Ok(Upload {
            document_id: id,
            upload_url: presigned.url,
            method: "PUT",
            headers: presigned.headers.into_iter().collect(),
            expires_at: rfc3339(now + self.uploads.url_ttl.as_millis() as u64),
        })
    }

    /// Records a new document of the caller's tenant as `pending`, expiring (DynamoDB TTL,
    /// epoch seconds) at `expiry` of when it was recorded, unless its object lands: its id,
    /// its object's key, and when (epoch ms).
    async fn record_pending(
        &self,
        who: &Principal,
        new: Pending<'_>,
        expiry: impl FnOnce(u64) -> u64,
    ) -> Result<(String, String, u64), Error> {
        let id = self.ids.next().to_string();
        let key = crate::store::keys::upload_key(&who.tenant, &id, new.filename);
        let now = now_ms();
        let access = new.access;
        let record = NewDocument {
            document_id: &id,
            filename: new.filename,
            kind: new.kind,
            size_bytes: new.size_bytes,
            key: &key,
            uploaded_by: &who.user_id,
            metadata: new.metadata,
            access,
        };
        let scope = Scope::Tenant(who.tenant.clone());
        self.records.create(&scope, &record, now, expiry(now)).await?;
        // A restricted document is restricted in the index before its content can exist, so
        // no search ever finds it open. Without that, no record either (no URL was given).
        if let Some(groups) = access {
            if let Err(e) = self.index.set_access(&scope, &id, Some(groups), 0).await {
                if let Err(cleanup) = self.records.delete(&scope, &id).await {
                    tracing::warn!(error = %cleanup, "could not remove the record of a refused upload");
                }
                return Err(e.into());
            }
        }
        Ok((id, key, now))
    }

    /// Largest text accepted inline, in bytes.
    pub fn inline_max_bytes(&self) -> usize {
        self.uploads.inline_max_bytes as usize
    }

    /// Stores a text document sent inline (`POST /documents`) under the same key layout as
    /// an upload, with a `pending` record (and its metadata), so the same ingest path reads
    /// it. Returns the new document's id.
    pub async fn create_inline(&self, who: &Principal, req: &InlineDocument) -> Result<String, Error> {
        let (kind, filename) = kind_and_name(&req.content_type, &req.filename, INLINE)?;
        let size = req.content.len() as u64;
        if size == 0 {
            return Err(Error::BadRequest("content is empty".into()));
        }
        if size > self.uploads.inline_max_bytes {
            return Err(Error::PayloadTooLarge(format!(
                "content is {size} bytes; the inline limit is {} bytes (larger files go through POST /uploads)",
                self.uploads.inline_max_bytes
            )));
        }
        if let Some(metadata) = &req.metadata {
            validate_metadata(metadata)?;
        }
        let access = requested_access(who, req.access.as_ref())?;
        // Like an upload's: a record whose object never lands expires, a day on.
        let expiry = |now| now / 1000 + PENDING_GRACE_SECS;
        let new = Pending {
            filename: &filename,
            kind,
            size_bytes: size,
            metadata: req.metadata.as_ref(),
            access: access.as_deref(),
        };
        let (id, key, _) = self.record_pending(who, new, expiry).await?;
        let scope = Scope::Tenant(who.tenant.clone());
        let body = bytes::Bytes::copy_from_slice(req.content.as_bytes());
        if let Err(e) = self.blobs.put(&key, body, kind.content_type()).await {
            // Nothing was stored: no record either (best effort; the TTL removes it otherwise).
            if let Err(cleanup) = self.records.delete(&scope, &id).await {
                tracing::warn!(error = %cleanup, "could not remove the record of a failed inline upload");
            }
            return Err(e.into());
        }
        Ok(id)
    }

    /// The caller's tenant's documents, newest first.
    pub async fn list(
        &self,
        who: &Principal,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<(Vec<Document>, Option<String>), Error> {
        list(self.records.as_ref(), who, limit, cursor).await
    }

    /// One document of the caller's tenant that they may read, or 404 (whether it does not
    /// exist or is not theirs to read: the answer is the same).
    pub async fn get(&self, who: &Principal, id: &str) -> Result<Document, Error> {
        let id = parse_id(id, "document")?;
        readable(who, self.records.get(&Scope::Tenant(who.tenant.clone()), &id.to_string()).await?)
            .ok_or_else(|| Error::NotFound("no such document".into()))
    }

    /// Changes who may read a document of the caller's tenant (one they may read: else 404):
    /// its record first (conditional on the access read: a concurrent change is a 409), then
    /// the index, which search reads within seconds. Re-applied to the index even when the
    /// record already says so, so repeating a change that failed halfway completes it.
    /// Returns the document, and its access before.
    pub async fn set_access(
        &self,
        who: &Principal,
        id: &str,
        change: &DocumentChange,
    ) -> Result<(Document, Option<Vec<String>>), Error> {
        let mut doc = self.get(who, id).await?;
        let access = requested_access(who, Some(&change.access))?;
        let scope = Scope::Tenant(who.tenant.clone());
        let before = doc.access.clone();
        if access != doc.access {
            let now = now_ms();
            self.records.set_access(&scope, &doc.document_id, access.as_deref(), doc.access_rev, now).await.map_err(
                |e| match e {
                    StoreError::ConditionFailed { .. } => {
                        Error::Conflict("the document changed meanwhile (or was deleted); read it and try again".into())
                    }
                    other => other.into(),
                },
            )?;
            doc.access = access;
            doc.access_rev += 1;
            doc.updated_at = rfc3339(now);
        }
        self.index.set_access(&scope, &doc.document_id, doc.access.as_deref(), doc.access_rev).await?;
        Ok((doc, before))
    }

    /// Chunk `number` of a document the caller may read (the tenant's, or a shared doc), with
    /// up to `context` chunks before and after it, as indexed: so a client can show a cited
    /// passage in its context. 404 when there is no such document or chunk in the index.
    pub async fn chunk(&self, who: &Principal, id: &str, number: u32, context: u32) -> Result<ChunkView, Error> {
        let scope = document_scope(&who.tenant, id)?;
        let not_found = || Error::NotFound("no such chunk".into());
        // A tenant's document only when the caller may read it (the shared docs are everyone's).
        if let Scope::Tenant(_) = scope {
            readable(who, self.records.get(&scope, id).await?).ok_or_else(not_found)?;
        }
        let doc = self.index.document(&scope, id).await?.ok_or_else(not_found)?;
        let at = number as usize;
        if at >= doc.chunks.len() {
            return Err(not_found());
        }
        let view = |n: usize| PassageView::of(n as u32, &doc.chunks[n]);
        let context = context.min(MAX_CHUNK_CONTEXT) as usize;
        Ok(ChunkView {
            document_id: doc.document_id.clone(),
            title: doc.title.clone(),
            chunks: doc.chunks.len() as u32,
            before: (at.saturating_sub(context)..at).map(view).collect(),
            passage: view(at),
            after: (at + 1..(at + 1 + context).min(doc.chunks.len())).map(view).collect(),
        })
    }

    /// Deletes a document of the caller's tenant: the object, then its index entry (a
    /// tombstone), then the record, so a half-done delete can be repeated, and an ingest
    /// still running finds the object gone before it could commit.
    pub async fn delete(&self, who: &Principal, id: &str) -> Result<(), Error> {
        let doc = self.get(who, id).await?;
        let scope = Scope::Tenant(who.tenant.clone());
        // Every version: in the versioned bucket a plain delete only hides the upload.
        self.blobs.delete_all_versions(&doc.key).await?;
        self.index.remove(&scope, &doc.document_id).await?;
        Ok(self.records.delete(&scope, &doc.document_id).await?)
    }
}

/// `record` if `who` may read it.
pub fn readable(who: &Principal, record: Option<Document>) -> Option<Document> {
    record.filter(|d| who.clearance().may_read(d.access.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::model::access::normalise_groups;

    fn caller(roles: &[crate::auth::Role], groups: &[&str]) -> Principal {
        Principal {
            user_id: "u".into(),
            tenant: "t".into(),
            roles: roles.to_vec(),
            groups: normalise_groups(groups.iter().map(|g| (*g).to_owned()).collect()),
        }
    }

    #[test]
    fn access_is_the_tenant_or_groups_an_editor_keeps_reading() {
        use crate::auth::Role;
        let editor = caller(&[Role::Editor], &["hr"]);
        let groups = |names: &[&str]| AccessInput::Groups(names.iter().map(|g| (*g).to_owned()).collect());
        assert_eq!(requested_access(&editor, None), Ok(None));
        assert_eq!(requested_access(&editor, Some(&AccessInput::Keyword("tenant".into()))), Ok(None));
        assert_eq!(
            requested_access(&editor, Some(&groups(&["legal", "hr", "hr"]))),
            Ok(Some(vec!["hr".to_owned(), "legal".to_owned()]))
        );
        let status = |who: &Principal, input: AccessInput| requested_access(who, Some(&input)).unwrap_err().status();
        assert_eq!(status(&editor, AccessInput::Keyword("public".into())).as_u16(), 400);
        assert_eq!(status(&editor, groups(&[])).as_u16(), 400);
        assert_eq!(status(&editor, groups(&["hr", " x"])).as_u16(), 400);
        let many: Vec<String> = (0..=MAX_DOCUMENT_GROUPS).map(|i| format!("g{i}")).collect();
        assert_eq!(status(&editor, AccessInput::Groups(many)).as_u16(), 400);
        // Restricting it away from yourself: refused for an editor, allowed for an admin.
        assert_eq!(status(&editor, groups(&["board"])).as_u16(), 403);
        let admin = caller(&[Role::Admin], &[]);
        assert_eq!(requested_access(&admin, Some(&groups(&["board"]))), Ok(Some(vec!["board".to_owned()])));
        let body: DocumentChange = serde_json::from_str(r#"{"access": ["hr"]}"#).unwrap();
        assert_eq!(body.access, groups(&["hr"]));
        assert!(serde_json::from_str::<DocumentChange>(r#"{"access": 7}"#).is_err());
        assert!(serde_json::from_str::<DocumentChange>(r#"{"access": null}"#).is_err());
        let upload = r#"{"filename": "a.md", "content_type": "text/markdown", "size_bytes": 1"#;
        assert!(serde_json::from_str::<UploadRequest>(&format!("{upload}, \"access\": null}}")).is_err());
        let open: UploadRequest = serde_json::from_str(&format!("{upload}}}")).unwrap();
        assert_eq!(open.access, None);
    }

    #[test]
    fn document_ids_name_their_scope() {
        assert_eq!(document_scope("acme", "01J0000000000000000000000A").unwrap(), Scope::Tenant("acme".into()));
        assert_eq!(document_scope("acme", "doc-0123456789abcdef").unwrap(), Scope::Global);
        for bad in ["", "doc-123", "../x", "doc-0123456789abcdeg"] {
            assert_eq!(document_scope("acme", bad).unwrap_err().status().as_u16(), 400, "{bad}");
        }
    }

    #[test]
    fn filenames_lose_paths_and_control_characters() {
        assert_eq!(safe_filename("../../etc/passwd"), "passwd");
        assert_eq!(safe_filename("C:\\Users\\me\\Team handbook.pdf"), "Team handbook.pdf");
        assert_eq!(safe_filename("evil\u{0}\n\r.md"), "evil___.md");
        assert_eq!(safe_filename("a/.."), "document");
        assert_eq!(safe_filename(".hidden.md"), "hidden.md");
        assert_eq!(safe_filename("   "), "document");
        assert_eq!(safe_filename("x%2F..%2F.md"), "x_2F.._2F.md");
        let long = format!("{}.md", "a".repeat(500));
        assert_eq!(safe_filename(&long).chars().count(), MAX_FILENAME_CHARS);
        assert!(safe_filename(&long).ends_with(".md"));
    }

    #[test]
    fn kinds_from_types_and_names() {
        assert_eq!(Kind::from_content_type("text/markdown; charset=utf-8"), Some(Kind::Markdown));
        assert_eq!(Kind::from_content_type("application/zip"), None);
        assert_eq!(Kind::from_filename("Guide.HTM"), Some(Kind::Html));
        assert_eq!(Kind::from_filename("noext"), None);
    }
}
