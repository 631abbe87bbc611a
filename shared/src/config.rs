//! Configuration from environment variables, read and validated once at cold start.
//!
//! Every variable has a default that works with the local stack (`make dev`), so
//! `cargo lambda watch` runs with no edits; deployed functions get their values from
//! `template.yaml`. A bad value stops the cold start with an error naming the variable.
//! This module only reads and validates; it does not build clients (see [`crate::aws`]).

use std::time::Duration;

/// Default bucket and table names used by the local stack.
pub const DEFAULT_BUCKET: &str = "coach-local";
pub const DEFAULT_TABLE: &str = "coach-local";

/// Typed configuration shared by every function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// S3 bucket holding `docs/`, `prompt/`, `uploads/` and `index/` (`COACH_BUCKET`).
    pub bucket: String,
    /// DynamoDB table for sessions, messages, documents and counters (`COACH_TABLE`).
    pub table: String,
    /// Upper bound on one AWS SDK operation, retries included (`COACH_AWS_TIMEOUT_MS`).
    pub aws_timeout: Duration,
    /// Path-style S3 addressing, needed by local emulators (`COACH_S3_FORCE_PATH_STYLE`).
    pub s3_force_path_style: bool,
}

/// A configuration variable that is present but unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {var}: {reason}")]
pub struct ConfigError {
    /// Name of the offending environment variable.
    pub var: &'static str,
    /// What is wrong with it, in words a deployer can act on.
    pub reason: String,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, so tests need not touch the process
    /// environment. Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());

        let bucket = get("COACH_BUCKET").unwrap_or_else(|| DEFAULT_BUCKET.to_owned());
        validate_bucket_name(&bucket).map_err(|reason| ConfigError {
            var: "COACH_BUCKET",
            reason,
        })?;

        let table = get("COACH_TABLE").unwrap_or_else(|| DEFAULT_TABLE.to_owned());
        validate_table_name(&table).map_err(|reason| ConfigError {
            var: "COACH_TABLE",
            reason,
        })?;

        let aws_timeout_ms = match get("COACH_AWS_TIMEOUT_MS") {
            None => 3_000,
            Some(v) => parse_in_range("COACH_AWS_TIMEOUT_MS", &v, 100, 60_000)?,
        };

        // Local emulators serve buckets by path, not by virtual host: default to path style
        // whenever a custom endpoint is configured.
        let custom_endpoint = get("AWS_ENDPOINT_URL").is_some() || get("AWS_ENDPOINT_URL_S3").is_some();
        let s3_force_path_style = match get("COACH_S3_FORCE_PATH_STYLE") {
            None => custom_endpoint,
            Some(v) => parse_bool("COACH_S3_FORCE_PATH_STYLE", &v)?,
        };

        Ok(Self {
            bucket,
            table,
            aws_timeout: Duration::from_millis(aws_timeout_ms),
            s3_force_path_style,
        })
    }
}

fn parse_in_range(var: &'static str, value: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    let reason = || format!("expected a whole number from {min} to {max}, got {value:?}");
    let n: u64 = value.parse().map_err(|_| ConfigError { var, reason: reason() })?;
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(ConfigError { var, reason: reason() })
    }
}

fn parse_bool(var: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(ConfigError {
            var,
            reason: format!("expected true or false, got {value:?}"),
        }),
    }
}

/// S3 bucket naming rules (general purpose buckets).
fn validate_bucket_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
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
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if (3..=255).contains(&name.len()) && ok_chars {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid DynamoDB table name (3-255 letters, digits, '_', '-' or '.')"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_work_with_the_local_stack() {
        let c = config(&[]).unwrap();
        assert_eq!(c.bucket, DEFAULT_BUCKET);
        assert_eq!(c.table, DEFAULT_TABLE);
        assert_eq!(c.aws_timeout, Duration::from_secs(3));
        assert!(!c.s3_force_path_style);
    }

    #[test]
    fn custom_endpoint_implies_path_style_unless_overridden() {
        assert!(
            config(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")])
                .unwrap()
                .s3_force_path_style
        );
        let c = config(&[
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
            ("COACH_S3_FORCE_PATH_STYLE", "false"),
        ]);
        assert!(!c.unwrap().s3_force_path_style);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = config(&[("COACH_BUCKET", "Not_A_Bucket")]).unwrap_err();
        assert_eq!(err.var, "COACH_BUCKET");
        assert!(err.to_string().contains("COACH_BUCKET"), "{err}");

        assert_eq!(config(&[("COACH_TABLE", "a b")]).unwrap_err().var, "COACH_TABLE");
        assert_eq!(
            config(&[("COACH_AWS_TIMEOUT_MS", "fast")]).unwrap_err().var,
            "COACH_AWS_TIMEOUT_MS"
        );
        assert_eq!(
            config(&[("COACH_AWS_TIMEOUT_MS", "10")]).unwrap_err().var,
            "COACH_AWS_TIMEOUT_MS"
        );
        assert_eq!(
            config(&[("COACH_S3_FORCE_PATH_STYLE", "maybe")]).unwrap_err().var,
            "COACH_S3_FORCE_PATH_STYLE"
        );
    }

    #[test]
    fn blank_values_count_as_unset() {
        assert_eq!(config(&[("COACH_BUCKET", "  ")]).unwrap().bucket, DEFAULT_BUCKET);
    }
}
