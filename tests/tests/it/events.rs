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
