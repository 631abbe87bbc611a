//! The local emulator (moto, through `scripts/moto_server.py`) where it is adjusted: a
//! DynamoDB transaction that is cancelled changes nothing, though the launcher backs up only
//! the items it touches instead of whole tables.

use aws_sdk_dynamodb::types::{
    AttributeValue::{N, S},
    ConditionCheck, Delete, Put, TransactWriteItem, Update,
};
use coach_testkit::stack::TestStack;

fn key(pk: &str, sk: &str) -> std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> {
    [("pk".to_owned(), S(pk.into())), ("sk".to_owned(), S(sk.into()))].into()
}

/// `pk`'s items, as `(sk, n)`.
async fn items(stack: &TestStack, pk: &str) -> Vec<(String, Option<String>)> {
    let mut found: Vec<_> = stack
        .items(pk)
        .await
        .iter()
        .map(|item| {
            let sk = item["sk"].as_s().unwrap().clone();
            (sk, item.get("n").and_then(|n| n.as_n().ok()).cloned())
        })
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn a_cancelled_transaction_changes_nothing_and_a_whole_one_everything() {
    let stack = TestStack::new().await;
    let (table, pk) = (stack.config.table.clone(), "EMULATOR".to_owned());
    let dynamodb = &stack.aws.dynamodb;
    for (sk, n) in [("b", "1"), ("d", "1"), ("e", "1")] {
        dynamodb
            .put_item()
            .table_name(&table)
            .set_item(Some(key(&pk, sk)))
            .item("n", N(n.into()))
            .send()
            .await
            .unwrap();
    }
    let put = |sk: &str| {
        let put = Put::builder().table_name(&table).set_item(Some(key(&pk, sk))).item("n", N("9".into()));
        TransactWriteItem::builder().put(put.build().unwrap()).build()
    };
    let update = |sk: &str| {
        let update = Update::builder()
            .table_name(&table)
            .set_key(Some(key(&pk, sk)))
            .update_expression("SET n = :n")
            .expression_attribute_values(":n", N("2".into()));
        TransactWriteItem::builder().update(update.build().unwrap()).build()
    };
    let delete = |sk: &str| {
        let delete = Delete::builder().table_name(&table).set_key(Some(key(&pk, sk)));
        TransactWriteItem::builder().delete(delete.build().unwrap()).build()
    };
    let exists = |sk: &str| {
        let check = ConditionCheck::builder()
            .table_name(&table)
            .set_key(Some(key(&pk, sk)))
            .condition_expression("attribute_exists(pk)");
        TransactWriteItem::builder().condition_check(check.build().unwrap()).build()
    };
    let before = items(&stack, &pk).await;

    // The check on `z` fails after the put, the update and the delete were applied: all undone.
    let cancelled = dynamodb
        .transact_write_items()
        .set_transact_items(Some(vec![put("a"), update("b"), delete("d"), exists("z")]))
        .send()
        .await
        .unwrap_err();
    let reasons: Vec<Option<String>> = match cancelled.into_service_error() {
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(e) => {
            e.cancellation_reasons().iter().map(|r| r.code().map(str::to_owned)).collect()
        }
        other => panic!("not cancelled: {other:?}"),
    };
    assert_eq!(reasons.last().cloned().flatten().as_deref(), Some("ConditionalCheckFailed"));
    assert_eq!(items(&stack, &pk).await, before);

    // An item named twice: refused whole, nothing written.
    let twice = dynamodb.transact_write_items().set_transact_items(Some(vec![put("c"), update("c")])).send().await;
    assert!(twice.is_err());
    assert_eq!(items(&stack, &pk).await, before);

    // Without a failing part, every part is written.
    dynamodb
        .transact_write_items()
        .set_transact_items(Some(vec![put("a"), update("b"), delete("d"), exists("e")]))
        .send()
        .await
        .unwrap();
    let after: Vec<(String, Option<String>)> =
        [("a", "9"), ("b", "2"), ("e", "1")].iter().map(|(sk, n)| ((*sk).to_owned(), Some((*n).to_owned()))).collect();
    assert_eq!(items(&stack, &pk).await, after);
}
