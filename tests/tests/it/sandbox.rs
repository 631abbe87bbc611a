//! The extraction child cannot read the ingest process's environment (which holds the
//! function's AWS credentials) through `/proc`: ingest marks itself non-dumpable before it
//! starts any child (`coach::ingest::sandbox::forbid_inspection`).

use std::process::Command;

use coach_testkit::stack::{extract_program, TestStack};

/// Runs the probe parent (see `coach-extract`), `harden`ed or not: the child's verdict.
fn probe(harden: bool) -> i32 {
    let status = Command::new(extract_program())
        .args(["--probe-parent", if harden { "1" } else { "0" }])
        .env("COACH_PROBE_SECRET", "AKIAEXAMPLE")
        .status()
        .expect("the probe runs");
    status.code().expect("the probe exits")
}

#[test]
fn a_child_cannot_read_the_environment_of_a_non_dumpable_parent() {
    assert_eq!(probe(false), 0, "a plain parent of the same user is readable: the probe can see a leak");
    assert_eq!(probe(true), 1, "a parent marked as ingest marks itself is not");
}

#[tokio::test]
async fn building_ingest_marks_the_process_non_dumpable() {
    let stack = TestStack::new().await;
    let _services = stack.deploy();
    // SAFETY: reads this process's flag.
    let dumpable = unsafe { libc::prctl(libc::PR_GET_DUMPABLE) };
    assert_eq!(dumpable, 0);
}
