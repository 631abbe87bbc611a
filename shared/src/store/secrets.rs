//! AWS Secrets Manager as the source of secret strings.

use async_trait::async_trait;

use super::{aws::service_error, SecretSource, StoreResult};

/// Secrets Manager. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SecretsManager {
    client: aws_sdk_secretsmanager::Client,
}

impl SecretsManager {
    pub fn new(client: aws_sdk_secretsmanager::Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl SecretSource for SecretsManager {
    async fn secret_string(&self, secret_id: &str) -> StoreResult<String> {
        let output = self
            .client
            .get_secret_value()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|e| service_error("read secret", e))?;
        Ok(output.secret_string().unwrap_or_default().to_owned())
    }
}
