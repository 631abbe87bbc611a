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

use aws_sdk_s3::primitives::ByteStream;
use serde::Serialize;

use crate::{
    aws::{classify, unavailable},
    error::Error,
    history::{now_ms, rfc3339},
    prompt::{estimate_tokens, DEFAULT_SYSTEM_PROMPT, SYSTEM_PROMPT_KEY},
    services::Services,
};

pub const DOCS_PREFIX: &str = "docs/";
pub const BASE_KEY: &str = "prompt/base.md";
pub const MANIFEST_KEY: &str = "prompt/manifest.json";

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

/// Rebuilds the prompt; `page_size` is the listing page size (S3's maximum is 1000).
pub async fn refresh(services: &Services, page_size: i32) -> Result<Manifest, Error> {
    let s3 = &services.aws.s3;
    let bucket = &services.config.bucket;
    let budget = services.config.prompt_budget_tokens;

    let mut listed = Vec::new();
    let mut pages = s3.list_objects_v2().bucket(bucket).prefix(DOCS_PREFIX).max_keys(page_size).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| unavailable("list docs", classify(&e)))?;
        for object in page.contents() {
            let Some(key) = object.key() else { continue };
            if key.to_ascii_lowercase().ends_with(".md") {
                let modified = object.last_modified().and_then(|t| t.to_millis().ok()).unwrap_or(0);
                listed.push((key.to_owned(), modified));
            }
        }
    }
    listed.sort();

    let base = read_optional(services, BASE_KEY).await?.map(|b| b.trim().to_owned()).filter(|b| !b.is_empty());
    let mut prompt = base.clone().unwrap_or_default();
    let mut used = estimate_tokens(&prompt);
    let mut documents = Vec::with_capacity(listed.len());
    let mut omitted = Vec::new();
    for (key, modified) in listed {
        // A doc deleted between the listing and now is simply not in this prompt.
        let Some(text) = read_optional(services, &key).await? else { continue };
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
            last_modified: rfc3339(u64::try_from(modified).unwrap_or(0)),
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

    let put = s3
        .put_object()
        .bucket(bucket)
        .key(SYSTEM_PROMPT_KEY)
        .content_type("text/markdown; charset=utf-8")
        .body(ByteStream::from(prompt.clone().into_bytes()))
        .send()
        .await
        .map_err(|e| unavailable("write prompt", classify(&e)))?;
    let manifest = Manifest {
        version: services.history.next_id().to_string(),
        generated_at: rfc3339(now_ms()),
        prompt_key: SYSTEM_PROMPT_KEY,
        prompt_etag: put.e_tag().map(str::to_owned),
        base_included: base.is_some(),
        total_characters: prompt.chars().count(),
        estimated_tokens: estimate_tokens(&prompt),
        token_budget: budget,
        over_budget: !omitted.is_empty(),
        documents,
        omitted,
        notes,
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Internal(e.to_string()))?;
    s3.put_object()
        .bucket(bucket)
        .key(MANIFEST_KEY)
        .content_type("application/json")
        .body(ByteStream::from(json))
        .send()
        .await
        .map_err(|e| unavailable("write manifest", classify(&e)))?;
    tracing::info!(version = %manifest.version, documents = manifest.documents.len(), tokens = manifest.estimated_tokens, "system prompt rebuilt");
    Ok(manifest)
}

/// The object's text, or `None` when it does not exist.
async fn read_optional(services: &Services, key: &str) -> Result<Option<String>, Error> {
    match services.aws.s3.get_object().bucket(&services.config.bucket).key(key).send().await {
        Ok(object) => {
            let bytes = object.body.collect().await.map_err(|_| Error::Unavailable("S3 read broke off".into()))?;
            Ok(Some(String::from_utf8_lossy(&bytes.into_bytes()).into_owned()))
        }
        Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
        Err(e) => Err(unavailable("read doc", classify(&e))),
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
