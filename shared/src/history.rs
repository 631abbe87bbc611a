//! Chat history: sessions and their messages, always scoped to the caller.
//!
//! Every read and write goes through the caller's [`Owner`] (tenant and user from the
//! verified token), so a session id from another user or tenant does not exist for this
//! caller: a 404, never their data. Ids are ULIDs, so messages sort by time. Messages and
//! sessions expire after `COACH_HISTORY_RETENTION_DAYS`; a session's expiry moves forward
//! with every message. How they are stored is [`HistoryStore`]'s business.
//!
//! A reply can be rated by its user ([`History::rate`]): up or down, a reason from a fixed
//! set, a comment of at most [`MAX_COMMENT_CHARS`]. The rating is kept on the message and
//! counted for the tenant's usage report, on the day it was given; rating again replaces it
//! (and moves the count).

use std::{sync::Arc, time::Duration};

use crate::{
    auth::Principal,
    config::{ConfigError, Env},
    error::Error,
    ids::{parse_id, rfc3339, Ids},
    model::{Author, Feedback, FeedbackReason, Message, NewMessage, Page, Rating, Session},
    store::{
        Appended, CounterChange, FeedbackCounter, HistoryStore, NewSession, Renamer, SessionWrite, StoreError,
        StoredMessage, TurnRecord, TurnWrite,
    },
};

const TITLE_CHARS: usize = 80;
/// Words of the first message a session's first title keeps.
const TITLE_WORDS: usize = 8;
/// Longest title a user or a model may give, in characters.
pub const MAX_TITLE_CHARS: usize = 120;
/// The title of a session created without one, until its first exchange.
pub const DEFAULT_TITLE: &str = "New conversation";
/// Longest comment on a rating, in characters.
pub const MAX_COMMENT_CHARS: usize = 1000;

/// Body of `PUT /sessions/{id}/messages/{message_id}/feedback`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackInput {
    pub rating: Rating,
    #[serde(default)]
    pub reason: Option<FeedbackReason>,
    #[serde(default)]
    pub comment: Option<String>,
}

/// Which session a message goes into.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// The caller's existing session (404 if it is gone).
    Session(&'a str),
    /// A new session, titled from this text.
    NewSession { title: &'a str },
}

/// Session and message storage. Build once per cold start.
pub struct History {
    store: Arc<dyn HistoryStore>,
    ids: Ids,
    retention: Duration,
}

/// How long sessions and their messages are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryConfig {
    /// `COACH_HISTORY_RETENTION_DAYS` (90).
    pub retention: Duration,
}

impl HistoryConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self { retention: Duration::from_secs(86_400 * env.number("COACH_HISTORY_RETENTION_DAYS")?) })
    }
}

impl History {
    pub fn new(store: Arc<dyn HistoryStore>, config: HistoryConfig) -> Self {
        Self { store, ids: Ids::new(), retention: config.retention }
    }

    /// Creates a session titled `title` (checked as [`History::rename`] checks it), or without
    /// one `New conversation`, which its first exchange replaces.
    pub async fn create_session(&self, who: &Principal, title: Option<&str>) -> Result<Session, Error> {
        let id = self.ids.next();
        let now = id.timestamp_ms();
        let (title, auto_title) = match title {
            Some(title) => (checked_title(title)?, false),
            None => (DEFAULT_TITLE.to_owned(), true),
        };
        let session_id = id.to_string();
        let expires_at = self.expiry(now);
        let new = NewSession { session_id: &session_id, title: &title, auto_title, now_ms: now, expires_at };
        self.store.create_session(who.owner(), new).await?;
        let (created_at, updated_at) = (rfc3339(now), rfc3339(now));
        Ok(Session { session_id, title, created_at, updated_at, message_count: 0, auto_title })
    }

    /// Renames the caller's session (`PATCH /sessions/{id}`): the title is the user's from
    /// then on, never replaced by an automatic one. 400 for an empty title, a longer one than
    /// [`MAX_TITLE_CHARS`] or one with control characters; 404 for no such session.
    pub async fn rename(&self, who: &Principal, session_id: &str, title: &str) -> Result<Session, Error> {
        let id = parse_id(session_id, "session")?.to_string();
        let title = checked_title(title)?;
        match self.store.rename_session(who.owner(), &id, &title, Renamer::User).await {
            Ok(_) => self.session(who, &id).await,
            Err(StoreError::ConditionFailed { .. }) => Err(session_not_found()),
            Err(e) => Err(e.into()),
        }
    }

    /// Titles a session from its first exchange, unless its user named it meanwhile: whether
    /// the title was set.
    pub async fn set_auto_title(&self, who: &Principal, session_id: &str, title: &str) -> Result<bool, Error> {
        let id = parse_id(session_id, "session")?.to_string();
        let Some(title) = clean_title(title) else { return Ok(false) };
        Ok(self.store.rename_session(who.owner(), &id, &title, Renamer::Auto).await?)
    }

    /// The caller's session, or 404.
    pub async fn session(&self, who: &Principal, session_id: &str) -> Result<Session, Error> {
        let id = parse_id(session_id, "session")?.to_string();
        self.store.session(who.owner(), &id).await?.ok_or_else(session_not_found)
    }

    /// The caller's sessions, most recently active first.
    pub async fn sessions(&self, who: &Principal, limit: i32, cursor: Option<&str>) -> Result<Page<Session>, Error> {
        Ok(self.store.sessions(who.owner(), limit, cursor).await?)
    }

    /// Stores a message (and, for a new session, the session) in one write; returns the
    /// session id and the message with its new id.
    pub async fn add_message(
        &self,
        who: &Principal,
        into: Target<'_>,
        new: NewMessage<'_>,
    ) -> Result<(String, Message), Error> {
        self.add_turn_message(who, into, new, TurnWrite::None)
            .await?
            .ok_or_else(|| Error::internal("a message without a turn record was refused as a retry"))
    }

    /// Like [`History::add_message`], with what `turn` asks of the turn's record in the same
    /// write: `None` when nothing was stored because the turn's key is taken (a retry).
    pub async fn add_turn_message(
        &self,
        who: &Principal,
        into: Target<'_>,
        new: NewMessage<'_>,
        turn: TurnWrite<'_>,
    ) -> Result<Option<(String, Message)>, Error> {
        let NewMessage { role, content, sources, usage, model, incomplete } = new;
        let (session_id, title) = match into {
            Target::Session(id) => (parse_id(id, "session")?.to_string(), None),
            Target::NewSession { title } => (self.ids.next().to_string(), Some(title_from(title))),
        };
        let id = self.ids.next();
        let now = id.timestamp_ms();
        let message_id = id.to_string();
        let session = match &title {
            None => SessionWrite::Existing(&session_id),
            Some(title) => SessionWrite::New(NewSession {
                session_id: &session_id,
                title,
                auto_title: true,
                now_ms: now,
                expires_at: self.expiry(now),
            }),
        };
        let stored = StoredMessage {
            message_id: &message_id,
            role,
            content,
            sources,
            usage,
            model,
            incomplete,
            now_ms: now,
            expires_at: self.expiry(now),
        };
        let appended = self.store.append(who.owner(), session, stored, turn).await.map_err(|e| match e {
            StoreError::ConditionFailed { .. } if title.is_none() => session_not_found(),
            other => other.into(),
        })?;
        if appended == Appended::Retry {
            return Ok(None);
        }
        let message = Message {
            message_id,
            role,
            content: content.to_owned(),
            sources: sources.to_vec(),
            usage,
            model: model.map(str::to_owned),
            incomplete,
            created_at: rfc3339(now),
            feedback: None,
        };
        Ok(Some((session_id, message)))
    }

    /// The record of the caller's turn with this key, if it is live.
    pub async fn turn(&self, who: &Principal, key: &str) -> Result<Option<TurnRecord>, Error> {
        Ok(self.store.turn(who.owner(), key).await?)
    }

    /// Moves the lease of the caller's turn from `from` to `to`; `false` when another
    /// attempt holds it or it is answered.
    pub async fn move_lease(&self, who: &Principal, key: &str, from: u64, to: u64) -> Result<bool, Error> {
        Ok(self.store.move_lease(who.owner(), key, from, to).await?)
    }

    /// One message of the caller's session.
    pub async fn message(&self, who: &Principal, session_id: &str, message_id: &str) -> Result<Option<Message>, Error> {
        Ok(self.store.message(who.owner(), session_id, message_id).await?)
    }

    /// The last `limit` messages of a session, oldest first (one page, newest first, reversed).
    pub async fn recent_messages(&self, who: &Principal, session_id: &str, limit: i32) -> Result<Vec<Message>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut page = self.messages(who, session_id, limit, None).await?.items;
        page.reverse();
        Ok(page)
    }

    /// A page of a session's messages, newest first; the cursor leads to older ones.
    pub async fn messages(
        &self,
        who: &Principal,
        session_id: &str,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Page<Message>, Error> {
        let id = parse_id(session_id, "session")?.to_string();
        Ok(self.store.messages(who.owner(), &id, limit, cursor).await?)
    }

    /// Rates a reply of the caller's session (replacing an earlier rating): the message with
    /// its feedback. 404 for no such message, 400 for a message of the user's own, 409 when
    /// another rating of it landed meanwhile.
    pub async fn rate(
        &self,
        who: &Principal,
        session_id: &str,
        message_id: &str,
        input: FeedbackInput,
    ) -> Result<Message, Error> {
        let session_id = parse_id(session_id, "session")?.to_string();
        let message_id = parse_id(message_id, "message")?.to_string();
        let comment = match input.comment.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
            Some(comment) => {
                let chars = comment.chars().count();
                if chars > MAX_COMMENT_CHARS {
                    return Err(Error::PayloadTooLarge(format!(
                        "comment has {chars} characters; the limit is {MAX_COMMENT_CHARS}"
                    )));
                }
                // Line breaks and tabs are text; other control characters are not.
                Some(comment.chars().filter(|c| !c.is_control() || matches!(c, '\n' | '\t')).collect::<String>())
            }
            None => None,
        };
        let gone = || Error::NotFound("no such message".into());
        let mut message = self.store.message(who.owner(), &session_id, &message_id).await?.ok_or_else(gone)?;
        if message.role != Author::Assistant {
            // The message exists, as the caller's: it is what it is that stands in the way.
            return Err(Error::Conflict("only replies can be rated; this is a user message".into()));
        }
        let now = crate::ids::now_ms();
        // Versions are times: a second rating in the same millisecond still moves on.
        let at_ms = message.feedback.as_ref().map_or(now, |f| now.max(f.at_ms + 1));
        let feedback =
            Feedback { rating: input.rating, reason: input.reason, comment, updated_at: rfc3339(at_ms), at_ms };
        let previous = message.feedback.as_ref();
        let counters = counter_changes(&feedback, previous);
        match self.store.set_feedback(who.owner(), &session_id, &message_id, &feedback, previous, &counters).await {
            Ok(()) => {}
            Err(StoreError::ConditionFailed { .. }) => {
                return Err(Error::Conflict("the reply was rated meanwhile; try again".into()));
            }
            Err(e) => return Err(e.into()),
        }
        message.feedback = Some(feedback);
        Ok(message)
    }

    /// Deletes the caller's session and all its messages; 404 when there is no such session.
    pub async fn delete_session(&self, who: &Principal, session_id: &str) -> Result<(), Error> {
        let session = self.session(who, session_id).await?;
        Ok(self.store.delete_session(who.owner(), &session.session_id).await?)
    }

    fn expiry(&self, now_ms: u64) -> u64 {
        now_ms / 1000 + self.retention.as_secs()
    }
}

/// The counters a piece of feedback adds to: its rating and its reason, on the day it was
/// given.
fn counted(feedback: &Feedback) -> impl Iterator<Item = (String, FeedbackCounter)> {
    let day = rfc3339(feedback.at_ms)[..10].to_owned();
    let counters =
        std::iter::once(FeedbackCounter::Rating(feedback.rating)).chain(feedback.reason.map(FeedbackCounter::Reason));
    counters.map(move |counter| (day.clone(), counter))
}

/// How the tenant's daily feedback counters change when a reply's feedback `previous` (on
/// the day it was given) becomes `feedback` (on its day): the previous one's counters go down
/// and the new one's up; a counter both leave as it was is not touched.
pub fn counter_changes(feedback: &Feedback, previous: Option<&Feedback>) -> Vec<CounterChange> {
    let mut changes: Vec<CounterChange> = Vec::new();
    let ups = counted(feedback).map(|c| (c, 1));
    let downs = previous.into_iter().flat_map(counted).map(|c| (c, -1));
    for ((day, counter), delta) in ups.chain(downs) {
        match changes.iter_mut().find(|c| c.day == day && c.counter == counter) {
            Some(change) => change.delta += delta,
            None => changes.push(CounterChange { day, counter, delta }),
        }
    }
    changes.retain(|c| c.delta != 0);
    changes
}

/// A session's first title: the first words of its first message (at most
/// [`TITLE_WORDS`] words and [`TITLE_CHARS`] characters).
pub fn title_from(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut line = words.iter().take(TITLE_WORDS).copied().collect::<Vec<_>>().join(" ");
    if words.len() > TITLE_WORDS {
        line.push('…');
    }
    match line.char_indices().nth(TITLE_CHARS) {
        Some((cut, _)) => format!("{}…", line[..cut].trim_end()),
        None => line,
    }
}

/// A title as given by a user or a model: white space collapsed, quotes and a closing
/// full stop removed, at most [`MAX_TITLE_CHARS`]; `None` when nothing is left.
pub fn clean_title(text: &str) -> Option<String> {
    let first_line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let line: String = first_line.chars().filter(|c| !c.is_control()).collect();
    let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    let line = line.trim_start_matches("Title:").trim().trim_matches(['"', '\'', '“', '”', '*', '#', ' ']);
    let line = line.strip_suffix('.').unwrap_or(line).trim();
    if line.is_empty() {
        return None;
    }
    Some(match line.char_indices().nth(MAX_TITLE_CHARS) {
        Some((cut, _)) => format!("{}…", line[..cut].trim_end()),
        None => line.to_owned(),
    })
}

/// A title a user gives: 1 to [`MAX_TITLE_CHARS`] characters, no control characters.
fn checked_title(title: &str) -> Result<String, Error> {
    let trimmed = title.trim();
    let chars = trimmed.chars().count();
    if trimmed.is_empty() || chars > MAX_TITLE_CHARS || trimmed.chars().any(char::is_control) {
        return Err(Error::BadRequest(format!(
            "title must be 1 to {MAX_TITLE_CHARS} characters without control characters"
        )));
    }
    Ok(trimmed.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn session_not_found() -> Error {
    Error::NotFound("no such session".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FeedbackReason, Rating};

    fn feedback(rating: Rating, reason: Option<FeedbackReason>, at_ms: u64) -> Feedback {
        Feedback { rating, reason, comment: None, updated_at: rfc3339(at_ms), at_ms }
    }

    #[test]
    fn feedback_counters_move_from_the_previous_rating_on_its_day_to_the_new_one() {
        let change = |day: &str, counter, delta| CounterChange { day: day.into(), counter, delta };
        let (up, down) = (FeedbackCounter::Rating(Rating::Up), FeedbackCounter::Rating(Rating::Down));
        let wrong = FeedbackCounter::Reason(FeedbackReason::ALL[0]);
        let day1 = 1_764_979_200_000; // 2025-12-06
        let day2 = day1 + 86_400_000;
        let first = feedback(Rating::Down, Some(FeedbackReason::ALL[0]), day1);
        assert_eq!(counter_changes(&first, None), vec![change("2025-12-06", down, 1), change("2025-12-06", wrong, 1)]);
        // Same day, the reason kept: only the rating moves.
        let same_day = feedback(Rating::Up, Some(FeedbackReason::ALL[0]), day1 + 1);
        assert_eq!(
            counter_changes(&same_day, Some(&first)),
            vec![change("2025-12-06", up, 1), change("2025-12-06", down, -1)]
        );
        // The same rating again: nothing moves.
        assert_eq!(
            counter_changes(&feedback(Rating::Down, Some(FeedbackReason::ALL[0]), day1 + 2), Some(&first)),
            vec![]
        );
        // Another day: the old day's counters go down, the new day's up.
        let next_day = feedback(Rating::Down, None, day2);
        assert_eq!(
            counter_changes(&next_day, Some(&first)),
            vec![change("2025-12-07", down, 1), change("2025-12-06", down, -1), change("2025-12-06", wrong, -1)]
        );
    }

    #[test]
    fn titles_are_one_line_and_bounded() {
        assert_eq!(title_from("  How do I\n give   feedback? "), "How do I give feedback?");
        let long = "é".repeat(200);
        let title = title_from(&long);
        assert_eq!(title.chars().count(), TITLE_CHARS + 1);
        assert!(title.ends_with('…'));
        // The first words only.
        assert_eq!(
            title_from("one two three four five six seven eight nine ten"),
            "one two three four five six seven eight…"
        );
    }

    #[test]
    fn a_model_s_title_is_cleaned() {
        assert_eq!(clean_title("\"Weekly Planning.\"").as_deref(), Some("Weekly Planning"));
        assert_eq!(clean_title("Title: **Feedback at work**\nMore text").as_deref(), Some("Feedback at work"));
        assert_eq!(clean_title("\n\n  “Goals”  ").as_deref(), Some("Goals"));
        assert_eq!(clean_title(" \"\" ").as_deref(), None);
        assert_eq!(clean_title("").as_deref(), None);
        assert!(clean_title(&"w ".repeat(200)).unwrap().chars().count() <= MAX_TITLE_CHARS + 1);
    }

    #[test]
    fn users_titles_are_checked() {
        assert_eq!(checked_title("  My   week ").unwrap(), "My week");
        for bad in ["", "   ", "tab\tinside", &"x".repeat(MAX_TITLE_CHARS + 1)] {
            assert_eq!(checked_title(bad).unwrap_err().status().as_u16(), 400, "{bad:?}");
        }
    }
}
