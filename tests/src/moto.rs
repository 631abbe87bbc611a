//! moto's server on a free loopback port.
//!
//! [`Moto::shared`] starts one server per test binary on first use; tests isolate
//! themselves by creating resources with unique names. The server is started with
//! `PR_SET_PDEATHSIG` from a thread that lives as long as the process, so it stops when the
//! test process ends, however it ends. [`Moto::start`] gives a dedicated server, stopped
//! when dropped, for tests that need to stop the emulator themselves.

use std::{
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

/// A running moto server.
#[derive(Debug)]
pub struct Moto {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    child: Option<Child>,
}

impl Moto {
    /// The server shared by every test of this test binary.
    pub fn shared() -> &'static Moto {
        static SHARED: OnceLock<Moto> = OnceLock::new();
        SHARED.get_or_init(|| {
            // The child must be spawned from a thread that never exits: PDEATHSIG fires
            // when the spawning *thread* ends, and test threads end with their test.
            let endpoint =
                crate::child::on_keeper_thread("moto-server", || spawn().map(|(child, endpoint)| (endpoint, child)));
            Moto { endpoint, child: None }
        })
    }

    /// A server of its own, stopped when the value is dropped.
    pub fn start() -> Moto {
        let (child, endpoint) = spawn().unwrap_or_else(|e| panic!("{e}"));
        Moto { endpoint, child: Some(child) }
    }

    /// Stops a dedicated server now (no-op for the shared one).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Path of the moto server: `$COACH_MOTO_SERVER`, else the project's `.venv/bin/coach-moto-server`
/// (moto with atomic S3 conditional writes, `scripts/moto_server.py`).
fn moto_binary() -> PathBuf {
    std::env::var_os("COACH_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/coach-moto-server")))
}

fn spawn() -> Result<(Child, String), String> {
    let binary = moto_binary();
    if !binary.exists() {
        return Err(format!(
            "moto_server not found at {}; run `make test` (or scripts/bootstrap.sh) to install it, or set COACH_MOTO_SERVER",
            binary.display()
        ));
    }
    // A port taken between our probe and moto's bind makes moto exit; try a few ports.
    let mut last_error = String::new();
    for _ in 0..5 {
        let port = crate::child::free_port().map_err(|e| format!("no free loopback port: {e}"))?;
        let mut command = Command::new(&binary);
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        crate::child::die_with_parent(&mut command);
        let mut child = command.spawn().map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        match wait_ready(&mut child, port) {
            Ok(()) => return Ok((child, format!("http://127.0.0.1:{port}"))),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                last_error = e;
            }
        }
    }
    Err(format!("moto_server did not start: {last_error}"))
}

fn wait_ready(child: &mut Child, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited early with {status}"));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err("not listening after 30 s".into())
}
