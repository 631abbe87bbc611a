//! AWS SDK clients, built once per cold start and passed to handlers as state.
//!
//! The endpoint comes from the standard SDK environment (`AWS_ENDPOINT_URL`, or the
//! per-service `AWS_ENDPOINT_URL_S3` and friends), so the same code talks to AWS or to the
//! local emulator. Timeouts come from [`Config`]; no call waits forever.

use std::time::Duration;

use aws_config::{timeout::TimeoutConfig, BehaviorVersion};
use aws_smithy_runtime_api::{client::result::SdkError, http::Response as HttpResponse};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::config::Config;

/// The SDK clients a function needs, cheap to clone (each is an `Arc` inside).
#[derive(Debug, Clone)]
pub struct AwsClients {
    pub s3: aws_sdk_s3::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
}

impl AwsClients {
    /// Loads credentials, region and endpoint from the environment and builds the clients.
    pub async fn new(config: &Config) -> Self {
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(config.aws_timeout.min(Duration::from_secs(1)))
                    .operation_timeout(config.aws_timeout)
                    .build(),
            )
            .load()
            .await;
        Self::from_sdk_config(&sdk, config)
    }

    /// Builds the clients from an already loaded SDK configuration (used by tests that
    /// point at an emulator with explicit credentials).
    pub fn from_sdk_config(sdk: &aws_config::SdkConfig, config: &Config) -> Self {
        let s3_config = aws_sdk_s3::config::Builder::from(sdk).force_path_style(config.s3_force_path_style).build();
        Self {
            s3: aws_sdk_s3::Client::from_conf(s3_config),
            dynamodb: aws_sdk_dynamodb::Client::new(sdk),
            secrets: aws_sdk_secretsmanager::Client::new(sdk),
        }
    }
}

/// Why a call to an AWS service failed, in terms an operator (not the SDK) thinks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// The bucket, table or secret does not exist.
    NotFound,
    /// The credentials lack permission.
    AccessDenied,
    /// The service is throttling us.
    Throttled,
    /// No answer within the configured timeout.
    TimedOut,
    /// The endpoint could not be reached at all.
    Unreachable,
    /// Anything else.
    Failed,
}

/// Classifies an SDK error without looking at anything the caller should not see.
pub fn classify<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Failure {
    match err {
        SdkError::TimeoutError(_) => Failure::TimedOut,
        SdkError::DispatchFailure(f) if f.is_timeout() => Failure::TimedOut,
        SdkError::DispatchFailure(_) => Failure::Unreachable,
        SdkError::ServiceError(_) | SdkError::ResponseError(_) => {
            let code = err.code().unwrap_or_default();
            let status = err.raw_response().map(|r| r.status().as_u16());
            if code.contains("NotFound") || code == "NoSuchBucket" || status == Some(404) {
                Failure::NotFound
            } else if code.starts_with("AccessDenied") || code == "UnrecognizedClientException" || status == Some(403) {
                Failure::AccessDenied
            } else if code.contains("Throttl")
                || code == "SlowDown"
                || code.contains("LimitExceeded")
                || status == Some(429)
            {
                Failure::Throttled
            } else {
                Failure::Failed
            }
        }
        _ => Failure::Failed,
    }
}

/// The caller-facing error for a failed S3/DynamoDB call, with what failed logged (never the
/// caller's data): 503, "busy" when throttled.
pub fn unavailable(action: &str, failure: Failure) -> crate::Error {
    tracing::error!(action, ?failure, "AWS call failed");
    match failure {
        Failure::Throttled => crate::Error::Unavailable("storage is busy; try again".into()),
        _ => crate::Error::Unavailable("storage is unavailable".into()),
    }
}

/// A DynamoDB string attribute.
pub fn s(value: &str) -> aws_sdk_dynamodb::types::AttributeValue {
    aws_sdk_dynamodb::types::AttributeValue::S(value.to_owned())
}

/// A DynamoDB number attribute.
pub fn n(value: u64) -> aws_sdk_dynamodb::types::AttributeValue {
    aws_sdk_dynamodb::types::AttributeValue::N(value.to_string())
}
