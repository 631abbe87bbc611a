//! What the servers the test kit starts (moto, PostgreSQL) have in common: a free loopback
//! port, and a child process that stops when the process that started it ends.

use std::{net::TcpListener, process::Command, sync::mpsc};

/// A loopback port free at the time of asking.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Runs `start` on a thread of its own named `name` that never ends, and returns the first
/// half of what it made; the second half (a server started with [`die_with_parent`]) stays
/// on that thread, alive as long as the process. Panics with `start`'s error.
pub fn on_keeper_thread<T, K>(name: &str, start: impl FnOnce() -> Result<(T, K), String> + Send + 'static) -> T
where
    T: Send + 'static,
    K: 'static,
{
    let (tx, rx) = mpsc::channel::<Result<T, String>>();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let (made, _keep) = match start() {
                Ok((made, keep)) => (Ok(made), Some(keep)),
                Err(e) => (Err(e), None),
            };
            let _ = tx.send(made);
            loop {
                std::thread::park();
            }
        })
        .unwrap_or_else(|e| panic!("spawn the {name} thread: {e}"));
    rx.recv().unwrap_or_else(|e| panic!("the {name} thread: {e}")).unwrap_or_else(|e| panic!("{e}"))
}

/// Makes `command`'s process receive SIGTERM when the thread that spawns it ends (spawn
/// servers shared by a test binary from a thread that never ends).
pub fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
