//! How text becomes search terms: the same rules for documents and queries, in both index
//! stores (the S3 segments and PostgreSQL), so a query's words meet a document's.
//!
//! Words are runs of letters and digits, lowercased, of 2 to [`MAX_WORD_CHARS`] characters
//! (longer runs are data, not words: an encoded blob, a hash). In English
//! (the default) the Snowball project's English stop words are dropped and every word is
//! reduced to its Snowball (Porter 2) stem, so "measured", "measures" and "measurement"
//! meet. `COACH_SEARCH_LANGUAGE` names another Snowball language (stemmed, no stop list:
//! BM25's inverse document frequency already discounts a language's common words) or
//! `none` (words as they are).
//!
//! An index records the [`Analyzer::id`] it was built with; a reader that finds another
//! re-analyses that index's text on load, so changing the rules (or the language) never
//! leaves a document unfindable.

use rust_stemmers::{Algorithm, Stemmer};

use crate::{
    config::{ConfigError, Env},
    model::Chunk,
};

/// The longest word indexed, in characters (Lucene's limit; a PostgreSQL lexeme may not
/// pass 2 KB, which 255 characters of UTF-8 never do).
pub const MAX_WORD_CHARS: usize = 255;

/// Term frequencies count up to this many occurrences in a chunk (PostgreSQL's `tsvector`
/// keeps at most 256 positions of a word), so both stores score alike.
pub const MAX_TERM_FREQUENCY: u32 = 256;

/// The version of the rules below; part of [`Analyzer::id`]. Bump it on any change to what
/// a text's terms are.
const RULES: u32 = 2;

/// What an index built before analysers were recorded used (plural `s` removed, a short
/// stop list): never equal to a current [`Analyzer::id`].
pub const LEGACY_ID: &str = "1";

/// Turns text into search terms. Cheap to clone.
pub struct Analyzer {
    language: &'static str,
    algorithm: Option<Algorithm>,
    stemmer: Option<Stemmer>,
    stop_words: &'static [&'static str],
}

impl Clone for Analyzer {
    fn clone(&self) -> Self {
        Self::new(self.language, self.algorithm)
    }
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer").field("id", &self.id()).finish()
    }
}

impl PartialEq for Analyzer {
    fn eq(&self, other: &Self) -> bool {
        self.language == other.language
    }
}

const LANGUAGES: &[(&str, Option<Algorithm>)] = &[
    ("english", Some(Algorithm::English)),
    ("none", None),
    ("arabic", Some(Algorithm::Arabic)),
    ("danish", Some(Algorithm::Danish)),
    ("dutch", Some(Algorithm::Dutch)),
    ("finnish", Some(Algorithm::Finnish)),
    ("french", Some(Algorithm::French)),
    ("german", Some(Algorithm::German)),
    ("greek", Some(Algorithm::Greek)),
    ("hungarian", Some(Algorithm::Hungarian)),
    ("italian", Some(Algorithm::Italian)),
    ("norwegian", Some(Algorithm::Norwegian)),
    ("portuguese", Some(Algorithm::Portuguese)),
    ("romanian", Some(Algorithm::Romanian)),
    ("russian", Some(Algorithm::Russian)),
    ("spanish", Some(Algorithm::Spanish)),
    ("swedish", Some(Algorithm::Swedish)),
    ("tamil", Some(Algorithm::Tamil)),
    ("turkish", Some(Algorithm::Turkish)),
];

impl Eq for Analyzer {}

impl Default for Analyzer {
    fn default() -> Self {
        Self::new("english", Some(Algorithm::English))
    }
}

impl Analyzer {
    fn new(language: &'static str, algorithm: Option<Algorithm>) -> Self {
        let stop_words = if language == "english" { ENGLISH_STOP_WORDS } else { &[] };
        Self { language, algorithm, stemmer: algorithm.map(Stemmer::create), stop_words }
    }

    /// `COACH_SEARCH_LANGUAGE`: `english` (the default), another Snowball language, or `none`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let wanted = env.text("COACH_SEARCH_LANGUAGE").to_ascii_lowercase();
        match LANGUAGES.iter().find(|(name, _)| *name == wanted) {
            Some((name, algorithm)) => Ok(Self::new(name, *algorithm)),
            None => {
                let names: Vec<&str> = LANGUAGES.iter().map(|(n, _)| *n).collect();
                Err(ConfigError {
                    var: "COACH_SEARCH_LANGUAGE",
                    reason: format!("expected one of {}, got {wanted:?}", names.join(", ")),
                })
            }
        }
    }

    /// Names the rules and the language, as an index records them.
    pub fn id(&self) -> String {
        format!("{RULES}/{}", self.language)
    }

    /// The distinct terms of `text`, each weighted by how often it occurs there (a query
    /// that repeats a word stresses it: on CISI, weighing each distinct word once ranks 16%
    /// worse, docs/PERFORMANCE.md).
    pub fn weighted_terms(&self, text: &str) -> Vec<(String, f32)> {
        counted(self.terms(text).collect()).into_iter().map(|(term, count)| (term, count as f32)).collect()
    }

    /// What a chunk is indexed by: its heading path's and its text's terms, each with its
    /// frequency (at most [`MAX_TERM_FREQUENCY`]), sorted; and its length in terms.
    pub fn chunk_terms(&self, chunk: &Chunk) -> (Vec<(String, u32)>, u32) {
        let heading = chunk.heading.as_deref().unwrap_or_default();
        let terms: Vec<String> = self.terms(heading).chain(self.terms(&chunk.text)).collect();
        let length = terms.len() as u32;
        let mut counted = counted(terms);
        counted.iter_mut().for_each(|(_, count)| *count = (*count).min(MAX_TERM_FREQUENCY));
        (counted, length)
    }

    /// The search terms of `text`, in order, repeats kept.
    pub fn terms<'a>(&'a self, text: &'a str) -> impl Iterator<Item = String> + 'a {
        text.split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.chars().nth(1).is_some() && w.chars().nth(MAX_WORD_CHARS).is_none())
            .map(str::to_lowercase)
            .filter(|w| !self.stop_words.contains(&w.as_str()))
            .map(|w| match &self.stemmer {
                Some(stemmer) => match stemmer.stem(&w) {
                    std::borrow::Cow::Borrowed(_) => w,
                    std::borrow::Cow::Owned(stem) => stem,
                },
                None => w,
            })
            .filter(|w| !w.is_empty())
    }
}

/// The distinct `terms`, sorted, each with how often it occurs.
fn counted(mut terms: Vec<String>) -> Vec<(String, u32)> {
    terms.sort_unstable();
    let mut counted: Vec<(String, u32)> = Vec::new();
    for term in terms {
        match counted.last_mut() {
            Some((last, count)) if *last == term => *count += 1,
            _ => counted.push((term, 1)),
        }
    }
    counted
}

/// The Snowball project's English stop words (snowballstem.org, `english/stop.txt`), with the
/// pieces its contractions leave once split at the apostrophe ("don't": "don" and "t").
const ENGLISH_STOP_WORDS: &[&str] = &[
    "i",
    "me",
    "my",
    "myself",
    "we",
    "our",
    "ours",
    "ourselves",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
    "he",
    "him",
    "his",
    "himself",
    "she",
    "her",
    "hers",
    "herself",
    "it",
    "its",
    "itself",
    "they",
    "them",
    "their",
    "theirs",
    "themselves",
    "what",
    "which",
    "who",
    "whom",
    "this",
    "that",
    "these",
    "those",
    "am",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "have",
    "has",
    "had",
    "having",
    "do",
    "does",
    "did",
    "doing",
    "would",
    "should",
    "could",
    "ought",
    "cannot",
    "a",
    "an",
    "the",
    "and",
    "but",
    "if",
    "or",
    "because",
    "as",
    "until",
    "while",
    "of",
    "at",
    "by",
    "for",
    "with",
    "about",
    "against",
    "between",
    "into",
    "through",
    "during",
    "before",
    "after",
    "above",
    "below",
    "to",
    "from",
    "up",
    "down",
    "in",
    "out",
    "on",
    "off",
    "over",
    "under",
    "again",
    "further",
    "then",
    "once",
    "here",
    "there",
    "when",
    "where",
    "why",
    "how",
    "all",
    "any",
    "both",
    "each",
    "few",
    "more",
    "most",
    "other",
    "some",
    "such",
    "no",
    "nor",
    "not",
    "only",
    "own",
    "same",
    "so",
    "than",
    "too",
    "very",
    "let",
    "isn",
    "aren",
    "wasn",
    "weren",
    "hasn",
    "haven",
    "hadn",
    "doesn",
    "don",
    "didn",
    "won",
    "wouldn",
    "shan",
    "shouldn",
    "can",
    "couldn",
    "mustn",
    "ll",
    "ve",
    "re",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(analyzer: &Analyzer, text: &str) -> Vec<String> {
        analyzer.terms(text).collect()
    }

    #[test]
    fn english_drops_stop_words_and_stems() {
        let english = Analyzer::default();
        assert_eq!(
            terms(&english, "How do I handle missed Deadlines? The team's goals!"),
            vec!["handl", "miss", "deadlin", "team", "goal"]
        );
        // One stem for the forms of a word.
        for word in ["measured", "measures", "measurement", "measuring"] {
            assert_eq!(terms(&english, word), vec!["measur"], "{word}");
        }
        assert_eq!(terms(&english, "Why? Tell me more about that."), vec!["tell"]);
        assert_eq!(terms(&english, "x 42 R2D2 naïve Ünïcode"), vec!["42", "r2d2", "naïv", "ünïcode"]);
        assert!(terms(&english, "").is_empty());
        let long = "x".repeat(MAX_WORD_CHARS);
        assert_eq!(terms(&english, &format!("{long} {long}y ok")), vec![long.clone(), "ok".into()]);
    }

    #[test]
    fn the_language_is_configured_and_recorded() {
        let read = |vars: &[(&str, &str)]| crate::config::with(vars, Analyzer::from_env);
        assert_eq!(read(&[]).unwrap().id(), "2/english");
        let none = read(&[("COACH_SEARCH_LANGUAGE", "none")]).unwrap();
        assert_eq!(terms(&none, "The Measured"), vec!["the", "measured"]);
        let german = read(&[("COACH_SEARCH_LANGUAGE", "German")]).unwrap();
        assert_eq!(terms(&german, "Häuser"), vec!["haus"]);
        assert_ne!(german.id(), LEGACY_ID);
        assert_eq!(read(&[("COACH_SEARCH_LANGUAGE", "klingon")]).unwrap_err().var, "COACH_SEARCH_LANGUAGE");
    }
}
