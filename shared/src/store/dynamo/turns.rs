//! The records of user turns ([`TurnStore`]): claimed with the user's message, answered with
//! the reply (both in [`HistoryStore::append`](crate::store::HistoryStore::append)'s
//! transaction), and their leases.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};

use super::{
    keys::{turn_sk, user_pk},
    n, number, s, string, written, DynamoTable, Item,
};
use crate::{
    model::Owner,
    store::{StoreError, StoreResult, StoredMessage, TurnRecord, TurnStore, TurnWrite},
};

/// What storing `message` of session `session_id` writes to its turn's record, as an item
/// of the message's transaction.
pub(super) fn write(
    table: &DynamoTable,
    owner: Owner,
    session_id: &str,
    message: &StoredMessage,
    turn: TurnWrite,
) -> StoreResult<Option<TransactWriteItem>> {
    let built = |e| StoreError::build("store message", e);
    Ok(match turn {
        TurnWrite::None => None,
        TurnWrite::Claim { key, lease_until, expires_at } => {
            let item = Item::from([
                ("pk".to_owned(), s(&user_pk(owner))),
                ("sk".to_owned(), s(&turn_sk(key))),
                ("type".to_owned(), s("turn")),
                ("session_id".to_owned(), s(session_id)),
                ("message_id".to_owned(), s(message.message_id)),
                ("lease_until".to_owned(), n(lease_until)),
                ("expires_at".to_owned(), n(expires_at)),
            ]);
            let put = Put::builder()
                .table_name(&table.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk) OR expires_at < :now")
                .expression_attribute_values(":now", n(message.now_ms / 1000))
                .build()
                .map_err(built)?;
            Some(TransactWriteItem::builder().put(put).build())
        }
        // Unconditional: the reply is stored even if the record expired meanwhile (which
        // then lives for a day more).
        TurnWrite::Answer { key } => {
            let update = Update::builder()
                .table_name(&table.table)
                .key("pk", s(&user_pk(owner)))
                .key("sk", s(&turn_sk(key)))
                .update_expression(
                    "SET reply_id = :reply, lease_until = :zero, expires_at = if_not_exists(expires_at, :exp)",
                )
                .expression_attribute_values(":reply", s(message.message_id))
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":exp", n(message.now_ms / 1000 + 86_400))
                .build()
                .map_err(built)?;
            Some(TransactWriteItem::builder().update(update).build())
        }
    })
}

#[async_trait]
impl TurnStore for DynamoTable {
    async fn turn(&self, owner: Owner<'_>, key: &str) -> StoreResult<Option<TurnRecord>> {
        let Some(item) = self.item(&user_pk(owner), &turn_sk(key), true, "read turn").await? else { return Ok(None) };
        if number(&item, "expires_at").is_none_or(|at| at < crate::ids::now_ms() / 1000) {
            return Ok(None);
        }
        let corrupt = || StoreError::Corrupt("turn");
        Ok(Some(TurnRecord {
            session_id: string(&item, "session_id").ok_or_else(corrupt)?.to_owned(),
            message_id: string(&item, "message_id").ok_or_else(corrupt)?.to_owned(),
            reply_id: string(&item, "reply_id").map(str::to_owned),
            lease_until: number(&item, "lease_until").unwrap_or(0),
        }))
    }

    async fn move_lease(&self, owner: Owner<'_>, key: &str, from: u64, to: u64) -> StoreResult<bool> {
        let result = self
            .update(user_pk(owner), turn_sk(key))
            .update_expression("SET lease_until = :to")
            .condition_expression("lease_until = :from AND attribute_not_exists(reply_id)")
            .expression_attribute_values(":from", n(from))
            .expression_attribute_values(":to", n(to))
            .send()
            .await;
        written("move a turn's lease", result)
    }
}
