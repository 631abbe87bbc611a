//! Capturing what Coach logs during a test, as JSON lines.
//!
//! A capture needs a process to itself. The subscriber it installs is the current thread's,
//! but `tracing` decides once per call site, for the whole process, whether anyone listens:
//! a call site first reached on another test thread at the moment a capture starts can be
//! recorded as unheard, and its events then never reach the capture. Tests that capture are
//! therefore `#[ignore]`d and run by a twin test through [`run_alone`].

use std::{
    io::Write,
    process::Command,
    sync::{Arc, Mutex},
};

/// Runs `test`, the full name of an `#[ignore]`d test of the running test binary
/// (`module::name`), alone in a child process, and panics with its output unless it ran and
/// passed.
pub fn run_alone(test: &str) {
    let binary = std::env::current_exe().expect("the running test binary");
    let output = Command::new(binary)
        .args([test, "--exact", "--ignored", "--test-threads=1"])
        .output()
        .expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{test}, run alone, did not pass:\n{stdout}\n{stderr}"
    );
}

/// A log sink that keeps everything written to it.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)).into_owned()
    }

    /// Installs Coach's own subscriber ([`coach::logging::subscriber`], with `RUST_LOG` as
    /// `spec` and `AWS_LAMBDA_LOG_LEVEL` as `lambda_level`) writing here, for the current
    /// thread until the guard is dropped.
    pub fn install_coach(&self, spec: Option<&str>, lambda_level: Option<&str>) -> tracing::subscriber::DefaultGuard {
        tracing::subscriber::set_default(coach::logging::subscriber(spec, lambda_level, self.clone()))
    }

    /// [`Capture::install_coach`] with the log privacy `privacy` (`COACH_LOG_PII`).
    pub fn install_coach_with(
        &self,
        spec: Option<&str>,
        privacy: coach::logging::privacy::Privacy,
    ) -> tracing::subscriber::DefaultGuard {
        tracing::subscriber::set_default(coach::logging::subscriber_with(spec, None, privacy, self.clone()))
    }

    /// Installs Coach's subscriber in the log format `format` writing here, `spec` its
    /// `RUST_LOG`, for the current thread until the guard is dropped.
    pub fn install_coach_as(
        &self,
        format: coach::logging::LogFormat,
        spec: Option<&str>,
    ) -> tracing::subscriber::DefaultGuard {
        let privacy = coach::logging::privacy::Privacy::default();
        tracing::subscriber::set_default(coach::logging::subscriber_in(format, spec, None, privacy, self.clone()))
    }

    /// Installs a JSON subscriber writing here with `filter`, for the current thread until
    /// the guard is dropped.
    pub fn install(&self, filter: &str) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt().json().with_writer(self.clone()).with_env_filter(filter).finish();
        tracing::subscriber::set_default(subscriber)
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
