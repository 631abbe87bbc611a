//! Capturing what Coach logs during a test, as JSON lines.

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

/// A log sink that keeps everything written to it.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)).into_owned()
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
