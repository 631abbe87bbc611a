//! A model runtime reached through the AWS SDK: Amazon Bedrock's Converse and ConverseStream
//! ([`BedrockRuntime`]), behind [`ModelRuntime`] so the `bedrock` provider
//! ([`crate::llm`]) never names an SDK type. Requests and replies are Coach's own types; the
//! service's errors are classified ([`RuntimeError`]) by their documented codes.

use std::{pin::Pin, time::Duration};

use async_trait::async_trait;
use aws_sdk_bedrockruntime::{
    error::SdkError,
    types::{
        ContentBlock, ContentBlockDelta, ConversationRole, ConverseOutput, ConverseStreamOutput,
        GuardrailConfiguration, GuardrailStreamConfiguration, InferenceConfiguration, Message, StopReason,
        SystemContentBlock, TokenUsage,
    },
    Client,
};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use futures_util::Stream;

use crate::model::Author;

/// What the model is asked.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeRequest {
    /// A model id or an inference profile's id or ARN.
    pub model: String,
    pub system: String,
    /// The conversation, oldest first, the last turn the user's.
    pub turns: Vec<(Author, String)>,
    pub max_tokens: u32,
    pub temperature: Option<f32>,
    /// A guardrail (id, version) applied to the input and the output.
    pub guardrail: Option<(String, String)>,
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The reply is whole.
    Finished,
    /// The output token limit cut it.
    MaxTokens,
    /// A guardrail intervened: the text is the guardrail's message.
    Guardrail,
    /// The model's own content filter stopped it.
    ContentFiltered,
    /// Anything else the service says (tool use, a stop sequence).
    Other(String),
}

/// A whole reply.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeReply {
    pub text: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub stop: Stop,
}

/// A piece of a streamed reply.
#[derive(Debug, Clone, PartialEq)]
pub enum RuntimeEvent {
    Text(String),
    Usage { input_tokens: u64, output_tokens: u64 },
    Stop(Stop),
}

pub type RuntimeEvents = Pin<Box<dyn Stream<Item = Result<RuntimeEvent, RuntimeError>> + Send>>;

/// How a model call failed, by the service's documented error codes.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// `ThrottlingException`, `ServiceQuotaExceededException`: too many requests or tokens.
    #[error("the model runtime is throttling requests")]
    Throttled,
    /// `ModelNotReadyException`: the model is not ready to serve yet.
    #[error("the model is not ready")]
    NotReady,
    /// `ValidationException`: the request was refused; the service's message says why.
    #[error("the request was refused: {0}")]
    Invalid(String),
    /// `AccessDeniedException`: this account or role may not call the model.
    #[error("access to the model was denied: {0}")]
    AccessDenied(String),
    /// `ResourceNotFoundException`: no such model or inference profile here.
    #[error("no such model: {0}")]
    NotFound(String),
    /// `ServiceUnavailableException`: the service cannot serve now.
    #[error("the model runtime is unavailable: {0}")]
    Unavailable(String),
    /// `InternalServerException`, `ModelErrorException`, `ModelTimeoutException`, an
    /// exception in the middle of a stream, a timeout or a connection that failed.
    #[error("the model call failed: {0}")]
    Failed(String),
}

/// A model runtime: a whole reply, or a reply streamed piece by piece.
#[async_trait]
pub trait ModelRuntime: Send + Sync {
    async fn converse(&self, request: &RuntimeRequest) -> Result<RuntimeReply, RuntimeError>;
    async fn converse_stream(&self, request: &RuntimeRequest) -> Result<RuntimeEvents, RuntimeError>;
    /// `InvokeModel`: `body` (JSON, in the model's own format) to `model`, its JSON reply.
    async fn invoke(&self, model: &str, body: Vec<u8>) -> Result<Vec<u8>, RuntimeError>;
}

/// Amazon Bedrock's runtime (`bedrock-runtime`), the endpoint from the SDK's environment
/// (`AWS_ENDPOINT_URL_BEDROCK_RUNTIME` points it at a stand-in).
pub struct BedrockRuntime {
    client: Client,
    /// Bound on a whole reply, and on the wait for each event of a stream.
    timeout: Duration,
}

impl BedrockRuntime {
    /// A client of `sdk`'s region and credentials (at `endpoint` when given, with
    /// `interceptors` besides the call spans), whose every call (its retries included:
    /// at most `attempts`, backing off from `backoff`) is bounded by `timeout`: a model takes
    /// longer than the table.
    pub fn new(
        sdk: &aws_config::SdkConfig,
        endpoint: Option<&str>,
        timeout: Duration,
        attempts: u32,
        backoff: Duration,
        interceptors: &[aws_smithy_runtime_api::client::interceptors::SharedInterceptor],
    ) -> Self {
        let mut config = aws_sdk_bedrockruntime::config::Builder::from(sdk);
        if let Some(endpoint) = endpoint {
            config = config.endpoint_url(endpoint);
        }
        for interceptor in interceptors {
            config = config.interceptor(interceptor.clone());
        }
        let config = config
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(2))
                    .operation_timeout(timeout)
                    .build(),
            )
            .retry_config(
                aws_config::retry::RetryConfig::standard()
                    .with_max_attempts(attempts.max(1))
                    .with_initial_backoff(backoff),
            )
            .interceptor(super::spans::CallSpans)
            .build();
        Self { client: Client::from_conf(config), timeout }
    }
}

/// What Converse and ConverseStream share, set on either's request: the model, the system
/// prompt, the conversation and the limits.
macro_rules! conversation {
    ($call:expr, $request:expr) => {
        $call
            .model_id(&$request.model)
            .system(SystemContentBlock::Text($request.system.clone()))
            .set_messages(Some(messages($request)?))
            .inference_config(inference($request))
    };
}

fn messages(request: &RuntimeRequest) -> Result<Vec<Message>, RuntimeError> {
    request
        .turns
        .iter()
        .map(|(author, text)| {
            let role = match author {
                Author::User => ConversationRole::User,
                Author::Assistant => ConversationRole::Assistant,
            };
            Message::builder()
                .role(role)
                .content(ContentBlock::Text(text.clone()))
                .build()
                .map_err(|e| RuntimeError::Invalid(e.to_string()))
        })
        .collect()
}

fn inference(request: &RuntimeRequest) -> InferenceConfiguration {
    InferenceConfiguration::builder()
        .max_tokens(i32::try_from(request.max_tokens).unwrap_or(i32::MAX))
        .set_temperature(request.temperature)
        .build()
}

fn stop(reason: &StopReason) -> Stop {
    match reason {
        StopReason::EndTurn => Stop::Finished,
        StopReason::MaxTokens => Stop::MaxTokens,
        StopReason::GuardrailIntervened => Stop::Guardrail,
        StopReason::ContentFiltered => Stop::ContentFiltered,
        other => Stop::Other(other.as_str().to_owned()),
    }
}

fn tokens(usage: Option<&TokenUsage>) -> (u64, u64) {
    usage.map_or((0, 0), |u| (u.input_tokens.max(0) as u64, u.output_tokens.max(0) as u64))
}

/// The class of a failed call, by the service error's code (the same for both operations).
fn classify<E: ProvideErrorMetadata + std::error::Error, R>(err: &SdkError<E, R>) -> RuntimeError {
    let message = |e: &E| e.message().unwrap_or("no message").to_owned();
    match err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            // A stream's exceptions are named in camel case (`throttlingException`).
            let code = e.code().map(str::to_ascii_lowercase);
            match code.as_deref() {
                Some("throttlingexception" | "servicequotaexceededexception") => RuntimeError::Throttled,
                Some("modelnotreadyexception") => RuntimeError::NotReady,
                Some("validationexception") => RuntimeError::Invalid(message(e)),
                Some("accessdeniedexception") => RuntimeError::AccessDenied(message(e)),
                Some("resourcenotfoundexception") => RuntimeError::NotFound(message(e)),
                Some("serviceunavailableexception") => RuntimeError::Unavailable(message(e)),
                code => RuntimeError::Failed(format!("{}: {}", code.unwrap_or("unknown error"), message(e))),
            }
        }
        SdkError::TimeoutError(_) => RuntimeError::Failed("no answer within the model timeout".into()),
        other => RuntimeError::Failed(format!("{other}")),
    }
}

#[async_trait]
impl ModelRuntime for BedrockRuntime {
    async fn converse(&self, request: &RuntimeRequest) -> Result<RuntimeReply, RuntimeError> {
        let mut call = conversation!(self.client.converse(), request);
        if let Some((id, version)) = &request.guardrail {
            call = call.guardrail_config(
                GuardrailConfiguration::builder().guardrail_identifier(id).guardrail_version(version).build(),
            );
        }
        let output = call.send().await.map_err(|e| classify(&e))?;
        let text = match output.output() {
            Some(ConverseOutput::Message(message)) => message
                .content()
                .iter()
                .filter_map(|block| match block {
                    ContentBlock::Text(text) => Some(text.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(""),
            _ => String::new(),
        };
        let (input_tokens, output_tokens) = tokens(output.usage());
        Ok(RuntimeReply { text, input_tokens, output_tokens, stop: stop(output.stop_reason()) })
    }

    async fn invoke(&self, model: &str, body: Vec<u8>) -> Result<Vec<u8>, RuntimeError> {
        let output = self
            .client
            .invoke_model()
            .model_id(model)
            .content_type("application/json")
            .accept("application/json")
            .body(aws_smithy_types::Blob::new(body))
            .send()
            .await
            .map_err(|e| classify(&e))?;
        Ok(output.body.into_inner())
    }

    async fn converse_stream(&self, request: &RuntimeRequest) -> Result<RuntimeEvents, RuntimeError> {
        let mut call = conversation!(self.client.converse_stream(), request);
        if let Some((id, version)) = &request.guardrail {
            call = call.guardrail_config(
                GuardrailStreamConfiguration::builder().guardrail_identifier(id).guardrail_version(version).build(),
            );
        }
        let output = call.send().await.map_err(|e| classify(&e))?;
        let timeout = self.timeout;
        let events = futures_util::stream::unfold(Some(output.stream), move |receiver| async move {
            let mut receiver = receiver?;
            loop {
                let event = match tokio::time::timeout(timeout, receiver.recv()).await {
                    Ok(Ok(Some(event))) => event,
                    Ok(Ok(None)) => return None,
                    Ok(Err(e)) => return Some((Err(classify(&e)), None)),
                    Err(_) => {
                        let stalled = RuntimeError::Failed("the stream stalled past the model timeout".into());
                        return Some((Err(stalled), None));
                    }
                };
                let event = match event {
                    ConverseStreamOutput::ContentBlockDelta(delta) => match delta.delta() {
                        Some(ContentBlockDelta::Text(text)) => RuntimeEvent::Text(text.clone()),
                        _ => continue,
                    },
                    ConverseStreamOutput::MessageStop(stopped) => RuntimeEvent::Stop(stop(stopped.stop_reason())),
                    ConverseStreamOutput::Metadata(metadata) => {
                        let (input_tokens, output_tokens) = tokens(metadata.usage());
                        RuntimeEvent::Usage { input_tokens, output_tokens }
                    }
                    _ => continue,
                };
                return Some((Ok(event), Some(receiver)));
            }
        });
        Ok(Box::pin(events))
    }
}
