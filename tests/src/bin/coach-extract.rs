//! The extraction child for tests and benches (`COACH_EXTRACT_PROGRAM`): a test harness
//! cannot serve as one itself, and a deployed ingest function is its own
//! (see `coach::ingest::sandbox`).

fn main() {
    coach::ingest::sandbox::serve_if_child();
    eprintln!("coach-extract: run by ingest as `coach-extract {} ...`", coach::ingest::sandbox::CHILD_FLAG);
    std::process::exit(64);
}
