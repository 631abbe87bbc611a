//! Every sample event in `events/` is what its trigger really sends: HTTP events parse as
//! API Gateway v2 requests for a route declared in template.yaml, S3, SQS and schedule
//! events parse into the runtime's event types.

use aws_lambda_events::{cloudwatch_events::CloudWatchEvent, s3::S3Event, sqs::SqsEvent};
use coach_testkit::events;

fn event_files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(events::path(""))
        .expect("events/ exists")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
}

#[test]
fn every_event_parses_as_its_trigger_sends_it() {
    let template = std::fs::read_to_string(events::path("../template.yaml")).expect("template.yaml");
    let files = event_files();
    assert!(files.len() >= 10, "expected sample events, found {files:?}");
    for name in files {
        let raw = events::load(&name);
        let json: serde_json::Value = serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
        if json["routeKey"] == "$default" {
            // A Function URL request (chat-stream): routed by path in the function itself.
            let request = lambda_http::request::from_str(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(request.uri().path(), "/chat/stream", "{name}");
            assert!(
                template.contains("InvokeMode: RESPONSE_STREAM"),
                "{name}: no streaming Function URL in template.yaml"
            );
        } else if json.get("routeKey").is_some() {
            let request = lambda_http::request::from_str(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
            let route_key = json["routeKey"].as_str().unwrap();
            let (method, route) = route_key.split_once(' ').unwrap();
            assert_eq!(request.method().as_str(), method, "{name}");
            let declared = format!("Method: {method}, Path: {route} }}");
            let declared_quoted = format!("Method: {method}, Path: \"{route}\" }}");
            assert!(
                template.contains(&declared) || template.contains(&declared_quoted),
                "{name}: route {route_key} is not declared in template.yaml"
            );
        } else if json["Records"][0]["eventSource"] == "aws:s3" {
            let event: S3Event = serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(event.records[0].s3.object.key.is_some(), "{name}");
        } else if json["Records"][0]["eventSource"] == "aws:sqs" {
            let event: SqsEvent = serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
            for record in event.records {
                let body: serde_json::Value = serde_json::from_str(record.body.as_deref().unwrap()).unwrap();
                assert!(body.get("Records").is_some() || body["Event"] == "s3:TestEvent", "{name}");
            }
        } else if json["source"] == "aws.events" {
            let event: CloudWatchEvent = serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(event.detail_type.as_deref(), Some("Scheduled Event"), "{name}");
        } else {
            panic!("{name}: unknown kind of event");
        }
    }
}

/// `events/chat-post.json` as API Gateway delivers a body it holds as bytes: base64-encoded,
/// `isBase64Encoded: true`, signed by a token of `tenant`'s user `alice`.
fn base64_event(path: &str, routed: &str, body: &[u8], token: &str) -> lambda_http::Request {
    use base64::Engine;
    let mut event: serde_json::Value = serde_json::from_str(&events::load("chat-post.json")).unwrap();
    event["routeKey"] = format!("POST {routed}").into();
    event["rawPath"] = path.into();
    event["requestContext"]["http"]["path"] = path.into();
    event["headers"]["authorization"] = format!("Bearer {token}").into();
    event["headers"]["content-length"] = body.len().to_string().into();
    event["body"] = base64::engine::general_purpose::STANDARD.encode(body).into();
    event["isBase64Encoded"] = true.into();
    lambda_http::request::from_str(&event.to_string()).expect("an API Gateway v2 event")
}

/// A body API Gateway hands over base64-encoded is read as its bytes: JSON in UTF-8 is
/// answered; bytes that are not UTF-8 (the local stand-in for API Gateway refuses them
/// before Coach sees them; API Gateway delivers them) are a 400 in Coach's error shape,
/// never a 500, on each function that takes a body.
#[tokio::test]
async fn base64_encoded_and_non_utf8_bodies_are_read_as_api_gateway_delivers_them() {
    use coach_testkit::{stack::TestStack, tokens};
    use lambda_http::http::StatusCode;
    let services = TestStack::new().await.deploy();
    let user = tokens::for_test("alice", "acme", &["user", "editor"]);
    let json = |response: lambda_http::Response<lambda_http::Body>| {
        let status = response.status();
        (status, serde_json::from_slice::<serde_json::Value>(response.body().as_ref()).unwrap())
    };

    let question = br#"{"message": "How do I give feedback?"}"#;
    let (status, reply) = json(chat::handle(&services.chat, base64_event("/chat", "/chat", question, &user)).await);
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert!(reply["answer"].is_string(), "{reply}");

    let latin1 = b"{\"message\": \"caf\xe9 \xff\xfe\"}";
    for (path, function) in [("/chat", "chat"), ("/qa", "chat"), ("/documents", "upload-url")] {
        let request = base64_event(path, path, latin1, &user);
        let response = match function {
            "chat" => chat::handle(&services.chat, request).await,
            _ => upload_url::handle(&services.uploads, request).await,
        };
        let (status, error) = json(response);
        assert_eq!(
            (status, error["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("bad_request")),
            "{path}: {error}"
        );
    }
}
