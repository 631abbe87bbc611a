//! Search without an answer: the passages that best match a query, and the tenant's
//! documents (the MCP server's `search_documents` and `list_documents` tools). A search
//! counts against the caller's rate limits and budget like a question; its query embedding,
//! when the embedding provider is metered, is recorded in the usage ledger.

use super::{within, Assist, Tally, MAX_TOP_K};
use crate::{
    auth::Principal,
    deadline::Deadline,
    error::Error,
    model::{Document, Passage, Surface},
};

impl Assist {
    /// The `top_k` passages (1 to [`MAX_TOP_K`]; `COACH_RETRIEVAL_TOP_K` by default) of the
    /// caller's tenant's documents and the shared docs that best match `query`, best first.
    pub async fn search(
        &self,
        who: &Principal,
        via: Surface,
        query: &str,
        top_k: Option<usize>,
        deadline: Deadline,
    ) -> Result<Vec<Passage>, Error> {
        let query = super::required_text(query, "query", self.limits.max_message_chars)?;
        let top_k = match top_k {
            None => self.retriever.top_k().clamp(1, MAX_TOP_K),
            Some(k) if (1..=MAX_TOP_K).contains(&k) => k,
            Some(_) => return Err(Error::BadRequest(format!("top_k must be 1 to {MAX_TOP_K}"))),
        };
        let tally = Tally::via(via);
        let found = within(self, deadline, "the search", async {
            self.admission.admit(who).await?;
            let retrieved = self.retriever.retrieve_top(&who.tenant, who.clearance(), query, top_k).await?;
            if let Some(embedding) = retrieved.embedding {
                tally.add(embedding);
            }
            Ok(retrieved.passages)
        })
        .await;
        tally.record(self, who).await;
        found
    }

    /// The caller's tenant's documents, newest first, a page of `limit` after `cursor`.
    pub async fn documents(
        &self,
        who: &Principal,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<(Vec<Document>, Option<String>), Error> {
        crate::documents::list(self.records.as_ref(), who, limit, cursor).await
    }
}
