//! Ratings of replies (`PUT /sessions/{id}/messages/{message_id}/feedback`): kept on the
//! message, shown by the messages route, counted in the tenant's usage report.

use coach_testkit::flows::chat_call as call;
use coach_testkit::{
    stack::{Deployment, TestStack},
    tokens,
};
use lambda_http::http::StatusCode;
use serde_json::{json, Value};

fn token(user: &str, tenant: &str) -> String {
    tokens::for_test(user, tenant, &["user"])
}

async fn tenant_feedback(services: &Deployment) -> Value {
    let admin = tokens::for_test("carol", "acme", &["admin"]);
    let (status, report) = call(services, "GET", "/usage?scope=tenant", None, &admin).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    report["feedback"].clone()
}

#[tokio::test]
async fn a_reply_is_rated_by_its_user_and_counted_for_the_tenant() {
    let stack = TestStack::new().await;
    let services = stack.deploy();
    let alice = token("alice", "acme");
    let (status, reply) = call(&services, "POST", "/chat", Some(json!({"message": "How do I plan?"})), &alice).await;
    assert_eq!(status, StatusCode::OK);
    let (session, message) = (reply["session_id"].as_str().unwrap(), reply["message_id"].as_str().unwrap());
    let path = format!("/sessions/{session}/messages/{message}/feedback");
    assert_eq!(tenant_feedback(&services).await, json!({"up": 0, "down": 0, "reasons": {}}));

    let down = json!({"rating": "down", "reason": "inaccurate", "comment": "  Wrong \u{7}date.\nSee p. 2  "});
    let (status, rated) = call(&services, "PUT", &path, Some(down), &alice).await;
    assert_eq!(status, StatusCode::OK, "{rated}");
    assert_eq!(rated["message_id"], message);
    assert_eq!(rated["feedback"]["rating"], "down");
    assert_eq!(rated["feedback"]["reason"], "inaccurate");
    assert_eq!(rated["feedback"]["comment"], "Wrong date.\nSee p. 2");
    assert!(rated["feedback"]["updated_at"].as_str().unwrap().ends_with('Z'));
    // The messages route shows it; the user's message has none.
    let (_, page) = call(&services, "GET", &format!("/sessions/{session}/messages"), None, &alice).await;
    assert_eq!(page["messages"][0]["feedback"], rated["feedback"]);
    assert!(page["messages"][1].get("feedback").is_none());
    assert_eq!(tenant_feedback(&services).await, json!({"up": 0, "down": 1, "reasons": {"inaccurate": 1}}));

    // Rated again: replaced, and the counts move with it; the same rating twice counts once.
    for _ in 0..2 {
        let (status, rated) = call(&services, "PUT", &path, Some(json!({"rating": "up"})), &alice).await;
        assert_eq!(status, StatusCode::OK, "{rated}");
        assert!(rated["feedback"].get("reason").is_none() && rated["feedback"].get("comment").is_none());
    }
    assert_eq!(tenant_feedback(&services).await, json!({"up": 1, "down": 0, "reasons": {}}));
    let item = stack.items(&format!("TENANT#acme#USER#alice#SESSION#{session}")).await;
    let stored = item.iter().find(|i| i["sk"].as_s().unwrap() == &format!("MSG#{message}")).unwrap();
    assert_eq!(stored["feedback_rating"].as_s().unwrap(), "up");
    assert!(!stored.contains_key("feedback_comment"));

    // Only the session's user, only replies, only the fixed reasons, a short comment.
    let user_message = page["messages"][1]["message_id"].as_str().unwrap();
    let cases = [
        (
            format!("/sessions/{session}/messages/{user_message}/feedback"),
            json!({"rating": "up"}),
            &alice,
            StatusCode::CONFLICT,
        ),
        (path.clone(), json!({"rating": "up"}), &token("bob", "acme"), StatusCode::NOT_FOUND),
        (path.clone(), json!({"rating": "up"}), &token("alice", "globex"), StatusCode::NOT_FOUND),
        (
            format!("/sessions/{session}/messages/01ARZ3NDEKTSV4RRFFQ69G5FAV/feedback"),
            json!({"rating": "up"}),
            &alice,
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/sessions/{session}/messages/not-an-id/feedback"),
            json!({"rating": "up"}),
            &alice,
            StatusCode::BAD_REQUEST,
        ),
        (path.clone(), json!({"rating": "meh"}), &alice, StatusCode::BAD_REQUEST),
        (path.clone(), json!({"rating": "down", "reason": "boring"}), &alice, StatusCode::BAD_REQUEST),
        (path.clone(), json!({"rating": "down", "extra": 1}), &alice, StatusCode::BAD_REQUEST),
        (path.clone(), json!({"rating": "down", "comment": "x".repeat(1001)}), &alice, StatusCode::PAYLOAD_TOO_LARGE),
    ];
    for (path, body, who, expected) in cases {
        let (status, error) = call(&services, "PUT", &path, Some(body.clone()), who).await;
        assert_eq!(status, expected, "{path} {body}: {error}");
    }
    assert_eq!(call(&services, "GET", &path, None, &alice).await.0, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(tenant_feedback(&services).await, json!({"up": 1, "down": 0, "reasons": {}}), "refusals count nothing");
}
