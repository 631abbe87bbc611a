//! Rebuilding the system prompt from the shared docs (what docs-refresh does).
//!
//! Lists `docs/` (every page), reads the markdown files in key order, puts the optional
//! `prompt/base.md` preamble first, and writes `prompt/system_prompt.md`, then
//! `prompt/manifest.json` last. The manifest names the prompt's ETag, so a reader can tell
//! whether a manifest describes the prompt beside it even if two refreshes overlapped (the
//! last writer wins for both objects). Documents that would push the prompt past the token
//! budget are left out of it, listed as `omitted` in the manifest and the response, and still
//! reach the model through retrieval (docs/ is indexed like any document). Nothing is cut
//! silently.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use crate::{
    config::{ConfigError, Env},
    error::Error,
    ids::{now_ms, rfc3339, Ids},
    prompt::{estimate_tokens, DEFAULT_SYSTEM_PROMPT, SYSTEM_PROMPT_KEY},
    store::BlobStore,
};

pub use crate::store::keys::{BASE_PROMPT_KEY as BASE_KEY, DOCS_PREFIX, PROMPT_MANIFEST_KEY as MANIFEST_KEY};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ManifestDoc {
    pub key: String,
    pub title: String,
    pub size_bytes: u64,
    pub last_modified: String,
    pub characters: usize,
    pub estimated_tokens: u32,
    /// Whether the document is in the prompt (else it is over the budget).
    pub included: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Manifest {
    /// Unique and increasing per refresh (a ULID).
    pub version: String,
    pub generated_at: String,
    pub prompt_key: &'static str,
    pub prompt_etag: Option<String>,
    pub base_included: bool,
    pub documents: Vec<ManifestDoc>,
    pub total_characters: usize,
    pub estimated_tokens: u32,
    pub token_budget: u32,
    pub over_budget: bool,
    /// Keys of documents left out of the prompt because of the budget.
    pub omitted: Vec<String>,
    /// Anything a reader should know (no docs, budget exceeded).
    pub notes: Vec<String>,
}

/// Rebuilds the system prompt from the shared docs. Build once per cold start.
pub struct Refresher {
    blobs: Arc<dyn BlobStore>,
    ids: Ids,
    /// Token budget of the generated prompt (`COACH_PROMPT_MAX_TOKENS`).
    budget: u32,
}

/// The token budget of the generated prompt (`COACH_PROMPT_MAX_TOKENS`).
pub fn prompt_budget(env: &Env) -> Result<u32, ConfigError> {
    Ok(env.number("COACH_PROMPT_MAX_TOKENS")? as u32)
}

impl Refresher {
    /// Rebuilds prompts of at most `budget` tokens ([`prompt_budget`]).
    pub fn new(blobs: Arc<dyn BlobStore>, budget: u32) -> Self {
        Self { blobs, ids: Ids::new(), budget }
    }

    /// Rebuilds the prompt; `page_size` is the listing page size (S3's maximum is 1000).
    pub async fn refresh(&self, page_size: i32) -> Result<Manifest, Error> {
        let budget = self.budget;
        let mut listed: Vec<(String, u64)> = self
            .blobs
            .list(DOCS_PREFIX, page_size)
            .await?
            .into_iter()
            .filter(|o| o.key.to_ascii_lowercase().ends_with(".md"))
            .map(|o| (o.key, o.last_modified_ms))
            .collect();
        listed.sort();

        let base = self.read_optional(BASE_KEY).await?.map(|b| b.trim().to_owned()).filter(|b| !b.is_empty());
        let mut prompt = base.clone().unwrap_or_default();
        let mut used = estimate_tokens(&prompt);
        let mut documents = Vec::with_capacity(listed.len());
        let mut omitted = Vec::new();
        for (key, modified) in listed {
            // A doc deleted between the listing and now is simply not in this prompt.
            let Some(text) = self.read_optional(&key).await? else { continue };
            let text = text.trim().to_owned();
            let tokens = estimate_tokens(&text);
            let included = used + tokens <= budget;
            if included {
                if !prompt.is_empty() {
                    prompt.push_str("\n\n---\n\n");
                }
                prompt.push_str(&text);
                used += tokens;
            } else {
                omitted.push(key.clone());
            }
            documents.push(ManifestDoc {
                title: title_of(&key, &text),
                size_bytes: text.len() as u64,
                last_modified: rfc3339(modified),
                characters: text.chars().count(),
                estimated_tokens: tokens,
                included,
                key,
            });
        }

        let mut notes = Vec::new();
        if documents.is_empty() {
            notes.push(format!("{DOCS_PREFIX} has no markdown files"));
        }
        if prompt.is_empty() {
            notes.push("the system prompt is the built-in default".to_owned());
            prompt = DEFAULT_SYSTEM_PROMPT.to_owned();
        }
        if !omitted.is_empty() {
            notes.push(format!(
            "{} document(s) exceed the prompt budget of {budget} tokens and are left out of the prompt; retrieval still finds them",
            omitted.len()
        ));
        }

        let prompt_etag =
            self.blobs.put(SYSTEM_PROMPT_KEY, Bytes::from(prompt.clone()), "text/markdown; charset=utf-8").await?;
        let manifest = Manifest {
            version: self.ids.next().to_string(),
            generated_at: rfc3339(now_ms()),
            prompt_key: SYSTEM_PROMPT_KEY,
            prompt_etag,
            base_included: base.is_some(),
            total_characters: prompt.chars().count(),
            estimated_tokens: estimate_tokens(&prompt),
            token_budget: budget,
            over_budget: !omitted.is_empty(),
            documents,
            omitted,
            notes,
        };
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::internal(e.to_string()))?;
        self.blobs.put(MANIFEST_KEY, Bytes::from(json), "application/json").await?;
        tracing::info!(version = %manifest.version, documents = manifest.documents.len(), tokens = manifest.estimated_tokens, "system prompt rebuilt");
        Ok(manifest)
    }

    /// The object's text, or `None` when it does not exist.
    async fn read_optional(&self, key: &str) -> Result<Option<String>, Error> {
        match self.blobs.get(key).await? {
            Some(blob) => Ok(Some(String::from_utf8_lossy(&blob.body.bytes().await?).into_owned())),
            None => Ok(None),
        }
    }
}

/// The first `# ` heading, else the file name without `.md`.
fn title_of(key: &str, text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("# ").map(|t| t.trim().to_owned()))
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| {
            let name = key.rsplit('/').next().unwrap_or(key);
            name.strip_suffix(".md").or_else(|| name.strip_suffix(".MD")).unwrap_or(name).to_owned()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_come_from_the_first_heading_or_the_name() {
        assert_eq!(title_of("docs/a.md", "intro\n# Giving feedback\n"), "Giving feedback");
        assert_eq!(title_of("docs/team/weekly-planning.md", "no heading"), "weekly-planning");
    }
}
