//! Session titles: the first words of the first message at once, then (with a model) a title
//! from the first exchange by a queued job the ingest function runs; `PATCH /sessions/{id}`
//! renames, and a user's title is never replaced.

use coach_testkit::flows::chat_call as call;
use coach_testkit::{
    queues,
    stack::{Deployment, TestStack},
    tokens,
};
use lambda_http::http::StatusCode;
use serde_json::{json, Value};
use wiremock::{matchers, Mock, MockServer, ResponseTemplate};

fn alice() -> String {
    tokens::for_test("alice", "acme", &["user"])
}

async fn chat(services: &Deployment, message: &str, session: Option<&str>) -> String {
    let mut body = json!({"message": message});
    if let Some(id) = session {
        body["session_id"] = id.into();
    }
    let (status, reply) = call(services, "POST", "/chat", Some(body), &alice()).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    reply["session_id"].as_str().unwrap().to_owned()
}

async fn title(services: &Deployment, session: &str) -> String {
    let (_, list) = call(services, "GET", "/sessions", None, &alice()).await;
    let found = list["sessions"].as_array().unwrap().iter().find(|s| s["session_id"] == session).cloned();
    found.unwrap_or_else(|| panic!("{session} in {list}"))["title"].as_str().unwrap().to_owned()
}

/// A stack whose chat and ingest share a jobs queue, and the queue.
async fn with_jobs(vars: &[(&str, &str)]) -> (TestStack, String) {
    let base = TestStack::with_env(vars).await;
    let name = format!("{}-jobs", base.config.bucket);
    let jobs = base.aws.sqs.create_queue().queue_name(name).send().await.unwrap().queue_url.unwrap();
    (base.with_more_env(&[("COACH_INGEST_QUEUE_URL", &jobs)]), jobs)
}

/// An OpenAI chat completion answering `text`, as the API documents it.
fn completion(text: &str) -> Value {
    json!({
        "id": "c", "object": "chat.completion", "model": "gpt-test-0613",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 6, "total_tokens": 36}
    })
}

const LONG: &str = "How should I plan my week when everything seems urgent at once?";
const FIRST_WORDS: &str = "How should I plan my week when everything…";

#[tokio::test]
async fn a_new_session_is_titled_by_the_model_after_the_reply_unless_its_user_named_it() {
    let server = MockServer::start().await;
    Mock::given(matchers::path("/chat/completions"))
        .respond_with(|request: &wiremock::Request| {
            let body: Value = request.body_json().unwrap();
            let naming = body["messages"][0]["content"].as_str().unwrap_or("").starts_with("You name conversations");
            let text = if naming { "\"Weekly Planning Under Pressure.\"" } else { "Pick three priorities." };
            ResponseTemplate::new(200).set_body_json(completion(text))
        })
        .mount(&server)
        .await;
    let uri = server.uri();
    let (stack, jobs) = with_jobs(&[("COACH_LLM_PROVIDER", "openai"), ("COACH_LLM_BASE_URL", &uri)]).await;
    let services = stack.deploy();

    // The reply comes first, titled with the message's first words; the job follows.
    let session = chat(&services, LONG, None).await;
    assert_eq!(title(&services, &session).await, FIRST_WORDS);
    assert_eq!(queues::deliver(&stack.aws.sqs, &services.ingest, &jobs).await, 1);
    assert_eq!(title(&services, &session).await, "Weekly Planning Under Pressure");
    let requests = server.received_requests().await.unwrap();
    let naming: Value = requests.last().unwrap().body_json().unwrap();
    let asked = naming["messages"][1]["content"].as_str().unwrap();
    assert!(asked.contains(&format!("> {LONG}")) && asked.contains("> Pick three priorities."), "{asked}");
    // The title call is the user's usage too.
    let (_, usage) = call(&services, "GET", "/usage", None, &alice()).await;
    assert_eq!(usage["totals"]["requests"], 2, "{usage}");

    // Later turns queue nothing.
    chat(&services, "And on Fridays?", Some(&session)).await;
    assert_eq!(queues::deliver(&stack.aws.sqs, &services.ingest, &jobs).await, 0);

    // A user's title wins over the job, whenever the job runs.
    let named = chat(&services, "Help me prepare a difficult conversation", None).await;
    let (status, renamed) =
        call(&services, "PATCH", &format!("/sessions/{named}"), Some(json!({"title": "  Talk with  Sam "})), &alice())
            .await;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    assert_eq!(renamed["title"], "Talk with Sam");
    assert_eq!(queues::deliver(&stack.aws.sqs, &services.ingest, &jobs).await, 1);
    assert_eq!(title(&services, &named).await, "Talk with Sam");

    // A session created empty is titled by its first exchange too.
    let (status, empty) = call(&services, "POST", "/sessions", None, &alice()).await;
    assert_eq!((status, empty["title"].as_str()), (StatusCode::CREATED, Some("New conversation")));
    let empty = empty["session_id"].as_str().unwrap().to_owned();
    chat(&services, LONG, Some(&empty)).await;
    assert_eq!(title(&services, &empty).await, FIRST_WORDS, "first words at once");
    assert_eq!(queues::deliver(&stack.aws.sqs, &services.ingest, &jobs).await, 1);
    assert_eq!(title(&services, &empty).await, "Weekly Planning Under Pressure");
}

#[tokio::test]
async fn without_a_model_sessions_keep_their_first_words_and_renames_are_checked() {
    let (stack, jobs) = with_jobs(&[]).await;
    let services = stack.deploy();
    let session = chat(&services, LONG, None).await;
    assert_eq!(title(&services, &session).await, FIRST_WORDS);
    let (_, empty) = call(&services, "POST", "/sessions", Some(json!({})), &alice()).await;
    let empty = empty["session_id"].as_str().unwrap().to_owned();
    chat(&services, "Short question", Some(&empty)).await;
    assert_eq!(title(&services, &empty).await, "Short question");
    assert_eq!(queues::deliver(&stack.aws.sqs, &services.ingest, &jobs).await, 0, "no title job without a model");

    let path = format!("/sessions/{session}");
    let bob = tokens::for_test("bob", "acme", &["user"]);
    let cases = [
        (path.as_str(), json!({"title": "  "}), alice(), StatusCode::BAD_REQUEST),
        (path.as_str(), json!({"title": "x".repeat(121)}), alice(), StatusCode::BAD_REQUEST),
        (path.as_str(), json!({"title": "bell\u{7}"}), alice(), StatusCode::BAD_REQUEST),
        (path.as_str(), json!({"title": "ok", "pinned": true}), alice(), StatusCode::BAD_REQUEST),
        (path.as_str(), json!({"title": "mine now"}), bob, StatusCode::NOT_FOUND),
        ("/sessions/01ARZ3NDEKTSV4RRFFQ69G5FAV", json!({"title": "gone"}), alice(), StatusCode::NOT_FOUND),
        ("/sessions/not-an-id", json!({"title": "bad"}), alice(), StatusCode::BAD_REQUEST),
    ];
    for (path, body, who, expected) in cases {
        let (status, error) = call(&services, "PATCH", path, Some(body.clone()), &who).await;
        assert_eq!(status, expected, "{path} {body}: {error}");
    }
    assert_eq!(title(&services, &session).await, FIRST_WORDS, "nothing renamed by a refusal");
    let (status, renamed) = call(&services, "PATCH", &path, Some(json!({"title": "x".repeat(120)})), &alice()).await;
    assert_eq!((status, renamed["title"].as_str().map(str::len)), (StatusCode::OK, Some(120)));
    let (status, _) = call(&services, "POST", "/sessions", Some(json!({"title": "y".repeat(121)})), &alice()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// A bad model setting in ingest's configuration does not stop its cold start: documents are
/// ingested as ever, and only the title jobs fail (reported back, so they are retried and
/// end in the dead-letter queue), each with an error in the log.
#[tokio::test]
async fn a_bad_model_setting_fails_only_the_title_jobs_of_ingest() {
    let server = MockServer::start().await;
    Mock::given(matchers::path("/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("Pick three.")))
        .mount(&server)
        .await;
    let uri = server.uri();
    let (stack, jobs) = with_jobs(&[("COACH_LLM_PROVIDER", "openai"), ("COACH_LLM_BASE_URL", &uri)]).await;
    let services = stack.deploy();
    let session = chat(&services, LONG, None).await;

    // Ingest of the same stack, with a model setting out of its bounds.
    let broken = stack.with_more_env(&[("COACH_LLM_MAX_OUTPUT_TOKENS", "0")]);
    let ingest = broken.start(&stack.aws, ingest::Settings::load, ingest::State::new);
    assert!(ingest.titler.is_err(), "the setting is refused, and kept for the title jobs");
    let received = stack.aws.sqs.receive_message().queue_url(&jobs).send().await.unwrap();
    let message = received.messages.unwrap_or_default().pop().expect("the title job");
    let event = json!({"Records": [{
        "messageId": "title-1", "receiptHandle": message.receipt_handle.clone().unwrap(),
        "body": message.body.clone().unwrap(), "attributes": {}, "messageAttributes": {},
        "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:jobs", "awsRegion": "us-east-1"
    }]});
    let reply = ingest::handle(&ingest, event, coach_testkit::stack::ingest_deadline()).await.unwrap();
    assert_eq!(reply["batchItemFailures"], json!([{"itemIdentifier": "title-1"}]));
    assert_eq!(title(&services, &session).await, FIRST_WORDS, "untitled by the failed job");

    // Documents still go through: a shared doc is indexed.
    let key = "docs/feedback.md";
    let body = b"# Feedback\n\nPraise in public, correct in private.".to_vec();
    stack.aws.s3.put_object().bucket(&stack.config.bucket).key(key).body(body.into()).send().await.unwrap();
    let mut event: Value = serde_json::from_str(&coach_testkit::events::load("s3-put-doc.json")).unwrap();
    event["Records"][0]["s3"]["object"]["key"] = key.into();
    event["Records"][0]["s3"]["bucket"]["name"] = stack.config.bucket.clone().into();
    ingest::handle(&ingest, event, coach_testkit::stack::ingest_deadline()).await.unwrap();
    let record = stack.items("GLOBAL").await;
    assert_eq!(record[0]["status"].as_s().unwrap(), "ready");
}
