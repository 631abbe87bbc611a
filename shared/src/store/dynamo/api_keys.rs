//! API keys ([`ApiKeyStore`]): one item per key (its secret's hash, never the secret), listed
//! per tenant through `gsi1`.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{
    keys::{api_key_order, api_key_pk, api_keys_of, API_KEY_SK},
    n, number, s, string, write_error, written, DynamoTable, Item, SESSIONS_INDEX,
};
use crate::store::{ApiKeyStore, StoreError, StoreResult, StoredApiKey};

fn api_key_from(item: &Item) -> StoreResult<StoredApiKey> {
    let corrupt = || StoreError::Corrupt("API key");
    let text = |name: &str| string(item, name).map(str::to_owned).ok_or_else(corrupt);
    let roles = item.get("roles").and_then(|v| v.as_l().ok()).ok_or_else(corrupt)?;
    Ok(StoredApiKey {
        id: text("key_id")?,
        tenant: text("tenant")?,
        name: text("name")?,
        roles: roles.iter().filter_map(|r| r.as_s().ok().cloned()).collect(),
        // Keys created before access groups have none.
        groups: match item.get("groups") {
            Some(AttributeValue::L(groups)) => groups.iter().filter_map(|g| g.as_s().ok().cloned()).collect(),
            _ => Vec::new(),
        },
        hash: text("hash")?,
        created_ms: number(item, "created_at").ok_or_else(corrupt)?,
        created_by: text("created_by")?,
        expires_ms: number(item, "expires_at").map(|secs| secs * 1000),
        last_used_ms: number(item, "last_used"),
    })
}

#[async_trait]
impl ApiKeyStore for DynamoTable {
    async fn create_key(&self, key: &StoredApiKey) -> StoreResult<()> {
        let roles = AttributeValue::L(key.roles.iter().map(|r| s(r)).collect());
        let groups = AttributeValue::L(key.groups.iter().map(|g| s(g)).collect());
        // An expiring key's expiry is the table's TTL attribute: DynamoDB removes it later.
        let expires = key.expires_ms.map(|ms| n(ms.div_ceil(1000)));
        self.client
            .put_item()
            .set_item(Some(expires.into_iter().map(|at| ("expires_at".to_owned(), at)).collect()))
            .table_name(&self.table)
            .item("pk", s(&api_key_pk(&key.id)))
            .item("sk", s(API_KEY_SK))
            .item("gsi1pk", s(&api_keys_of(&key.tenant)))
            .item("gsi1sk", s(&api_key_order(key.created_ms, &key.id)))
            .item("type", s("api_key"))
            .item("key_id", s(&key.id))
            .item("tenant", s(&key.tenant))
            .item("name", s(&key.name))
            .item("roles", roles)
            .item("groups", groups)
            .item("hash", s(&key.hash))
            .item("created_at", n(key.created_ms))
            .item("created_by", s(&key.created_by))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(|e| write_error("create API key", e))?;
        Ok(())
    }

    async fn key(&self, id: &str) -> StoreResult<Option<StoredApiKey>> {
        let item = self.item(&api_key_pk(id), API_KEY_SK, true, "read API key").await?;
        item.as_ref().map(api_key_from).transpose()
    }

    async fn keys(&self, tenant: &str) -> StoreResult<Vec<StoredApiKey>> {
        let query = self
            .query()
            .index_name(SESSIONS_INDEX)
            .key_condition_expression("gsi1pk = :pk")
            .expression_attribute_values(":pk", s(&api_keys_of(tenant)));
        self.all(query, "list API keys").await?.iter().map(api_key_from).collect()
    }

    async fn touch_key(&self, id: &str, now_ms: u64, since_ms: u64) -> StoreResult<()> {
        let result = self
            .update(api_key_pk(id), API_KEY_SK.to_owned())
            .update_expression("SET last_used = :now")
            .condition_expression("attribute_exists(pk) AND (attribute_not_exists(last_used) OR last_used < :since)")
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":since", n(since_ms))
            .send()
            .await;
        // Recorded recently enough already (or the key is gone): nothing to do.
        written("record API key use", result).map(|_| ())
    }

    async fn delete_key(&self, tenant: &str, id: &str) -> StoreResult<bool> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(&api_key_pk(id)))
            .key("sk", s(API_KEY_SK))
            .condition_expression("tenant = :tenant")
            .expression_attribute_values(":tenant", s(tenant))
            .send()
            .await;
        written("revoke API key", result)
    }
}
