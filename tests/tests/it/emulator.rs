//! The local emulator (moto, through `scripts/moto_server.py`) where it is adjusted: a
//! DynamoDB transaction that is cancelled changes nothing, though the launcher backs up only
//! the items it touches instead of whole tables; SQS counts a queue's messages and
//! deduplicates by content, though the launcher's sends (S3's notifications among them) no
//! longer count the messages.

use aws_sdk_dynamodb::types::{
    AttributeValue::{N, S},
    ConditionCheck, Delete, Put, TransactWriteItem, Update,
};
use aws_sdk_sqs::types::{QueueAttributeName as Attr, SendMessageBatchRequestEntry};
use coach_testkit::stack::{create_bucket, notify_queue, unique_name, TestStack};

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

/// A queue's attributes, by name.
async fn queue_attributes(sqs: &aws_sdk_sqs::Client, queue: &str) -> std::collections::HashMap<Attr, String> {
    sqs.get_queue_attributes().queue_url(queue).attribute_names(Attr::All).send().await.unwrap().attributes.unwrap()
}

#[tokio::test]
async fn a_queue_counts_its_messages_and_deduplicates_by_content_as_sqs_does() {
    let stack = TestStack::new().await;
    let (s3, sqs) = (&stack.aws.s3, &stack.aws.sqs);

    // S3's notifications and a direct send land, and are counted (visible, then in flight).
    let bucket = unique_name("notified");
    create_bucket(s3, &bucket).await.unwrap();
    let queue = notify_queue(s3, sqs, &bucket).await.unwrap();
    // S3 sends a test event when the notifications are configured, as on AWS.
    let test_events: u32 = queue_attributes(sqs, &queue).await[&Attr::ApproximateNumberOfMessages].parse().unwrap();
    assert!(test_events <= 1, "{test_events}");
    let visible = |n: u32| (n + test_events).to_string();
    for i in 0..5 {
        s3.put_object()
            .bucket(&bucket)
            .key(format!("uploads/t/{i}/a.md"))
            .body(b"# A".to_vec().into())
            .send()
            .await
            .unwrap();
    }
    sqs.send_message().queue_url(&queue).message_body("direct").send().await.unwrap();
    let counts = queue_attributes(sqs, &queue).await;
    assert_eq!(counts[&Attr::ApproximateNumberOfMessages], visible(6), "{counts:?}");
    assert_eq!(counts[&Attr::ApproximateNumberOfMessagesNotVisible], "0", "{counts:?}");
    let taken = sqs.receive_message().queue_url(&queue).max_number_of_messages(2).send().await.unwrap();
    assert_eq!(taken.messages().len(), 2);
    let counts = queue_attributes(sqs, &queue).await;
    assert_eq!(counts[&Attr::ApproximateNumberOfMessages], visible(4), "{counts:?}");
    assert_eq!(counts[&Attr::ApproximateNumberOfMessagesNotVisible], "2", "{counts:?}");
    let only = sqs
        .get_queue_attributes()
        .queue_url(&queue)
        .attribute_names(Attr::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap();
    assert_eq!(only.attributes().unwrap()[&Attr::ApproximateNumberOfMessages], visible(4));

    // A FIFO queue with content-based deduplication keeps one of two equal bodies, sent alone
    // or in a batch, and the other bodies.
    let fifo = sqs
        .create_queue()
        .queue_name(format!("{}.fifo", unique_name("dedup")))
        .attributes(Attr::FifoQueue, "true")
        .attributes(Attr::ContentBasedDeduplication, "true")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    for _ in 0..2 {
        sqs.send_message().queue_url(&fifo).message_group_id("g").message_body("same").send().await.unwrap();
    }
    let entry = |id: &str, body: &str| {
        SendMessageBatchRequestEntry::builder().id(id).message_group_id("g").message_body(body).build().unwrap()
    };
    sqs.send_message_batch()
        .queue_url(&fifo)
        .entries(entry("a", "same"))
        .entries(entry("b", "other"))
        .send()
        .await
        .unwrap();
    let counts = queue_attributes(sqs, &fifo).await;
    assert_eq!(counts[&Attr::ApproximateNumberOfMessages], "2", "{counts:?}");
    assert_eq!(counts[&Attr::ContentBasedDeduplication], "true", "{counts:?}");
}
