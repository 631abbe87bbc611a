//! Extraction in a child process with memory and time limits.
//!
//! Reading a document is the one step of ingest whose cost the uploader controls: a 2 MB PDF
//! can hold streams that inflate to gigabytes (the allocation that fails aborts the process,
//! which `catch_unwind` cannot stop, and would take the invocation with it), and a parser
//! can spin on a crafted file until the function times out, leaving the document
//! `processing`. So ingest reads every document in a child process: the same executable,
//! started with [`CHILD_FLAG`], with
//!
//! - an address-space limit (`COACH_EXTRACT_MEMORY_MB`; by default half the function's
//!   memory), so a decompression bomb ends the child, not the function;
//! - a time budget (`COACH_EXTRACT_SECS`, shortened to fit the Lambda deadline, see
//!   [`super::extraction_budget`]) enforced by the parent, which kills the child, and a
//!   CPU-time limit as a second fence;
//! - a cap on the text it returns (`COACH_EXTRACT_MAX_TEXT_MB`);
//! - an empty environment (the function's AWS credentials are not handed to a parser of
//!   untrusted files) and its standard output kept for the text alone (anything a parser
//!   prints goes to standard error, which the parent reads but never logs);
//! - a parent it cannot inspect: building the sandbox marks the ingest process non-dumpable
//!   ([`forbid_inspection`]), so its `/proc` files (the environment with the AWS
//!   credentials, its memory) belong to root, and a child of the same user, as the
//!   extraction child is on Lambda, cannot read them.
//!
//! Whatever the child does, the parent gets an answer: the text, or an [`ExtractError`] the
//! document is marked `failed` with. Only failing to start the child at all is an error of
//! Coach's (the event is retried). One child runs at a time per instance (documents handled
//! at once, as in an SQS batch, take turns), so the limit holds for the function's memory.
//!
//! Every binary that builds an [`super::Ingestor`] calls [`serve_if_child`] first thing in
//! `main`; the program started is `COACH_EXTRACT_PROGRAM`, by default the running one.

use std::{
    io::{Read, Write},
    os::{fd::AsFd, unix::process::ExitStatusExt},
    path::PathBuf,
    process::{ExitStatus, Stdio},
    time::Duration,
};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::extract::{extract, ExtractError};
use crate::{
    config::{ConfigError, Env},
    model::Kind,
};

/// The first argument that makes a Coach binary an extraction child.
pub const CHILD_FLAG: &str = "--coach-extract";

const MIB: u64 = 1024 * 1024;
/// Most of the child's standard error read (to tell an allocation failure from a crash).
const STDERR_CAP: u64 = 8 * 1024;

// The child's exit codes: 0 is text on standard output.
const EXIT_USAGE: i32 = 64;
const EXIT_IO: i32 = 74;
const EXIT_TOO_MUCH_TEXT: i32 = 65;
const EXIT_ENCRYPTED: i32 = 80;
const EXIT_CORRUPT: i32 = 81;
const EXIT_NO_TEXT: i32 = 82;
const EXIT_NOT_UTF8: i32 = 83;
const EXIT_MALFORMED_CSV: i32 = 84;
const EXIT_CORRUPT_DOCX: i32 = 85;
const EXIT_NO_TEXT_IN_PDF: i32 = 86;

/// Runs extraction in a child process. Build once per cold start.
#[derive(Debug)]
pub struct Sandbox {
    program: PathBuf,
    memory_mib: u64,
    max_text_bytes: u64,
    /// One child at a time.
    turn: tokio::sync::Semaphore,
}

/// Coach could not run the child (not a property of the document): the event is retried.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("could not run the extraction process {program}")]
    Spawn {
        program: String,
        #[source]
        cause: std::io::Error,
    },
    #[error("the extraction of other documents took this one's time")]
    Busy,
}

impl Sandbox {
    /// `COACH_EXTRACT_PROGRAM`, `COACH_EXTRACT_MEMORY_MB` and `COACH_EXTRACT_MAX_TEXT_MB`.
    /// Marks this process non-dumpable ([`forbid_inspection`]) before any child is started.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        if let Err(e) = forbid_inspection() {
            tracing::error!(error = %e, "could not mark the process non-dumpable; extraction children may read it");
        }
        let program = match env.string("COACH_EXTRACT_PROGRAM") {
            Some(path) => PathBuf::from(path),
            None => std::env::current_exe().map_err(|e| ConfigError {
                var: "COACH_EXTRACT_PROGRAM",
                reason: format!("unset, and the running program's path is unknown ({e})"),
            })?,
        };
        // Half the function's memory: the rest holds the function itself (the embedding
        // model, the file, its text and chunks).
        let function_mib = env.string("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").and_then(|mb| mb.parse::<u64>().ok());
        let default_mib = function_mib.map_or(1024, |mb| mb / 2).clamp(256, 10240);
        Ok(Self {
            program,
            memory_mib: env.number_or("COACH_EXTRACT_MEMORY_MB", default_mib)?,
            max_text_bytes: env.number("COACH_EXTRACT_MAX_TEXT_MB")? * MIB,
            turn: tokio::sync::Semaphore::new(1),
        })
    }

    /// The text of `bytes` read as `kind`, within `budget` of wall-clock time.
    pub async fn extract(
        &self,
        kind: Kind,
        bytes: &[u8],
        budget: Duration,
    ) -> Result<Result<String, ExtractError>, StartError> {
        let waiting = std::time::Instant::now();
        let Ok(Ok(_turn)) = tokio::time::timeout(budget, self.turn.acquire()).await else {
            return Err(StartError::Busy);
        };
        // A document that waited away most of its time is retried with all of it, rather
        // than failed for what others took.
        let left = budget.saturating_sub(waiting.elapsed());
        if left < budget / 2 {
            return Err(StartError::Busy);
        }
        let budget = left;
        let seconds = budget.as_millis().div_ceil(1000).max(1) as u64;
        let mut child = tokio::process::Command::new(&self.program)
            .arg(CHILD_FLAG)
            .arg(kind.content_type())
            .arg(self.memory_mib.to_string())
            .arg(seconds.to_string())
            .arg(self.max_text_bytes.to_string())
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|cause| StartError::Spawn { program: self.program.display().to_string(), cause })?;
        let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let run = async {
            let write = async move {
                if let Some(mut stdin) = stdin {
                    // A child that stops early closes its end; its exit status says why.
                    let _ = stdin.write_all(bytes).await;
                }
            };
            let ((), out, err) =
                tokio::join!(write, read_capped(stdout, self.max_text_bytes + 1), read_capped(stderr, STDERR_CAP));
            (child.wait().await, out, err)
        };
        let finished = tokio::time::timeout(budget, run).await;
        let Ok((status, out, err)) = finished else {
            // Killed and reaped here; dropping the child would also kill it.
            let _ = child.kill().await;
            return Ok(Err(ExtractError::TookTooLong { seconds }));
        };
        let status =
            status.map_err(|cause| StartError::Spawn { program: self.program.display().to_string(), cause })?;
        Ok(self.outcome(status, out, &err, seconds))
    }

    /// What the child's exit means for the document.
    fn outcome(&self, status: ExitStatus, out: Vec<u8>, err: &[u8], seconds: u64) -> Result<String, ExtractError> {
        let too_much_text = ExtractError::TooMuchText { mib: self.max_text_bytes / MIB };
        match status.code() {
            Some(0) if out.len() as u64 > self.max_text_bytes => Err(too_much_text),
            Some(0) => String::from_utf8(out).map_err(|_| ExtractError::Crashed),
            Some(EXIT_TOO_MUCH_TEXT) => Err(too_much_text),
            Some(code) => Err(from_exit_code(code).unwrap_or(ExtractError::Crashed)),
            None if status.signal() == Some(rustix::process::Signal::XCPU.as_raw()) => {
                Err(ExtractError::TookTooLong { seconds })
            }
            // Rust's report of a failed allocation before it aborts; a child killed outright
            // (the parent's kill is handled above) was the kernel's out-of-memory killer.
            None if contains(err, b"memory allocation of")
                || status.signal() == Some(rustix::process::Signal::KILL.as_raw()) =>
            {
                Err(ExtractError::TooMuchMemory { mib: self.memory_mib })
            }
            None => Err(ExtractError::Crashed),
        }
    }
}

async fn read_capped(pipe: Option<impl AsyncRead + Unpin>, cap: u64) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(pipe) = pipe {
        let _ = pipe.take(cap).read_to_end(&mut buf).await;
    }
    buf
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The exit code a child reports `error` with.
fn exit_code(error: &ExtractError) -> i32 {
    match error {
        ExtractError::EncryptedPdf => EXIT_ENCRYPTED,
        ExtractError::CorruptPdf => EXIT_CORRUPT,
        ExtractError::NoText => EXIT_NO_TEXT,
        ExtractError::NoTextInPdf => EXIT_NO_TEXT_IN_PDF,
        ExtractError::NotUtf8 => EXIT_NOT_UTF8,
        ExtractError::MalformedCsv => EXIT_MALFORMED_CSV,
        ExtractError::CorruptDocx => EXIT_CORRUPT_DOCX,
        // Decided by the parent, never by `extract`.
        ExtractError::TookTooLong { .. }
        | ExtractError::TooMuchMemory { .. }
        | ExtractError::TooMuchText { .. }
        | ExtractError::Crashed => EXIT_IO,
    }
}

fn from_exit_code(code: i32) -> Option<ExtractError> {
    Some(match code {
        EXIT_ENCRYPTED => ExtractError::EncryptedPdf,
        EXIT_CORRUPT => ExtractError::CorruptPdf,
        EXIT_NO_TEXT => ExtractError::NoText,
        EXIT_NO_TEXT_IN_PDF => ExtractError::NoTextInPdf,
        EXIT_NOT_UTF8 => ExtractError::NotUtf8,
        EXIT_MALFORMED_CSV => ExtractError::MalformedCsv,
        EXIT_CORRUPT_DOCX => ExtractError::CorruptDocx,
        _ => return None,
    })
}

/// Marks this process non-dumpable (`prctl(PR_SET_DUMPABLE, 0)`): its `/proc/{pid}` files,
/// `environ` and `mem` among them, then belong to root, so a process of the same user (an
/// extraction child that a crafted file took over) cannot read the parent's environment,
/// which holds the function's AWS credentials. Children start dumpable again (exec resets it).
pub fn forbid_inspection() -> std::io::Result<()> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable).map_err(Into::into)
}

/// When this process was started as an extraction child ([`CHILD_FLAG`]), does the
/// extraction and exits; otherwise returns at once. Call it first thing in `main`.
pub fn serve_if_child() {
    let mut args = std::env::args_os().skip(1);
    if args.next().is_none_or(|flag| flag != CHILD_FLAG) {
        return;
    }
    let args: Vec<String> = args.filter_map(|a| a.into_string().ok()).collect();
    std::process::exit(child(&args));
}

/// The child: limits on itself, the file from standard input, the text to standard output.
fn child(args: &[String]) -> i32 {
    let [content_type, memory_mib, cpu_secs, max_text] = args else {
        return EXIT_USAGE;
    };
    let (Some(kind), Ok(memory_mib), Ok(cpu_secs), Ok(max_text)) = (
        Kind::from_content_type(content_type),
        memory_mib.parse::<u64>(),
        cpu_secs.parse::<u64>(),
        max_text.parse::<u64>(),
    ) else {
        return EXIT_USAGE;
    };
    // Standard output carries the text alone: keep a handle on it, and send whatever else
    // writes to it (a parser's debug print) to standard error.
    let Ok(out) = std::io::stdout().as_fd().try_clone_to_owned() else {
        return EXIT_IO;
    };
    if rustix::stdio::dup2_stdout(std::io::stderr()).is_err() {
        return EXIT_IO;
    }
    use rustix::process::{setrlimit, Resource, Rlimit};
    let memory = Rlimit { current: Some(memory_mib * MIB), maximum: Some(memory_mib * MIB) };
    // SIGXCPU at the soft limit, SIGKILL a second later.
    let cpu = Rlimit { current: Some(cpu_secs), maximum: Some(cpu_secs + 1) };
    if setrlimit(Resource::As, memory).is_err() || setrlimit(Resource::Cpu, cpu).is_err() {
        return EXIT_IO;
    }
    let mut bytes = Vec::new();
    if std::io::stdin().read_to_end(&mut bytes).is_err() {
        return EXIT_IO;
    }
    match extract(kind, &bytes) {
        Ok(text) if text.len() as u64 > max_text => EXIT_TOO_MUCH_TEXT,
        Ok(text) => match std::fs::File::from(out).write_all(text.as_bytes()) {
            Ok(()) => 0,
            Err(_) => EXIT_IO,
        },
        Err(error) => exit_code(&error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox() -> Sandbox {
        Sandbox {
            program: PathBuf::from("unused"),
            memory_mib: 256,
            max_text_bytes: 10,
            turn: tokio::sync::Semaphore::new(1),
        }
    }

    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    fn killed_by(signal: rustix::process::Signal) -> ExitStatus {
        ExitStatus::from_raw(signal.as_raw())
    }

    #[test]
    fn document_errors_cross_the_process_boundary() {
        for error in [
            ExtractError::EncryptedPdf,
            ExtractError::CorruptPdf,
            ExtractError::NoText,
            ExtractError::NoTextInPdf,
            ExtractError::NotUtf8,
        ] {
            let code = exit_code(&error);
            assert_eq!(sandbox().outcome(exited(code), Vec::new(), b"", 5), Err(error));
        }
        assert_eq!(from_exit_code(0), None);
        assert_eq!(from_exit_code(EXIT_IO), None);
    }

    #[test]
    fn every_way_a_child_ends_is_an_answer() {
        let s = sandbox();
        assert_eq!(s.outcome(exited(0), b"hello".to_vec(), b"", 5), Ok("hello".into()));
        assert_eq!(s.outcome(exited(0), vec![b'a'; 11], b"", 5), Err(ExtractError::TooMuchText { mib: 0 }));
        assert_eq!(s.outcome(exited(0), vec![0xff], b"", 5), Err(ExtractError::Crashed));
        assert_eq!(
            s.outcome(exited(EXIT_TOO_MUCH_TEXT), Vec::new(), b"", 5),
            Err(ExtractError::TooMuchText { mib: 0 })
        );
        assert_eq!(s.outcome(exited(101), Vec::new(), b"panicked", 5), Err(ExtractError::Crashed));
        assert_eq!(s.outcome(exited(EXIT_USAGE), Vec::new(), b"", 5), Err(ExtractError::Crashed));
        use rustix::process::Signal;
        assert_eq!(
            s.outcome(killed_by(Signal::XCPU), Vec::new(), b"", 5),
            Err(ExtractError::TookTooLong { seconds: 5 })
        );
        let oom = b"memory allocation of 2147483648 bytes failed\n";
        assert_eq!(
            s.outcome(killed_by(Signal::ABORT), Vec::new(), oom, 5),
            Err(ExtractError::TooMuchMemory { mib: 256 })
        );
        assert_eq!(
            s.outcome(killed_by(Signal::KILL), Vec::new(), b"", 5),
            Err(ExtractError::TooMuchMemory { mib: 256 })
        );
        assert_eq!(s.outcome(killed_by(Signal::SEGV), Vec::new(), b"", 5), Err(ExtractError::Crashed));
        assert_eq!(s.outcome(killed_by(Signal::ABORT), Vec::new(), b"stack overflow", 5), Err(ExtractError::Crashed));
    }

    #[test]
    fn the_memory_limit_follows_the_function_memory() {
        let read = |vars: &[(&str, &str)]| {
            let lookup = |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned());
            Sandbox::from_env(&Env(&lookup))
        };
        assert_eq!(read(&[]).unwrap().memory_mib, 1024);
        assert_eq!(read(&[("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "2048")]).unwrap().memory_mib, 1024);
        assert_eq!(read(&[("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")]).unwrap().memory_mib, 256);
        let set = read(&[("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "2048"), ("COACH_EXTRACT_MEMORY_MB", "300")]).unwrap();
        assert_eq!(set.memory_mib, 300);
        assert_eq!(read(&[("COACH_EXTRACT_MEMORY_MB", "64")]).unwrap_err().var, "COACH_EXTRACT_MEMORY_MB");
        assert_eq!(read(&[("COACH_EXTRACT_MAX_TEXT_MB", "2")]).unwrap().max_text_bytes, 2 * MIB);
        assert_eq!(read(&[("COACH_EXTRACT_PROGRAM", "/opt/x")]).unwrap().program, PathBuf::from("/opt/x"));
    }
}
