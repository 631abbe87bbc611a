//! template.yaml's IAM policies against the least-privilege rules of
//! `scripts/check_policies.py` (which secrets each function reads, no wildcards, no Scan,
//! versions listed only under a prefix). Moto does not enforce IAM, so the policies are
//! checked as written.

#[test]
fn template_policies_are_least_privilege() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = std::process::Command::new(root.join(".venv/bin/python"))
        .arg(root.join("scripts/check_policies.py"))
        .arg(root.join("template.yaml"))
        .output()
        .expect("the project's venv python (scripts/bootstrap.sh)");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}{}", String::from_utf8_lossy(&output.stderr));
}

/// The IAM view of the test kit ([`coach_testkit::iam`]), which holds every deployment's
/// calls to its function's policies: a call the template does not allow fails as on AWS and is
/// reported with the function, the call and the permission; an allowed one goes through.
#[tokio::test]
async fn calls_the_template_does_not_allow_are_denied_and_named() {
    use coach_testkit::{
        iam::Iam,
        stack::{enforcing, TestStack},
    };
    use std::sync::Arc;
    let stack = TestStack::new().await;
    let iam = Arc::new(Iam::new(stack.iam_names()));
    let (bucket, table) = (&stack.config.bucket, &stack.config.table);

    // Ingest reads uploads and docs, never the prompt; chat reads the prompt.
    let ingest = enforcing(&stack.aws, iam.enforcer("IngestFunction"));
    let read = ingest.s3.get_object().bucket(bucket).key("prompt/system_prompt.md").send().await;
    assert!(read.is_err());
    let chat = enforcing(&stack.aws, iam.enforcer("ChatFunction"));
    let read = chat.s3.get_object().bucket(bucket).key("prompt/system_prompt.md").send().await;
    assert!(read.unwrap_err().into_service_error().is_no_such_key(), "allowed, and answered by S3");

    // Ingest queries the base table (title jobs, re-embedding); docs-refresh may not.
    let query = |aws: &coach::store::AwsClients| {
        aws.dynamodb
            .query()
            .table_name(table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", aws_sdk_dynamodb::types::AttributeValue::S("X".into()))
            .send()
    };
    assert!(query(&ingest).await.is_ok());
    let refresh = enforcing(&stack.aws, iam.enforcer("DocsRefreshFunction"));
    assert!(query(&refresh).await.is_err());
    // Versions are listed only under uploads/ and index/.
    let versions = ingest.s3.list_object_versions().bucket(bucket).prefix("prompt/").send().await;
    assert!(versions.is_err());
    assert!(ingest.s3.list_object_versions().bucket(bucket).prefix("uploads/t/").send().await.is_ok());

    let denials: Vec<String> = iam.denials().iter().map(ToString::to_string).collect();
    assert_eq!(denials.len(), 3, "{denials:#?}");
    assert!(
        denials[0].starts_with("IngestFunction: S3:GetObject needs s3:GetObject on arn:aws:s3:::coach-test-"),
        "{}",
        denials[0]
    );
    assert!(denials[0].contains("/prompt/system_prompt.md"), "{}", denials[0]);
    assert!(
        denials[1].starts_with("DocsRefreshFunction: DynamoDB:Query needs dynamodb:Query on arn:aws:dynamodb:"),
        "{}",
        denials[1]
    );
    assert!(
        denials[2].contains("s3:ListBucketVersions") && denials[2].contains(r#"{"s3:prefix": "prompt/"}"#),
        "{}",
        denials[2]
    );
    assert!(
        denials[2].contains("ListVersions grants it"),
        "names the statement that grants it elsewhere: {}",
        denials[2]
    );
}
