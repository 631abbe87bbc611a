//! AWS SDK clients and the names of Coach's AWS resources, built once per cold start.
//!
//! The endpoint comes from the standard SDK environment (`AWS_ENDPOINT_URL`, or the
//! per-service `AWS_ENDPOINT_URL_S3` and friends), so the same code talks to AWS or to the
//! local emulator. No call waits longer than `COACH_AWS_TIMEOUT_MS`.

use std::{sync::Arc, time::Duration};

use aws_config::{timeout::TimeoutConfig, BehaviorVersion};
use aws_smithy_runtime_api::{
    client::{
        interceptors::{Intercept, SharedInterceptor},
        result::SdkError,
    },
    http::Response as HttpResponse,
};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::{
    spans::CallSpans, BedrockRuntime, DynamoTable, Failure, JobQueue, ModelRuntime, S3Bucket, SecretsManager, SqsQueue,
    StoreError,
};
use crate::config::{ConfigError, Env, StartupError};

/// Coach's AWS resources and how to reach them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// S3 bucket holding `docs/`, `prompt/`, `uploads/` and `index/` (`COACH_BUCKET`).
    pub bucket: String,
    /// DynamoDB table for sessions, messages, documents and counters (`COACH_TABLE`).
    pub table: String,
    /// Secrets Manager id or ARN of the Coach secret (`COACH_SECRET_ID`): the model,
    /// embedding and Auth0 credentials.
    pub secret_id: String,
    /// The secret holding the HS256 signing key (`COACH_JWT_SECRET_ID`; by default the Coach
    /// secret). Deployed, a secret of its own that only the HTTP functions can read, so
    /// ingest, which parses untrusted files, never can.
    pub jwt_secret_id: String,
    /// Upper bound on one AWS SDK operation, retries included (`COACH_AWS_TIMEOUT_MS`).
    pub aws_timeout: Duration,
    /// Path-style S3 addressing, needed by local emulators (`COACH_S3_FORCE_PATH_STYLE`).
    pub s3_force_path_style: bool,
    /// The SQS queue of ingest's jobs (`COACH_INGEST_QUEUE_URL`), when the deployment has one.
    pub queue_url: Option<String>,
    /// Amazon Bedrock's runtime endpoint, over `AWS_ENDPOINT_URL`
    /// (`AWS_ENDPOINT_URL_BEDROCK_RUNTIME`: a local stand-in).
    pub bedrock_endpoint: Option<String>,
}

impl StoreConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let bucket = env.text("COACH_BUCKET");
        validate_bucket_name(&bucket).map_err(|reason| ConfigError { var: "COACH_BUCKET", reason })?;
        let table = env.text("COACH_TABLE");
        validate_table_name(&table).map_err(|reason| ConfigError { var: "COACH_TABLE", reason })?;
        // Local emulators serve buckets by path, not by virtual host: default to path style
        // whenever a custom endpoint is configured.
        let custom_endpoint = env.string("AWS_ENDPOINT_URL").is_some() || env.string("AWS_ENDPOINT_URL_S3").is_some();
        Ok(Self {
            bucket,
            table,
            jwt_secret_id: env.string("COACH_JWT_SECRET_ID").unwrap_or_else(|| env.text("COACH_SECRET_ID")),
            secret_id: env.text("COACH_SECRET_ID"),
            aws_timeout: Duration::from_millis(env.number("COACH_AWS_TIMEOUT_MS")?),
            s3_force_path_style: env.boolean_or("COACH_S3_FORCE_PATH_STYLE", custom_endpoint)?,
            queue_url: env.string("COACH_INGEST_QUEUE_URL"),
            bedrock_endpoint: env.string("AWS_ENDPOINT_URL_BEDROCK_RUNTIME"),
        })
    }
}

/// The SDK clients, cheap to clone (each is an `Arc` inside), and the resources they serve.
#[derive(Debug, Clone)]
pub struct AwsClients {
    pub s3: aws_sdk_s3::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub config: StoreConfig,
    /// The SDK's configuration, for clients built on demand (the model runtime's).
    sdk: aws_config::SdkConfig,
    /// Interceptors every client has besides Coach's call spans (tests hold clients to a
    /// function's IAM policies with one).
    interceptors: Vec<SharedInterceptor>,
}

impl AwsClients {
    /// Loads credentials, region and endpoint from the environment and builds the clients.
    pub async fn load(config: StoreConfig) -> Self {
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

    /// A function's cold start: reads the whole configuration from the process environment
    /// first (the store's and, with `load`, the function's settings), then loads the
    /// clients and hands them and the settings to `build`, which makes the function's state.
    pub async fn cold_start<C, S>(
        load: impl FnOnce(&Env) -> Result<C, ConfigError>,
        build: impl FnOnce(C, &AwsClients) -> Result<S, StartupError>,
    ) -> Result<S, StartupError> {
        let env = Env::process();
        let store = StoreConfig::from_env(&env)?;
        let settings = load(&env)?;
        build(settings, &Self::load(store).await)
    }

    /// Builds the clients from an already loaded SDK configuration (tests point it at an
    /// emulator with explicit credentials).
    pub fn from_sdk_config(sdk: &aws_config::SdkConfig, config: StoreConfig) -> Self {
        // Every call in a span of its own (see `spans`).
        let s3_config = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(config.s3_force_path_style)
            .interceptor(CallSpans)
            .build();
        Self {
            s3: aws_sdk_s3::Client::from_conf(s3_config),
            dynamodb: aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(sdk).interceptor(CallSpans).build(),
            ),
            secrets: aws_sdk_secretsmanager::Client::from_conf(
                aws_sdk_secretsmanager::config::Builder::from(sdk).interceptor(CallSpans).build(),
            ),
            sqs: aws_sdk_sqs::Client::from_conf(aws_sdk_sqs::config::Builder::from(sdk).interceptor(CallSpans).build()),
            config,
            sdk: sdk.clone(),
            interceptors: Vec::new(),
        }
    }

    /// The same clients, for the resources and settings of `config`.
    pub fn with_config(&self, config: StoreConfig) -> Self {
        Self { config, ..self.clone() }
    }

    /// The same clients, each also running `interceptor` (the model runtime's too).
    pub fn with_interceptor(&self, interceptor: impl Intercept + 'static) -> Self {
        let shared = SharedInterceptor::new(interceptor);
        let mut interceptors = self.interceptors.clone();
        interceptors.push(shared.clone());
        Self {
            s3: aws_sdk_s3::Client::from_conf(self.s3.config().to_builder().interceptor(shared.clone()).build()),
            dynamodb: aws_sdk_dynamodb::Client::from_conf(
                self.dynamodb.config().to_builder().interceptor(shared.clone()).build(),
            ),
            secrets: aws_sdk_secretsmanager::Client::from_conf(
                self.secrets.config().to_builder().interceptor(shared.clone()).build(),
            ),
            sqs: aws_sdk_sqs::Client::from_conf(self.sqs.config().to_builder().interceptor(shared).build()),
            config: self.config.clone(),
            sdk: self.sdk.clone(),
            interceptors,
        }
    }

    /// The table, as the history, document and counter store.
    pub fn table(&self) -> DynamoTable {
        DynamoTable::new(self.dynamodb.clone(), self.config.table.clone())
    }

    /// The bucket, as the object and index store.
    pub fn bucket(&self) -> S3Bucket {
        S3Bucket::new(self.s3.clone(), self.config.bucket.clone())
    }

    /// The ingest jobs queue (`COACH_INGEST_QUEUE_URL`), if the deployment has one.
    pub fn job_queue(&self) -> Option<Arc<dyn JobQueue>> {
        let url = self.config.queue_url.clone()?;
        Some(Arc::new(SqsQueue::new(self.sqs.clone(), url)))
    }

    /// Amazon Bedrock's runtime, as the model runtime, each call bounded by `timeout` and
    /// tried at most `attempts` times, backing off from `backoff`.
    pub fn model_runtime(&self, timeout: Duration, attempts: u32, backoff: Duration) -> Arc<dyn ModelRuntime> {
        let endpoint = self.config.bedrock_endpoint.as_deref();
        Arc::new(BedrockRuntime::new(&self.sdk, endpoint, timeout, attempts, backoff, &self.interceptors))
    }

    /// Secrets Manager, as the secret source.
    pub fn secrets_manager(&self) -> SecretsManager {
        SecretsManager::new(self.secrets.clone())
    }
}

/// Classifies an SDK error without looking at anything the caller should not see.
pub(super) fn classify<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Failure {
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
                || code == "ProvisionedThroughputExceededException"
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

/// A failed SDK call as a [`StoreError`], classified, with the SDK error as its cause.
pub(super) fn service_error<E>(action: &'static str, err: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let failure = classify(&err);
    StoreError::Service { action, failure, cause: Box::new(err) }
}

/// S3 bucket naming rules (general purpose buckets).
fn validate_bucket_name(name: &str) -> Result<(), String> {
    let ok_chars = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let ok_ends =
        name.starts_with(|c: char| c.is_ascii_alphanumeric()) && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if (3..=63).contains(&name.len()) && ok_chars && ok_ends && !name.contains("..") {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid S3 bucket name (3-63 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit)"
        ))
    }
}

/// DynamoDB table naming rules.
fn validate_table_name(name: &str) -> Result<(), String> {
    let ok_chars = name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if (3..=255).contains(&name.len()) && ok_chars {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid DynamoDB table name (3-255 letters, digits, '_', '-' or '.')"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<StoreConfig, ConfigError> {
        crate::config::with(vars, StoreConfig::from_env)
    }

    #[test]
    fn defaults_work_with_the_local_stack() {
        let c = config(&[]).unwrap();
        assert_eq!(c.bucket, "coach-local");
        assert_eq!(c.table, "coach-local");
        assert_eq!(c.aws_timeout, Duration::from_secs(3));
        assert!(!c.s3_force_path_style);
    }

    #[test]
    fn custom_endpoint_implies_path_style_unless_overridden() {
        assert!(config(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")]).unwrap().s3_force_path_style);
        let c = config(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"), ("COACH_S3_FORCE_PATH_STYLE", "false")]);
        assert!(!c.unwrap().s3_force_path_style);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = config(&[("COACH_BUCKET", "Not_A_Bucket")]).unwrap_err();
        assert_eq!(err.var, "COACH_BUCKET");
        assert!(err.to_string().contains("COACH_BUCKET"), "{err}");

        assert_eq!(config(&[("COACH_TABLE", "a b")]).unwrap_err().var, "COACH_TABLE");
        assert_eq!(config(&[("COACH_AWS_TIMEOUT_MS", "fast")]).unwrap_err().var, "COACH_AWS_TIMEOUT_MS");
        assert_eq!(config(&[("COACH_AWS_TIMEOUT_MS", "10")]).unwrap_err().var, "COACH_AWS_TIMEOUT_MS");
        assert_eq!(config(&[("COACH_S3_FORCE_PATH_STYLE", "maybe")]).unwrap_err().var, "COACH_S3_FORCE_PATH_STYLE");
    }

    #[test]
    fn blank_values_count_as_unset() {
        assert_eq!(config(&[("COACH_BUCKET", "  ")]).unwrap().bucket, "coach-local");
    }
}
