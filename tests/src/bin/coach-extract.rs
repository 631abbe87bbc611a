//! The extraction child for tests and benches (`COACH_EXTRACT_PROGRAM`): a test harness
//! cannot serve as one itself, and a deployed ingest function is its own
//! (see `coach::ingest::sandbox`).
//!
//! Two more modes prove that an extraction child cannot read its parent's environment:
//! `--probe-parent 0|1` runs as a parent (as user `nobody` when started as root: parent and
//! child of one ordinary user, as on Lambda), marked non-dumpable as ingest is when `1`,
//! and starts `--read-environ {its pid}`, a child that tries to read `/proc/{pid}/environ`;
//! the parent exits with the child's code: 0 read, 1 refused, 2 another failure.

use std::process::Command;

const PROBE_PARENT: &str = "--probe-parent";
const READ_ENVIRON: &str = "--read-environ";

fn main() {
    coach::ingest::sandbox::serve_if_child();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, harden] if flag == PROBE_PARENT => std::process::exit(probe_parent(harden == "1")),
        [flag, pid] if flag == READ_ENVIRON => std::process::exit(read_environ(pid)),
        _ => {}
    }
    eprintln!("coach-extract: run by ingest as `coach-extract {} ...`", coach::ingest::sandbox::CHILD_FLAG);
    std::process::exit(64);
}

fn probe_parent(harden: bool) -> i32 {
    // SAFETY: plain system calls on this single-threaded process's own credentials.
    unsafe {
        if libc::geteuid() == 0
            && (libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(65534) != 0 || libc::setuid(65534) != 0)
        {
            eprintln!("probe: could not become nobody");
            return 3;
        }
        // Changing user made the process non-dumpable; a process started as nobody is not.
        libc::prctl(libc::PR_SET_DUMPABLE, 1);
    }
    if harden {
        if let Err(e) = coach::ingest::sandbox::forbid_inspection() {
            eprintln!("probe: {e}");
            return 3;
        }
    }
    let Ok(me) = std::env::current_exe() else { return 3 };
    let status = Command::new(me).arg(READ_ENVIRON).arg(std::process::id().to_string()).env_clear().status();
    status.ok().and_then(|s| s.code()).unwrap_or(3)
}

fn read_environ(pid: &str) -> i32 {
    match std::fs::read(format!("/proc/{pid}/environ")) {
        Ok(_) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => 1,
        Err(e) => {
            eprintln!("read-environ: {e}");
            2
        }
    }
}
