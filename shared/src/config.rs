//! Reading configuration from environment variables, once at cold start.
//!
//! Each module parses its own section (`AuthConfig::from_env`, `LlmConfig::from_env`, ...)
//! through [`Env`], so a function reads only the variables of the modules it builds, and a
//! bad setting of one module cannot stop another function's cold start. Every variable has
//! a default that works with the local stack (`make dev`); deployed functions get their
//! values from `template.yaml`. A bad value stops the cold start with an error naming the
//! variable. This module knows no module's settings.

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

impl Env<'_> {
    /// The trimmed value, `None` when unset or blank.
    pub fn string(&self, var: &str) -> Option<String> {
        (self.0)(var).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    pub fn string_or(&self, var: &str, default: &str) -> String {
        self.string(var).unwrap_or_else(|| default.to_owned())
    }

    /// A comma-separated list, items trimmed, blanks dropped; empty when unset.
    pub fn list(&self, var: &str) -> Vec<String> {
        self.string(var)
            .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// A whole number in `min..=max`, `default` when unset.
    pub fn number(&self, var: &'static str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
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

    /// A decimal number in `min..=max`, `default` when unset.
    pub fn float(&self, var: &'static str, default: f32, min: f32, max: f32) -> Result<f32, ConfigError> {
        let Some(value) = self.string(var) else { return Ok(default) };
        value
            .parse::<f32>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| ConfigError { var, reason: format!("expected a number from {min} to {max}, got {value:?}") })
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`), `default` when unset.
    pub fn boolean(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
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
        assert_eq!(with(&[("X", "  ")], |env| env.string_or("X", "d")), "d");
        assert_eq!(with(&[("X", " v ")], |env| env.string("X")), Some("v".into()));
    }

    #[test]
    fn numbers_and_booleans_are_checked_and_name_the_variable() {
        assert_eq!(with(&[], |env| env.number("N", 7, 1, 10)), Ok(7));
        assert_eq!(with(&[("N", "fast")], |env| env.number("N", 7, 1, 10)).unwrap_err().var, "N");
        assert_eq!(with(&[("N", "11")], |env| env.number("N", 7, 1, 10)).unwrap_err().var, "N");
        assert_eq!(with(&[("F", "0.5")], |env| env.float("F", 0.0, 0.0, 1.0)), Ok(0.5));
        assert!(with(&[("F", "2")], |env| env.float("F", 0.0, 0.0, 1.0)).is_err());
        assert_eq!(with(&[("B", "yes")], |env| env.boolean("B", false)), Ok(true));
        assert_eq!(with(&[("B", "maybe")], |env| env.boolean("B", false)).unwrap_err().var, "B");
        assert_eq!(with(&[("L", "a, ,b")], |env| env.list("L")), vec!["a", "b"]);
    }
}
