//! No silent ingest failure: S3 events ingest gave up on are re-driven from the dead-letter
//! queue (as Lambda writes them there), and the sweeper fails or re-ingests the documents
//! left `pending` or `processing`. Against moto's SQS, DynamoDB and S3.

use coach::{
    ingest::sweep::{Swept, DIED, NO_UPLOAD},
    model::Scope,
    store::DocumentStore,
};
use coach_testkit::{
    events, queues,
    stack::{ingest_deadline, Deployment, TestStack},
    tokens,
};
use lambda_http::http::StatusCode;
use serde_json::{json, Value};

fn editor() -> String {
    tokens::for_test("erin", "acme", &["editor"])
}

async fn call(services: &Deployment, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let request = events::with("uploads-create.json", method, path, body.as_ref(), Some(&editor()));
    let response = upload_url::handle(&services.uploads, request).await;
    let status = response.status();
    (status, serde_json::from_slice(response.body().as_ref()).unwrap_or(Value::Null))
}

/// `POST /uploads` for `text`, and its PUT when `put`: the document id and key.
async fn upload(services: &Deployment, name: &str, text: &str, put: bool) -> (String, String) {
    let body = json!({"filename": name, "content_type": "text/markdown", "size_bytes": text.len()});
    let (status, upload) = call(services, "POST", "/uploads", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{upload}");
    if put {
        let mut request = reqwest::Client::new().put(upload["upload_url"].as_str().unwrap()).body(text.to_owned());
        for (name, value) in upload["headers"].as_object().unwrap() {
            request = request.header(name, value.as_str().unwrap());
        }
        assert!(request.send().await.unwrap().status().is_success());
    }
    let id = upload["document_id"].as_str().unwrap().to_owned();
    (id.clone(), format!("uploads/acme/{id}/{name}"))
}

async fn status(services: &Deployment, id: &str) -> Value {
    call(services, "GET", &format!("/documents/{id}"), None).await.1
}

async fn queue(stack: &TestStack, name: &str) -> String {
    let name = format!("{}-{name}", stack.config.bucket);
    stack.aws.sqs.create_queue().queue_name(name).send().await.unwrap().queue_url.unwrap()
}

/// A stack whose ingest has a jobs queue, and that queue's URL.
async fn with_jobs_queue() -> (TestStack, String) {
    let base = TestStack::new().await;
    let jobs = queue(&base, "jobs").await;
    (base.with_more_env(&[("COACH_INGEST_QUEUE_URL", &jobs)]), jobs)
}

#[tokio::test]
async fn events_ingest_gave_up_on_are_redriven_from_the_dead_letter_queue() {
    let (stack, jobs) = with_jobs_queue().await;
    let dead_letters = queue(&stack, "dlq").await;
    let services = stack.deploy();
    let (id, key) = upload(&services, "guide.md", "# Guide\n\nAsk, then listen.\n", true).await;
    // What Lambda writes to the on-failure destination after the retries: a record holding
    // the S3 event (template.yaml: EventInvokeConfig).
    let mut s3_event: Value = serde_json::from_str(&events::load("s3-put.json")).unwrap();
    s3_event["Records"][0]["s3"]["object"]["key"] = key.clone().into();
    let record = json!({
        "version": "1.0",
        "timestamp": "2026-11-24T08:00:00.000Z",
        "requestContext": {"requestId": "r-1", "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:coach-dev-ingest:$LATEST", "condition": "RetriesExhausted", "approximateInvokeCount": 3},
        "requestPayload": s3_event,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {"errorMessage": "storage is unavailable"}
    });
    stack.aws.sqs.send_message().queue_url(&dead_letters).message_body(record.to_string()).send().await.unwrap();
    assert_eq!(status(&services, &id).await["status"], "pending");

    // `coach-dev redrive` (start-message-move-task on AWS), then ingest's SQS poller.
    assert_eq!(queues::move_messages(&stack.aws.sqs, &dead_letters, &jobs).await.unwrap(), 1);
    assert_eq!(queues::deliver(&stack.aws.sqs, &services.ingest, &jobs).await, 1);
    assert_eq!(status(&services, &id).await["status"], "ready");
    assert_eq!(queues::move_messages(&stack.aws.sqs, &dead_letters, &jobs).await.unwrap(), 0, "nothing left");
}

#[tokio::test]
async fn the_sweeper_fails_or_reingests_what_ingest_left_unfinished() {
    let (stack, jobs) = with_jobs_queue().await;
    let services = stack.deploy();
    // Uploaded, but its event was lost.
    let (lost, _) = upload(&services, "lost.md", "# Lost\n\nFound again.\n", true).await;
    // Never uploaded.
    let (never, _) = upload(&services, "never.md", "# Never\n", false).await;
    // Its ingest died after marking it `processing`.
    let (died, _) = upload(&services, "died.md", "# Died\n\nMid-way.\n", true).await;
    let table = stack.aws.table();
    let acme = Scope::Tenant("acme".into());
    table.start_processing(&acme, &died, "etag-1", coach::ids::now_ms()).await.unwrap();

    // The schedule's sweep finds nothing yet: every record changed just now.
    let schedule: Value = serde_json::from_str(&events::load("schedule.json")).unwrap();
    let swept = ingest::handle(&services.ingest, schedule, ingest_deadline()).await.unwrap();
    assert_eq!(swept, json!({"failed": 0, "redriven": 0}));

    // An hour later, past COACH_INGEST_STUCK_MINUTES.
    let later = coach::ids::now_ms() + 3_600_000;
    let swept = services.ingest.ingestor.sweep(later, ingest_deadline()).await.unwrap();
    assert_eq!(swept, Swept { failed: 2, redriven: 1 });
    assert_eq!(status(&services, &died).await["error"], DIED);
    assert_eq!(status(&services, &never).await["error"], NO_UPLOAD);
    assert_eq!(status(&services, &lost).await["status"], "pending", "queued, not yet ingested");
    assert_eq!(queues::deliver(&stack.aws.sqs, &services.ingest, &jobs).await, 1);
    assert_eq!(status(&services, &lost).await["status"], "ready");

    // Finished documents are no longer unfinished.
    let swept = services.ingest.ingestor.sweep(later, ingest_deadline()).await.unwrap();
    assert_eq!(swept, Swept::default());
    assert!(table.unfinished(later, 100).await.unwrap().is_empty());
}

/// Every version of every object in the bucket that holds `needle`, by key.
async fn holding(stack: &TestStack, needle: &str) -> Vec<String> {
    let s3 = &stack.aws.s3;
    let bucket = &stack.config.bucket;
    let listed = s3.list_object_versions().bucket(bucket).send().await.unwrap();
    assert!(!listed.is_truncated().unwrap_or(false), "a test bucket lists in one page");
    let mut found = Vec::new();
    for version in listed.versions() {
        let (key, id) = (version.key().unwrap(), version.version_id().unwrap());
        let object = s3.get_object().bucket(bucket).key(key).version_id(id).send().await.unwrap();
        let bytes = object.body.collect().await.unwrap().into_bytes();
        if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            found.push(format!("{key} ({id})"));
        }
    }
    found
}

/// Erasure: once a document is deleted, its text leaves every object version in the
/// (versioned) bucket within the index's grace period, though its tenant never writes again:
/// its removal rewrites the segments holding it at once, and queues a purge job for when the
/// objects readers might still use may go; the job deletes every version of them.
#[tokio::test]
async fn a_deleted_documents_text_leaves_every_object_version_after_the_grace_period() {
    use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
    use coach::ingest::{ObjectEvent, Outcome};
    let (stack, jobs) = with_jobs_queue().await;
    let stack = stack.with_more_env(&[("COACH_INDEX_GC_GRACE_SECS", "2")]);
    let versioning = VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
    let bucket = &stack.config.bucket;
    stack.aws.s3.put_bucket_versioning().bucket(bucket).versioning_configuration(versioning).send().await.unwrap();
    let services = stack.deploy();
    let secret = "Zebrafish-salary-7734";
    let kept =
        coach_testkit::flows::add(&stack, &services, "acme", "kept.md", "# Kept\n\nQuokka handbook stays.\n").await;
    let (id, key) = upload(&services, "secret.md", &format!("# Salaries\n\n{secret} is confidential.\n"), true).await;
    let event = ObjectEvent { created: true, key: key.clone() };
    assert!(matches!(
        services.ingest.ingestor.handle(&event, ingest_deadline()).await.unwrap(),
        Outcome::Indexed { .. }
    ));
    assert!(!holding(&stack, secret).await.is_empty());

    // Deleted; S3's ObjectRemoved event reaches ingest.
    assert_eq!(call(&services, "DELETE", &format!("/documents/{id}"), None).await.0, StatusCode::NO_CONTENT);
    let removed = ObjectEvent { created: false, key };
    assert_eq!(services.ingest.ingestor.handle(&removed, ingest_deadline()).await.unwrap(), Outcome::Removed);
    // Readers may still hold the old segments for the grace period: the text is kept that long.
    assert!(!holding(&stack, secret).await.is_empty(), "kept for readers during the grace period");

    // The purge job, delivered past the grace period, deletes every version left.
    tokio::time::sleep(std::time::Duration::from_millis(2_200)).await;
    let mut delivered = 0;
    for _ in 0..5 {
        delivered += queues::deliver(&stack.aws.sqs, &services.ingest, &jobs).await;
        if holding(&stack, secret).await.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(delivered >= 1, "a purge job was queued");
    assert_eq!(holding(&stack, secret).await, Vec::<String>::new(), "no version holds the deleted text");
    // The tenant's other document is still found.
    assert!(coach_testkit::flows::cited(&services, "acme", "Quokka handbook").await.contains(&kept));
}
