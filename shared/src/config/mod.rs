//! Reading configuration from environment variables, once at cold start.
//!
//! Every setting is a row of one table ([`settings::SETTINGS`]): its name, default and
//! bounds. Each module parses its own section (`AuthConfig::from_env`, `LlmConfig::from_env`,
//! ...) through [`Env`], which reads a setting as its row says; each function's settings are
//! one typed value (its `Settings`) assembled from the sections of the modules it builds and
//! read once at cold start, before anything is built, so a function reads only the variables
//! of the modules it builds, and a bad setting of one module cannot stop another function's
//! cold start. Every default works with the local stack (`make dev`); deployed
//! functions get their values from `template.yaml`. A bad value stops the cold start with
//! an error naming the variable. Nothing else in Coach reads the process environment (a
//! test holds it so), except for what Lambda sets per invocation ([`lambda_trace_id`]).

pub mod settings;

use settings::{setting, Kind};

/// Why a function could not build its state at cold start (a bad variable, a client that
/// could not be built); the function logs it and exits.
pub type StartupError = Box<dyn std::error::Error + Send + Sync>;

/// A configuration variable that is present but unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {var}: {reason}")]
pub struct ConfigError {
    /// Name of the offending environment variable.
    pub var: &'static str,
    /// What is wrong with it, in words a deployer can act on.
    pub reason: String,
}

/// Typed access to environment variables; every error names its variable.
pub struct Env<'a>(pub &'a dyn Fn(&str) -> Option<String>);

fn process_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Env<'static> {
    /// The process environment.
    pub fn process() -> Self {
        Env(&process_var)
    }
}

/// A read of `var`, which the table does not have as a `kind`: a bug, said as the
/// variable's error so the cold start names it.
fn unknown(var: &'static str, kind: &str) -> ConfigError {
    ConfigError { var, reason: format!("not a {kind} setting of Coach's settings table (a bug)") }
}

impl Env<'_> {
    /// The trimmed value, `None` when unset or blank.
    pub fn string(&self, var: &str) -> Option<String> {
        debug_assert!(setting(var).is_some(), "{var} is not in the settings table");
        (self.0)(var).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    /// A text setting, its table default when unset.
    pub fn text(&self, var: &'static str) -> String {
        let default = match setting(var).map(|s| s.kind) {
            Some(Kind::Text { default: Some(default) }) => default,
            _ => {
                debug_assert!(false, "{var} has no default text in the settings table");
                ""
            }
        };
        self.string_or(var, default)
    }

    /// A text setting whose default the caller computes (the table has none).
    pub fn string_or(&self, var: &str, default: &str) -> String {
        self.string(var).unwrap_or_else(|| default.to_owned())
    }

    /// A comma-separated list, items trimmed, blanks dropped; empty when unset.
    pub fn list(&self, var: &str) -> Vec<String> {
        self.string(var)
            .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// A whole number within its bounds, its table default when unset.
    pub fn number(&self, var: &'static str) -> Result<u64, ConfigError> {
        match setting(var).map(|s| s.kind) {
            Some(Kind::Number { default: Some(default), .. }) => self.number_or(var, default),
            _ => Err(unknown(var, "number (with a default)")),
        }
    }

    /// A whole number within its bounds, `default` (computed by the caller) when unset.
    pub fn number_or(&self, var: &'static str, default: u64) -> Result<u64, ConfigError> {
        let Some(Kind::Number { min, max, .. }) = setting(var).map(|s| s.kind) else {
            return Err(unknown(var, "number"));
        };
        let Some(value) = self.string(var) else {
            return Ok(default);
        };
        let reason = || format!("expected a whole number from {min} to {max}, got {value:?}");
        let n: u64 = value.parse().map_err(|_| ConfigError { var, reason: reason() })?;
        if (min..=max).contains(&n) {
            Ok(n)
        } else {
            Err(ConfigError { var, reason: reason() })
        }
    }

    /// A decimal number within its bounds, its table default when unset.
    pub fn float(&self, var: &'static str) -> Result<f32, ConfigError> {
        let Some(Kind::Float { default, min, max }) = setting(var).map(|s| s.kind) else {
            return Err(unknown(var, "decimal"));
        };
        let Some(value) = self.string(var) else { return Ok(default) };
        value
            .parse::<f32>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| ConfigError { var, reason: format!("expected a number from {min} to {max}, got {value:?}") })
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`), `default` (computed by the caller) when unset.
    pub fn boolean_or(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        if setting(var).map(|s| s.kind) != Some(Kind::Flag) {
            return Err(unknown(var, "true/false"));
        }
        let Some(value) = self.string(var) else {
            return Ok(default);
        };
        match value.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(ConfigError { var, reason: format!("expected true or false, got {value:?}") }),
        }
    }
}

/// The X-Ray trace header Lambda sets for the invocation in progress (`_X_AMZN_TRACE_ID`):
/// not a setting, but what the runtime says of each invocation.
pub fn lambda_trace_id() -> Option<String> {
    std::env::var("_X_AMZN_TRACE_ID").ok()
}

/// Runs `read` over an environment of just `vars` (for the modules' configuration tests).
#[cfg(test)]
pub(crate) fn with<T>(vars: &[(&str, &str)], read: impl FnOnce(&Env) -> T) -> T {
    let lookup = |k: &str| vars.iter().find(|(name, _)| *name == k).map(|(_, v)| (*v).to_owned());
    read(&Env(&lookup))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_values_count_as_unset() {
        assert_eq!(with(&[("COACH_LLM_MODEL", "  ")], |env| env.string_or("COACH_LLM_MODEL", "d")), "d");
        assert_eq!(with(&[("COACH_JWKS_URL", " v ")], |env| env.string("COACH_JWKS_URL")), Some("v".into()));
        assert_eq!(with(&[("COACH_USER_CLAIM", " ")], |env| env.text("COACH_USER_CLAIM")), "sub");
    }

    #[test]
    fn settings_are_read_as_the_table_says_and_errors_name_the_variable() {
        let n = "COACH_HISTORY_LIMIT";
        assert_eq!(with(&[], |env| env.number(n)), Ok(10));
        assert_eq!(with(&[(n, "fast")], |env| env.number(n)).unwrap_err().var, n);
        assert_eq!(with(&[(n, "101")], |env| env.number(n)).unwrap_err().var, n);
        assert_eq!(with(&[(n, "100")], |env| env.number(n)), Ok(100));
        assert_eq!(with(&[], |env| env.number_or("COACH_INDEX_CACHE_MB", 7)), Ok(7));
        let f = "COACH_RETRIEVAL_MIN_SCORE";
        assert_eq!(with(&[(f, "0.5")], |env| env.float(f)), Ok(0.5));
        assert!(with(&[(f, "2")], |env| env.float(f)).is_err());
        let b = "COACH_S3_FORCE_PATH_STYLE";
        assert_eq!(with(&[(b, "yes")], |env| env.boolean_or(b, false)), Ok(true));
        assert_eq!(with(&[(b, "maybe")], |env| env.boolean_or(b, false)).unwrap_err().var, b);
        assert_eq!(
            with(&[("COACH_PLATFORM_ADMINS", "a, ,b")], |env| env.list("COACH_PLATFORM_ADMINS")),
            vec!["a", "b"]
        );
        // A read the table does not back is an error naming the variable, not a default.
        assert_eq!(with(&[], |env| env.number("COACH_LLM_MODEL")).unwrap_err().var, "COACH_LLM_MODEL");
        assert_eq!(with(&[], |env| env.number("COACH_INDEX_CACHE_MB")).unwrap_err().var, "COACH_INDEX_CACHE_MB");
    }
}
