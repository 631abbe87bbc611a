//! Optional: a follow-up rewritten by the language model into a standalone search query
//! (`COACH_QUERY_REWRITE=llm`; off by default).
//!
//! Without it, a turn's query mixes the latest message with the earlier user turns
//! ([`crate::retrieval`]), which needs no model call. With it, a message that has earlier
//! turns in its session is first sent to the chat model with those turns, to be turned into
//! one query that names its topic in full; that query is searched alone. One short call
//! (one attempt, not retried: the fallback is good), after the turn is admitted (rate
//! limits and budgets), bounded by `COACH_QUERY_REWRITE_TIMEOUT_MS`; its usage is recorded in the ledger
//! with the turn's and counts against budgets like any call. On any failure (a timeout, an
//! error, an empty answer) the turn falls back to the mixed query, and says so in its log.
//! The conversation is reference material in the prompt, quoted between random boundary
//! lines, as the titles' prompt quotes the first exchange.

use std::time::Duration;

use crate::{
    config::{ConfigError, Env},
    llm::{Llm, LlmConfig, Prompt, Provider, Turn},
    model::{Author, ModelUsage},
    prompt,
    retry::Retries,
    secrets::Secrets,
    store::AwsClients,
};

/// Longest earlier turn put in the prompt, in characters (the latest message is whole:
/// chat bounds it).
const TURN_CHARS: usize = 1_000;
/// Longest query kept from the model's answer, in characters.
const QUERY_CHARS: usize = 400;

/// The rewrite: the chat model, asked once, within a timeout. Build once per cold start.
pub struct QueryRewrite {
    timeout: Duration,
    llm: Llm,
}

/// What a rewrite came to: the standalone query (none on failure) and what the call used.
#[derive(Debug, Clone, Default)]
pub struct Rewritten {
    pub query: Option<String>,
    pub used: Option<ModelUsage>,
}

/// The rewrite's settings, when it is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewriteConfig {
    /// `COACH_QUERY_REWRITE_TIMEOUT_MS`.
    pub timeout: Duration,
}

impl RewriteConfig {
    /// `COACH_QUERY_REWRITE` (`off`, the default: `None`, or `llm`, which needs a language
    /// model: `llm` is the chat model's settings) and `COACH_QUERY_REWRITE_TIMEOUT_MS`.
    pub fn from_env(env: &Env, llm: &LlmConfig) -> Result<Option<Self>, ConfigError> {
        let timeout = Duration::from_millis(env.number("COACH_QUERY_REWRITE_TIMEOUT_MS")?);
        match env.text("COACH_QUERY_REWRITE").to_ascii_lowercase().as_str() {
            "off" => Ok(None),
            "llm" if llm.provider == Provider::None => Err(ConfigError {
                var: "COACH_QUERY_REWRITE",
                reason: "llm needs a language model (COACH_LLM_PROVIDER is none)".into(),
            }),
            "llm" => Ok(Some(Self { timeout })),
            other => {
                Err(ConfigError { var: "COACH_QUERY_REWRITE", reason: format!("expected off or llm, got {other:?}") })
            }
        }
    }
}

impl QueryRewrite {
    /// The chat model (`llm`'s settings), asked once within the rewrite's timeout.
    pub fn new(
        config: RewriteConfig,
        llm: &LlmConfig,
        http: reqwest::Client,
        secrets: Secrets,
        aws: &AwsClients,
    ) -> Self {
        let timeout = config.timeout;
        let retries = Retries { max_attempts: 1, ..llm.retries };
        let config = LlmConfig { retries, timeout: llm.timeout.min(timeout), ..llm.clone() };
        Self { timeout, llm: Llm::new(config, http, secrets, aws) }
    }

    /// The standalone query of `latest` after the `earlier` user turns (most recent first).
    pub async fn standalone(&self, latest: &str, earlier: &[String]) -> Rewritten {
        let llm = &self.llm;
        let prompt = rewrite_prompt(latest, earlier);
        let completion = match tokio::time::timeout(self.timeout, llm.complete(&prompt, &[])).await {
            Ok(Ok(completion)) => completion,
            Ok(Err(e)) => {
                tracing::warn!(problem = %e, "query rewrite failed; searching the conversation");
                return Rewritten::default();
            }
            Err(_) => {
                tracing::warn!(
                    timeout_ms = self.timeout.as_millis() as u64,
                    "query rewrite timed out; searching the conversation"
                );
                return Rewritten::default();
            }
        };
        let used = Some(llm.used(&completion));
        if completion.intervened {
            // A guardrail's message is no query; the chat's own call meets the guardrail too.
            tracing::warn!("a guardrail intervened in the query rewrite; searching the conversation");
            return Rewritten { query: None, used };
        }
        let query = clean_query(&completion.text);
        if query.is_none() {
            tracing::warn!("query rewrite gave no query; searching the conversation");
        }
        Rewritten { query, used }
    }
}

/// The prompt of a rewrite: the earlier turns oldest first, then the latest message, each
/// quoted.
fn rewrite_prompt(latest: &str, earlier: &[String]) -> Prompt {
    let boundary = prompt::boundary();
    let mut system = String::from(
        "You turn the latest message of a conversation into one standalone search query for a document \
         search. Name the topic in full, using the earlier messages only to resolve what the latest one \
         refers to; if the latest message already stands on its own, repeat it. Answer with the query \
         alone, on one line, in the language of the conversation.",
    );
    system.push_str(&prompt::reference_rules(&boundary, "the conversation"));
    let mut data = String::from("The user's earlier messages, oldest first:\n");
    for turn in earlier.iter().rev() {
        data.push_str(&prompt::quote(&turn.chars().take(TURN_CHARS).collect::<String>(), &boundary));
    }
    data.push_str("The latest message:\n");
    data.push_str(&prompt::quote(latest, &boundary));
    let content = format!("{}\n\nThe search query:", prompt::fenced(&data, &boundary));
    Prompt { system, turns: vec![Turn { role: Author::User, content }], ..Prompt::default() }
}

/// The query in a model's answer: its first non-empty line, without surrounding quotes or a
/// label, cut to [`QUERY_CHARS`]; `None` when nothing is left.
fn clean_query(answer: &str) -> Option<String> {
    let line = answer.lines().map(str::trim).find(|l| !l.is_empty())?;
    let line = line.strip_prefix("Search query:").or_else(|| line.strip_prefix("Query:")).unwrap_or(line);
    let line = line.trim().trim_matches(|c: char| c == '"' || c == '\'' || c == '`' || c == '*').trim();
    let query: String = line.chars().take(QUERY_CHARS).collect();
    (!query.is_empty()).then_some(query)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_needs_a_model_and_a_known_mode() {
        let llm = |provider: &str| {
            crate::config::with(&[("COACH_LLM_PROVIDER", provider)], |env| {
                LlmConfig::from_env(env, crate::retry::Retries::from_env(env)?)
            })
            .unwrap()
        };
        let read = |vars: &[(&str, &str)], model: &LlmConfig| {
            crate::config::with(vars, |env| RewriteConfig::from_env(env, model))
        };
        assert_eq!(read(&[], &llm("openai")), Ok(None), "off by default");
        let on = read(&[("COACH_QUERY_REWRITE", "llm")], &llm("openai")).unwrap().unwrap();
        assert_eq!(on.timeout, Duration::from_secs(2));
        assert_eq!(read(&[("COACH_QUERY_REWRITE", "llm")], &llm("none")).unwrap_err().var, "COACH_QUERY_REWRITE");
        assert_eq!(read(&[("COACH_QUERY_REWRITE", "yes")], &llm("openai")).unwrap_err().var, "COACH_QUERY_REWRITE");
        let slow = [("COACH_QUERY_REWRITE", "llm"), ("COACH_QUERY_REWRITE_TIMEOUT_MS", "60000")];
        assert_eq!(read(&slow, &llm("openai")).unwrap_err().var, "COACH_QUERY_REWRITE_TIMEOUT_MS");
    }

    #[test]
    fn the_prompt_quotes_the_conversation_in_order() {
        let earlier = vec!["second question".to_owned(), "first question".to_owned()];
        let prompt = rewrite_prompt("And then?", &earlier);
        let content = &prompt.turns[0].content;
        let (first, second, latest) =
            (content.find("first question"), content.find("second question"), content.find("And then?"));
        assert!(first < second && second < latest && first.is_some(), "{content}");
        assert!(prompt.system.contains("standalone search query"));
    }

    #[test]
    fn the_answer_is_cleaned_to_one_query() {
        assert_eq!(
            clean_query("\n  \"feedback on missed deadlines\"\nmore"),
            Some("feedback on missed deadlines".into())
        );
        assert_eq!(clean_query("Search query: **team goals**"), Some("team goals".into()));
        assert_eq!(clean_query("  \n \"\" \n"), None);
        assert_eq!(clean_query(&"x".repeat(1000)).map(|q| q.len()), Some(QUERY_CHARS));
    }
}
