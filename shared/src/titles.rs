//! Session titles from the first exchange.
//!
//! A session started by a message is titled with the message's first words at once (and one
//! created empty keeps `New conversation` until its first message). With a model configured,
//! chat then queues a [`TitleJob`] once the first reply is stored, in parallel with storing it,
//! so the answer never waits; the ingest function (the jobs worker) asks the model for a title
//! of a few words ([`Titler::title`]), records the call's usage, and replaces the automatic
//! title, unless the user named the session meanwhile (`PATCH /sessions/{id}`), which always
//! wins. The exchange is reference material in the prompt, quoted between random boundary
//! lines; the model's answer is cleaned and cut ([`crate::history::clean_title`]).

use std::sync::Arc;

use crate::{
    auth::Principal,
    error::Error,
    history::History,
    llm::{Llm, Prompt, Turn},
    model::{Author, TitleJob},
    prompt,
    usage::Ledger,
};

/// Longest text of each message put in the title prompt, in characters.
const EXCERPT_CHARS: usize = 1_500;

/// What became of a title job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Titled {
    Titled(String),
    /// Nothing done, and why.
    Skipped(&'static str),
}

/// Titles sessions from their first exchange. Build once per cold start (the ingest function).
pub struct Titler {
    history: History,
    llm: Llm,
    ledger: Arc<Ledger>,
}

impl Titler {
    pub fn new(history: History, llm: Llm, ledger: Arc<Ledger>) -> Self {
        Self { history, llm, ledger }
    }

    /// Titles the job's session, unless it is gone, named by its user, or without a message.
    pub async fn title(&self, job: &TitleJob) -> Result<Titled, Error> {
        if crate::auth::validate_tenant(&job.tenant).is_err() {
            return Ok(Titled::Skipped("not a tenant"));
        }
        // Titling reads the session's messages, never the documents: no groups needed.
        let who = Principal {
            user_id: job.user_id.clone(),
            tenant: job.tenant.clone(),
            roles: Vec::new(),
            groups: Vec::new(),
        };
        let session = match self.history.session(&who, &job.session_id).await {
            Ok(session) => session,
            Err(Error::NotFound(_) | Error::BadRequest(_)) => return Ok(Titled::Skipped("no such session")),
            Err(e) => return Err(e),
        };
        if !session.auto_title {
            return Ok(Titled::Skipped("named by its user"));
        }
        let mut first = self.history.messages(&who, &session.session_id, 4, None).await?.items;
        first.reverse();
        let question = first.iter().find(|m| m.role == Author::User);
        let Some(question) = question else { return Ok(Titled::Skipped("no message yet")) };
        let answer = first.iter().find(|m| m.role == Author::Assistant);

        let boundary = prompt::boundary();
        let mut system = String::from(
            "You name conversations. Answer with a title of at most six words for the conversation that starts \
             with the exchange given: in the language of the exchange, without quotes or a full stop.",
        );
        system.push_str(&prompt::reference_rules(&boundary, "the first exchange of the conversation"));
        let excerpt = |text: &str| text.chars().take(EXCERPT_CHARS).collect::<String>();
        let mut data = format!("The user wrote:\n{}", prompt::quote(&excerpt(&question.content), &boundary));
        if let Some(answer) = answer {
            data.push_str("The assistant answered:\n");
            data.push_str(&prompt::quote(&excerpt(&answer.content), &boundary));
        }
        let content = format!("{}\n\nThe title:", prompt::fenced(&data, &boundary));
        let prompt = Prompt { system, turns: vec![Turn { role: Author::User, content }], ..Prompt::default() };
        let completion = self.llm.complete(&prompt, &[]).await?;
        self.ledger.record_for(&who, &[self.llm.used(&completion)]).await;
        if completion.intervened {
            // A guardrail's message is no title: the first words stay.
            return Ok(Titled::Skipped("a guardrail intervened"));
        }
        let Some(title) = crate::history::clean_title(&completion.text) else {
            return Ok(Titled::Skipped("the model gave no title"));
        };
        match self.history.set_auto_title(&who, &session.session_id, &title).await? {
            true => Ok(Titled::Titled(title)),
            false => Ok(Titled::Skipped("named by its user")),
        }
    }
}
