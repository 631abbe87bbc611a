//! What the servers the test kit starts (moto, PostgreSQL) have in common: a free loopback
//! port, and a child process that stops when the process that started it ends.

use std::{net::TcpListener, process::Command};

/// A loopback port free at the time of asking.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
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
