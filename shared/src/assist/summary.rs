//! `POST /summarize`: a document of the tenant (or a shared doc) or a given text, summarised
//! in a style.
//!
//! A document's text is put back together from its indexed chunks ([`reassemble`]: sections
//! under their heading paths, the overlap between neighbouring chunks removed), so only a
//! `ready` document can be summarised. A text that fits the model's input budget
//! (`COACH_LLM_CONTEXT_TOKENS` less the answer's `COACH_LLM_MAX_OUTPUT_TOKENS`) is summarised
//! in one call. A longer one is cut into parts that each fit (at most
//! `COACH_SUMMARIZE_MAX_PARTS`, else 413), each part summarised ([`MAP_PARALLELISM`] calls at
//! a time), and the part summaries combined into one in the asked style; summaries too many
//! to combine at once are combined in groups first. The text is reference material in every
//! prompt: quoted, between random boundary lines, never read as instructions.
//!
//! With the `none` provider the summary is extractive ([`extractive`]): the text's own
//! sentences that best cover its most frequent words, in their order.

use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::{add_usage, input_budget, offline, required_text, within, Assist, Tally};
use crate::{
    auth::Principal,
    deadline::Deadline,
    error::Error,
    ingest::chunk::{chunk_text, ChunkConfig},
    llm::{Prompt, Turn},
    model::{Author, Chunk, Scope, Status, Surface, Usage},
    prompt::{self, estimate_tokens},
};

/// Part summaries asked for at once.
pub const MAP_PARALLELISM: usize = 4;
/// Tokens of a prompt that are not the text: instructions and the reference rules.
const PROMPT_OVERHEAD_TOKENS: u32 = 400;
/// The shortest overlap between two chunks that is taken for one (a shorter match of the end
/// of a chunk and the start of the next may be chance).
const MIN_OVERLAP_BYTES: usize = 16;

/// How the summary is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Style {
    /// One short paragraph.
    #[default]
    Concise,
    /// A few paragraphs keeping the structure and every key point.
    Detailed,
    /// A list of bullet points.
    Bullets,
}

impl Style {
    fn instruction(self) -> &'static str {
        match self {
            Style::Concise => "Summarise the text in one short paragraph of at most 120 words.",
            Style::Detailed => {
                "Summarise the text in a few paragraphs of at most 500 words in all, keeping its structure and \
                 every key point, name, number and decision."
            }
            Style::Bullets => {
                "Summarise the text as 5 to 10 bullet points, one line each, each line starting with \"- \"."
            }
        }
    }

    /// Sentences an extractive summary of this style keeps.
    fn sentences(self) -> usize {
        match self {
            Style::Concise => 3,
            Style::Bullets => 5,
            Style::Detailed => 8,
        }
    }
}

/// Body of `POST /summarize`: a document or a text (exactly one), and a style.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryInput {
    #[serde(default)]
    pub document_id: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub style: Style,
}

/// The answer to `POST /summarize`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub summary: String,
    pub style: Style,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_id: Option<String>,
    /// Characters of the text summarised, and of the summary.
    pub input_characters: usize,
    pub output_characters: usize,
    /// How many parts the text was summarised in (1: whole).
    pub parts: usize,
    pub usage: Usage,
    pub model: String,
    /// Set when no model wrote the summary: what it is instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// A guardrail intervened: the answer is its message (audited by the caller's handler).
    #[serde(skip)]
    pub intervened: bool,
}

/// The label of a summary made without a model.
pub const EXTRACTIVE_NOTE: &str = "No language model is configured: this is an extractive summary, the sentences \
of the text that best cover its most frequent words, in their order.";

impl Assist {
    /// Summarises the document or text `input` names, for `who`, asked through `via`.
    pub async fn summarize(
        &self,
        who: &Principal,
        via: Surface,
        input: SummaryInput,
        deadline: Deadline,
    ) -> Result<Summary, Error> {
        let style = input.style;
        let source = match (input.document_id, input.text) {
            (Some(id), None) => Source::Document(crate::documents::document_scope(&who.tenant, &id)?, id),
            (None, Some(text)) => {
                Source::Text(required_text(&text, "text", self.config.summarize_max_chars)?.to_owned())
            }
            _ => return Err(Error::BadRequest("give either document_id or text".into())),
        };
        let tally = Tally::via(via);
        let summary = within(self, deadline, "the summary", async {
            let (document_id, text) = match source {
                Source::Text(text) => {
                    self.admission.admit(who).await?;
                    (None, text)
                }
                Source::Document(scope, id) => {
                    let ((), text) = tokio::try_join!(self.admission.admit(who), self.document_text(who, &scope, &id))?;
                    (Some(id), text)
                }
            };
            let input_characters = text.chars().count();
            let (summary, parts, usage, model, note) = if offline(self) {
                (extractive(&text, style), 1, Usage::default(), "none".to_owned(), Some(EXTRACTIVE_NOTE.to_owned()))
            } else {
                let (summary, parts, usage, model) = self.with_model(&tally, &text, style).await?;
                (summary, parts, usage, model, None)
            };
            Ok(Summary {
                output_characters: summary.chars().count(),
                summary,
                style,
                document_id,
                input_characters,
                parts,
                usage,
                model,
                note,
                intervened: tally.intervened(),
            })
        })
        .await;
        tally.record(self, who).await;
        summary
    }

    /// A ready document's text, from its indexed chunks: one `who` may read (else 404, as for
    /// a document that does not exist).
    async fn document_text(&self, who: &Principal, scope: &Scope, id: &str) -> Result<String, Error> {
        let missing = || Error::NotFound("no such document".into());
        let record = self.records.get(scope, id).await?;
        // The shared docs are every caller's.
        let record = match scope {
            Scope::Global => record,
            Scope::Tenant(_) => crate::documents::readable(who, record),
        };
        let record = record.ok_or_else(missing)?;
        if record.status != Status::Ready {
            return Err(Error::Conflict(format!(
                "the document is {}; it can be summarised once it is ready",
                record.status.as_str()
            )));
        }
        let indexed = self.index.document(scope, id).await?.ok_or_else(missing)?;
        let text = reassemble(&indexed.chunks);
        if text.trim().is_empty() {
            return Err(Error::Conflict("the document has no text to summarise".into()));
        }
        Ok(text)
    }

    /// The model's summary of `text`: (summary, parts, usage, model).
    async fn with_model(
        &self,
        tally: &Tally,
        text: &str,
        style: Style,
    ) -> Result<(String, usize, Usage, String), Error> {
        let budget = input_budget(self).saturating_sub(PROMPT_OVERHEAD_TOKENS).max(100);
        let parts = split(text, budget);
        let count = parts.len();
        if count > self.config.summarize_max_parts {
            return Err(Error::PayloadTooLarge(format!(
                "the text is too long to summarise: it needs {count} parts of the model's context, and the limit \
                 is {} (COACH_SUMMARIZE_MAX_PARTS)",
                self.config.summarize_max_parts
            )));
        }
        let mut usage = Usage::default();
        if count == 1 {
            let completion = ask(self, tally, &[("Text", text)], style.instruction()).await?;
            add_usage(&mut usage, completion.usage);
            return Ok((completion.text.trim().to_owned(), 1, usage, completion.model));
        }
        // Map: each part on its own, in words enough for the combination to fit.
        let words = (budget as usize * 3 / 4 / count).clamp(60, 400);
        let maps = parts.iter().enumerate().map(|(i, part)| {
            let instruction = format!(
                "This is part {} of {count} of a longer text. Summarise this part in at most {words} words, keeping \
                 every key point, name, number and decision: the summaries of all parts will be combined.",
                i + 1
            );
            async move { ask(self, tally, &[("Part", part.as_str())], &instruction).await }
        });
        // Collected first: a lazily mapped iterator of borrowing futures trips the compiler's
        // proof that the handler's future is `Send`.
        let maps: Vec<_> = maps.collect();
        let mapped: Vec<_> = futures_util::stream::iter(maps).buffered(MAP_PARALLELISM).try_collect().await?;
        if let Some(stopped) = guardrails_message(&mapped) {
            return Ok((stopped, count, total_usage(&mapped), model_of(&mapped)));
        }
        let mut summaries = Vec::with_capacity(mapped.len());
        for completion in mapped {
            add_usage(&mut usage, completion.usage);
            summaries.push(completion.text.trim().to_owned());
        }
        // Reduce: in groups that fit, until all fit one prompt.
        let combine = format!(
            "These are summaries of consecutive parts of one text, in order. Combine them into one summary of the \
             whole text. {}",
            style.instruction()
        );
        loop {
            let total: u32 = summaries.iter().map(|s| estimate_tokens(s) + 4).sum();
            if total <= budget || summaries.len() == 1 {
                let labelled: Vec<(&str, &str)> = summaries.iter().map(|s| ("Summary of a part", s.as_str())).collect();
                let completion = ask(self, tally, &labelled, &combine).await?;
                add_usage(&mut usage, completion.usage);
                return Ok((completion.text.trim().to_owned(), count, usage, completion.model));
            }
            let groups = groups_within(&summaries, budget);
            if groups.len() == summaries.len() {
                // Each summary is as long as the budget allows for one: cut them to fit.
                let share = budget as usize * 4 / summaries.len();
                summaries = summaries.iter().map(|s| cut(s, share)).collect();
                continue;
            }
            let merges = groups.into_iter().map(|group| {
                let labelled: Vec<(&str, &str)> = group.iter().map(|s| ("Summary of a part", s.as_str())).collect();
                let instruction = format!(
                    "These are summaries of consecutive parts of one text, in order. Combine them into one summary \
                     of at most {words} words, keeping every key point, name, number and decision."
                );
                async move { ask(self, tally, &labelled, &instruction).await }
            });
            let merges: Vec<_> = merges.collect();
            let merged: Vec<_> = futures_util::stream::iter(merges).buffered(MAP_PARALLELISM).try_collect().await?;
            if let Some(stopped) = guardrails_message(&merged) {
                add_usage(&mut usage, total_usage(&merged));
                return Ok((stopped, count, usage, model_of(&merged)));
            }
            summaries = Vec::with_capacity(merged.len());
            for completion in merged {
                add_usage(&mut usage, completion.usage);
                summaries.push(completion.text.trim().to_owned());
            }
        }
    }
}

/// The message of the first guardrail that intervened in `completions`: the summary, for
/// nothing is summarised past it.
fn guardrails_message(completions: &[crate::llm::Completion]) -> Option<String> {
    completions.iter().find(|c| c.intervened).map(|c| c.text.trim().to_owned())
}

fn total_usage(completions: &[crate::llm::Completion]) -> Usage {
    let mut usage = Usage::default();
    for completion in completions {
        add_usage(&mut usage, completion.usage);
    }
    usage
}

fn model_of(completions: &[crate::llm::Completion]) -> String {
    completions.first().map(|c| c.model.clone()).unwrap_or_default()
}

enum Source {
    Document(Scope, String),
    Text(String),
}

/// One model call: the system rules of summarising, the `material` (label, text) quoted
/// between boundary lines, then the instruction.
async fn ask(
    assist: &Assist,
    tally: &Tally,
    material: &[(&str, &str)],
    instruction: &str,
) -> Result<crate::llm::Completion, Error> {
    let boundary = prompt::boundary();
    let mut system = String::from(
        "You summarise text faithfully: only what the text says, without outside facts or opinions, in the \
         language of the text. Answer with the summary alone.",
    );
    system.push_str(&prompt::reference_rules(&boundary, "the text to summarise"));
    let mut data = String::new();
    for (i, (label, text)) in material.iter().enumerate() {
        data.push_str(&format!("{label} {}:\n", i + 1));
        data.push_str(&prompt::quote(text, &boundary));
    }
    let content = format!("{}\n\n{instruction}", prompt::fenced(&data, &boundary));
    let prompt = Prompt { system, turns: vec![Turn { role: Author::User, content }], ..Prompt::default() };
    tally.complete(assist, &prompt, &[]).await
}

/// `text` in parts of at most about `budget` estimated tokens each, cut at paragraph,
/// sentence or word boundaries.
pub fn split(text: &str, budget: u32) -> Vec<String> {
    let bytes = text.len().max(1);
    let chars = text.chars().count().max(1);
    // Tokens are estimated from bytes; parts are cut in characters.
    let size = (budget as usize * 4 * chars / bytes).max(100);
    chunk_text(text, ChunkConfig { size, overlap: 0 }).into_iter().map(|c| c.text).collect()
}

/// Consecutive runs of `summaries` whose estimated tokens fit `budget` together (a summary
/// longer than the budget is a run of its own).
fn groups_within(summaries: &[String], budget: u32) -> Vec<&[String]> {
    let mut groups = Vec::new();
    let (mut start, mut total) = (0, 0);
    for (i, s) in summaries.iter().enumerate() {
        let cost = estimate_tokens(s) + 4;
        if i > start && total + cost > budget {
            groups.push(&summaries[start..i]);
            (start, total) = (i, 0);
        }
        total += cost;
    }
    groups.push(&summaries[start..]);
    groups
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn cut(text: &str, max: usize) -> String {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// A document's text from its chunks: each section (a run of chunks with one heading path)
/// under its heading path, the overlap between neighbouring chunks of a section removed.
pub fn reassemble(chunks: &[Chunk]) -> String {
    let mut text = String::new();
    let mut previous: Option<&Chunk> = None;
    for chunk in chunks {
        match previous {
            Some(p) if p.heading == chunk.heading => {
                let rest = &chunk.text[overlap(&p.text, &chunk.text)..];
                if !rest.trim().is_empty() {
                    text.push(' ');
                    text.push_str(rest.trim_start());
                }
            }
            _ => {
                if !text.is_empty() {
                    text.push_str("\n\n");
                }
                if let Some(heading) = &chunk.heading {
                    text.push_str(heading);
                    text.push_str("\n\n");
                }
                text.push_str(&chunk.text);
            }
        }
        previous = Some(chunk);
    }
    text
}

/// Bytes at the start of `next` that repeat the end of `previous` (the chunker's overlap): the
/// longest such run of at least [`MIN_OVERLAP_BYTES`] starting in the second half of
/// `previous` (an overlap is less than half a chunk), else 0.
fn overlap(previous: &str, next: &str) -> usize {
    let Some(first) = next.chars().next() else { return 0 };
    let from = previous.len() / 2;
    previous
        .match_indices(first)
        .map(|(at, _)| at)
        .filter(|&at| at >= from && previous.len() - at >= MIN_OVERLAP_BYTES)
        .find(|&at| next.starts_with(&previous[at..]))
        .map_or(0, |at| previous.len() - at)
}

/// Words too common to say what a text is about.
const STOP_WORDS: &[&str] = &[
    "the", "and", "for", "are", "but", "not", "you", "your", "all", "any", "can", "her", "was", "one", "our", "out",
    "has", "had", "his", "how", "its", "who", "did", "get", "may", "him", "she", "they", "them", "their", "there",
    "this", "that", "these", "those", "with", "from", "have", "were", "will", "would", "could", "should", "what",
    "when", "where", "which", "while", "about", "into", "than", "then", "also", "been", "being", "each", "more",
    "most", "some", "such", "only", "other", "over", "very", "just", "because", "after", "before",
];

fn content_words(sentence: &str) -> Vec<String> {
    sentence
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 3)
        .map(str::to_lowercase)
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .collect()
}

/// Longest sentence an extractive summary quotes, in characters.
const MAX_SENTENCE_CHARS: usize = 400;

/// An extractive summary (after SumBasic): sentences of at least four words are scored by
/// the mean frequency of their content words in the whole text; the best is taken, the
/// frequencies of its words halved (so the next adds something new), and so on for the style's number of
/// sentences, which are then given in the text's order (as bullet points for `bullets`).
pub fn extractive(text: &str, style: Style) -> String {
    let sentences = sentences(text);
    let words: Vec<Vec<String>> = sentences.iter().map(|s| content_words(s)).collect();
    let mut frequency: std::collections::HashMap<&str, f64> = std::collections::HashMap::new();
    let total = words.iter().map(Vec::len).sum::<usize>().max(1) as f64;
    for w in words.iter().flatten() {
        *frequency.entry(w.as_str()).or_default() += 1.0 / total;
    }
    let mut chosen: Vec<usize> = Vec::new();
    while chosen.len() < style.sentences() {
        let best = (0..sentences.len())
            .filter(|i| !chosen.contains(i) && !words[*i].is_empty() && sentences[*i].split_whitespace().count() >= 4)
            .map(|i| (i, words[i].iter().map(|w| frequency[w.as_str()]).sum::<f64>() / words[i].len() as f64))
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
        let Some((i, _)) = best else { break };
        chosen.push(i);
        let unique: std::collections::HashSet<&str> = words[i].iter().map(String::as_str).collect();
        for w in unique {
            if let Some(f) = frequency.get_mut(w) {
                *f /= 2.0;
            }
        }
    }
    chosen.sort_unstable();
    let quoted = chosen.iter().map(|&i| {
        let s = sentences[i].as_str();
        match s.char_indices().nth(MAX_SENTENCE_CHARS) {
            Some((at, _)) => format!("{}…", s[..at].trim_end()),
            None => s.to_owned(),
        }
    });
    match style {
        Style::Bullets => quoted.map(|s| format!("- {s}")).collect::<Vec<_>>().join("\n"),
        _ => quoted.collect::<Vec<_>>().join(" "),
    }
}

/// The sentences of `text`: each line split after `.`, `!` or `?` followed by a space.
fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut start = 0;
        let chars: Vec<(usize, char)> = line.char_indices().collect();
        for (k, &(at, c)) in chars.iter().enumerate() {
            let ends = matches!(c, '.' | '!' | '?') && chars.get(k + 1).is_some_and(|(_, n)| n.is_whitespace());
            if ends {
                out.push(line[start..at + c.len_utf8()].trim().to_owned());
                start = at + c.len_utf8();
            }
        }
        out.push(line[start..].trim().to_owned());
    }
    out.retain(|s| !s.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(heading: Option<&str>, text: &str) -> Chunk {
        Chunk { heading: heading.map(str::to_owned), text: text.to_owned(), span: None }
    }

    #[test]
    fn a_document_is_put_back_together_from_overlapping_chunks() {
        let text = "Feedback works best when it is specific. Name the behaviour and its effect. \
                    Then ask how the other person sees it, and listen to the answer before you reply.";
        let config = ChunkConfig { size: 80, overlap: 35 };
        let chunks = chunk_text(text, config);
        assert!(chunks.len() > 2, "{chunks:?}");
        assert_eq!(reassemble(&chunks), text);
        // Sections keep their heading paths, each once.
        let sections = [
            chunk(Some("Feedback"), "Be specific and kind."),
            chunk(Some("Feedback > Praise"), "Praise in public, and say why it mattered."),
            chunk(Some("Feedback > Praise"), "say why it mattered. Do it soon."),
        ];
        assert_eq!(
            reassemble(&sections),
            "Feedback\n\nBe specific and kind.\n\nFeedback > Praise\n\nPraise in public, and say why it mattered. \
             Do it soon."
        );
        // Chunks that only share a word are not taken to overlap.
        let plain = [chunk(None, "We met the team"), chunk(None, "team leads on Monday.")];
        assert_eq!(reassemble(&plain), "We met the team team leads on Monday.");
    }

    #[test]
    fn parts_fit_the_budget_and_keep_every_word() {
        let text = "Word ".repeat(5_000);
        let parts = split(&text, 500);
        assert!(parts.len() >= 10, "{}", parts.len());
        assert!(parts.iter().all(|p| estimate_tokens(p) <= 500));
        assert_eq!(parts.iter().map(|p| p.split_whitespace().count()).sum::<usize>(), 5_000);
        assert_eq!(split("short", 500), vec!["short".to_owned()]);
    }

    #[test]
    fn summaries_are_grouped_within_the_budget() {
        let summaries: Vec<String> = (0..5).map(|_| "x".repeat(400)).collect(); // 104 tokens each with framing
        let groups = groups_within(&summaries, 250);
        assert_eq!(groups.iter().map(|g| g.len()).collect::<Vec<_>>(), vec![2, 2, 1]);
        let huge = vec!["x".repeat(4_000), "y".repeat(4_000)];
        assert_eq!(groups_within(&huge, 250).len(), 2, "a summary over the budget is a group of its own");
    }

    #[test]
    fn an_extractive_summary_takes_the_central_sentences_in_order() {
        let text = "Feedback helps people grow. The weather was nice on Tuesday afternoon. \
                    Good feedback is specific feedback about behaviour. \
                    Feedback should be given soon after the behaviour. Lunch was pasta with a tomato sauce.\n\
                    Heading line\n\
                    Ask for feedback on your own feedback too.";
        let concise = extractive(text, Style::Concise);
        let picked: Vec<&str> = concise.split_inclusive(". ").map(str::trim).collect();
        assert_eq!(picked.len(), 3, "{concise}");
        assert!(picked.iter().all(|s| s.to_lowercase().contains("feedback")), "{concise}");
        let at = |s: &str| text.find(s).unwrap();
        assert!(picked.windows(2).all(|w| at(w[0]) < at(w[1])), "in the text's order: {concise}");
        let bullets = extractive(text, Style::Bullets);
        assert_eq!(bullets.lines().count(), 5);
        assert!(bullets.lines().all(|l| l.starts_with("- ")));
        assert!(!bullets.contains("Heading line"), "short lines are not sentences");
        assert_eq!(extractive("", Style::Detailed), "");
    }
}
