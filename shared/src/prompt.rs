//! The system prompt and the assembly of what the model is asked.
//!
//! The system prompt is `prompt/system_prompt.md` in the bucket (written by docs-refresh),
//! kept in memory and revalidated with a conditional GET (`If-None-Match`) at most every
//! `COACH_PROMPT_REVALIDATE_SECS`, so a refresh reaches warm instances within seconds. When
//! the object is missing, a built-in default is used (with a warning); when S3 fails, the
//! last good prompt is kept.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    config::{ConfigError, Env},
    llm::{Prompt, Turn},
    model::Passage,
    model::{Author, Message},
    store::{BlobStore, Revalidated},
};

/// Key of the generated system prompt.
pub const SYSTEM_PROMPT_KEY: &str = "prompt/system_prompt.md";

/// Used until docs-refresh has written a prompt.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are Coach, a supportive and practical workplace coach. \
Answer clearly and concisely, ask a clarifying question when the request is ambiguous, and ground \
your advice in the passages provided. When a passage supports a point, cite it as [n]. If the \
passages do not cover the question, say so and give general guidance.";

struct Cached {
    text: Arc<str>,
    etag: Option<String>,
    checked: Instant,
}

/// The current system prompt, cached per instance.
pub struct SystemPrompt {
    blobs: Arc<dyn BlobStore>,
    revalidate_after: Duration,
    cached: tokio::sync::Mutex<Option<Cached>>,
}

impl SystemPrompt {
    /// Revalidated at most every `COACH_PROMPT_REVALIDATE_SECS` (5 s by default).
    pub fn from_env(env: &Env, blobs: Arc<dyn BlobStore>) -> Result<Self, ConfigError> {
        let revalidate = Duration::from_secs(env.number("COACH_PROMPT_REVALIDATE_SECS", 5, 0, 3600)?);
        Ok(Self::new(blobs, revalidate))
    }

    pub fn new(blobs: Arc<dyn BlobStore>, revalidate_after: Duration) -> Self {
        Self { blobs, revalidate_after, cached: tokio::sync::Mutex::new(None) }
    }

    /// The prompt text; at most one read per revalidation interval.
    pub async fn current(&self) -> Arc<str> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            if c.checked.elapsed() < self.revalidate_after {
                return c.text.clone();
            }
        }
        let etag = cached.as_ref().and_then(|c| c.etag.clone());
        let fresh = match self.blobs.get_if_changed(SYSTEM_PROMPT_KEY, etag.as_deref()).await {
            Ok(Revalidated::Changed { etag, bytes }) => {
                let text = String::from_utf8_lossy(&bytes).trim().to_owned();
                tracing::info!(etag = etag.as_deref().unwrap_or(""), chars = text.len(), "loaded system prompt");
                Cached { text: text.into(), etag, checked: Instant::now() }
            }
            Ok(Revalidated::NotModified) => match cached.as_mut() {
                Some(c) => {
                    c.checked = Instant::now();
                    return c.text.clone();
                }
                None => return self.keep(&mut cached, "not modified, but nothing cached"),
            },
            Ok(Revalidated::Missing) => {
                tracing::warn!(key = SYSTEM_PROMPT_KEY, "no system prompt in the bucket; using the built-in default");
                Cached { text: DEFAULT_SYSTEM_PROMPT.into(), etag: None, checked: Instant::now() }
            }
            Err(e) => return self.keep(&mut cached, &e.to_string()),
        };
        let text = fresh.text.clone();
        *cached = Some(fresh);
        text
    }

    /// After a failed read: the last good prompt (retried next request), else the default.
    fn keep(&self, cached: &mut Option<Cached>, problem: &str) -> Arc<str> {
        tracing::warn!(problem, "cannot read the system prompt; using the last one known");
        match cached {
            Some(c) => c.text.clone(),
            None => DEFAULT_SYSTEM_PROMPT.into(),
        }
    }
}

/// Rough token estimate (about four characters a token for English), used for budgets.
pub fn estimate_tokens(text: &str) -> u32 {
    u32::try_from(text.len().div_ceil(4)).unwrap_or(u32::MAX)
}

/// Assembles the system text (prompt, user profile, numbered passages) and the turns
/// (history, then the message). History is dropped oldest first while the estimate exceeds
/// `budget_tokens`; turns always start with the user and alternate.
pub fn build(
    system_prompt: &str,
    profile: Option<&serde_json::Value>,
    passages: &[Passage],
    history: &[Message],
    message: &str,
    budget_tokens: u32,
) -> Prompt {
    let mut system = system_prompt.to_owned();
    if let Some(profile) = profile {
        system.push_str("\n\n## About the user\n");
        system.push_str(&profile.to_string());
    }
    if !passages.is_empty() {
        system.push_str("\n\n## Passages from the user's documents\nCite them as [n].\n");
        for (i, p) in passages.iter().enumerate() {
            system.push_str(&format!("\n[{}] {}\n{}\n", i + 1, p.source.title, p.text));
        }
    }
    let mut turns: Vec<Turn> = Vec::with_capacity(history.len() + 1);
    for m in history
        .iter()
        .map(|m| Turn { role: m.role, content: m.content.clone() })
        .chain([Turn { role: Author::User, content: message.to_owned() }])
    {
        match turns.last_mut() {
            Some(last) if last.role == m.role => {
                last.content.push_str("\n\n");
                last.content.push_str(&m.content);
            }
            _ => turns.push(m),
        }
    }
    let cost = |t: &Turn| estimate_tokens(&t.content) + 4;
    let mut total = estimate_tokens(&system) + turns.iter().map(cost).sum::<u32>();
    while turns.len() > 1 && (total > budget_tokens || turns[0].role == Author::Assistant) {
        total -= cost(&turns.remove(0));
    }
    Prompt { system, turns }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: Author, content: &str) -> Message {
        Message {
            message_id: String::new(),
            role,
            content: content.into(),
            sources: vec![],
            usage: None,
            model: None,
            created_at: String::new(),
        }
    }

    #[test]
    fn history_then_message_alternating_from_a_user_turn() {
        let history = [msg(Author::Assistant, "orphan reply"), msg(Author::User, "q1"), msg(Author::Assistant, "a1")];
        let prompt = build("sys", None, &[], &history, "q2", 10_000);
        let roles: Vec<_> = prompt.turns.iter().map(|t| (t.role, t.content.as_str())).collect();
        assert_eq!(roles, vec![(Author::User, "q1"), (Author::Assistant, "a1"), (Author::User, "q2")]);
    }

    #[test]
    fn budget_drops_oldest_history_first_never_the_message() {
        let long = "x".repeat(4000); // ~1000 tokens
        let history = [
            msg(Author::User, &long),
            msg(Author::Assistant, &long),
            msg(Author::User, "recent"),
            msg(Author::Assistant, "ok"),
        ];
        let prompt = build("sys", None, &[], &history, "now", 1_200);
        let contents: Vec<_> = prompt.turns.iter().map(|t| t.content.as_str()).collect();
        assert_eq!(contents, vec!["recent", "ok", "now"]);
        let prompt = build("sys", None, &[], &history, "now", 1);
        assert_eq!(prompt.turns.len(), 1);
        assert_eq!(prompt.turns[0].content, "now");
    }

    #[test]
    fn profile_and_passages_go_into_the_system_text() {
        let source = crate::model::Source {
            document_id: "d".into(),
            title: "goals.md".into(),
            chunk: 0,
            score: 1.0,
            snippet: "Three".into(),
        };
        let passages = [Passage { source, text: "Three goals.".into() }];
        let profile = serde_json::json!({"role": "team lead"});
        let prompt = build("sys", Some(&profile), &passages, &[], "q", 10_000);
        assert!(prompt.system.starts_with("sys\n\n## About the user\n{\"role\":\"team lead\"}"));
        assert!(prompt.system.contains("[1] goals.md\nThree goals."));
    }
}
