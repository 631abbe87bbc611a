//! Connections: the configuration (`COACH_PG_*`), TLS, the pool, and what a PostgreSQL
//! error means to an operator.

use std::{
    future::Future,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;

use crate::{
    analysis::Analyzer,
    config::{ConfigError, Env},
    store::{Failure, StoreError, StoreResult},
};

/// Connection settings (`COACH_PG_*`); the password and an extra CA come from the Coach secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgConfig {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    /// Verify the server's certificate and name (`verify-full`); off only on loopback.
    pub tls: bool,
    pub pool_size: usize,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    /// Most rows (of the whole table, estimated) a query word may match and still be searched
    /// (0: every word is); see [`QUERY_WORDS`].
    pub word_rows: u64,
    /// HNSW candidate list size (recall against speed). A search asking for more (the
    /// fusion window) gets them all the same: the scan is iterative.
    pub ef_search: u32,
    /// How text becomes terms (`COACH_SEARCH_LANGUAGE`), as the S3 store's.
    pub analyzer: Analyzer,
}

impl PgConfig {
    /// `None` unless `COACH_INDEX_STORE` is `postgres` (the default is `s3`).
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        match env.text("COACH_INDEX_STORE").as_str() {
            "s3" => return Ok(None),
            "postgres" => {}
            other => {
                let reason = format!("expected s3 or postgres, got {other:?}");
                return Err(ConfigError { var: "COACH_INDEX_STORE", reason });
            }
        }
        let host = env.string("COACH_PG_HOST").ok_or_else(|| ConfigError {
            var: "COACH_PG_HOST",
            reason: "required with COACH_INDEX_STORE=postgres (the cluster's or RDS Proxy's endpoint)".into(),
        })?;
        let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        let tls = match env.text("COACH_PG_TLS").as_str() {
            "verify-full" => true,
            "disable" if loopback => false,
            "disable" => {
                let reason = format!("TLS can be turned off only for a server on loopback, not {host:?}");
                return Err(ConfigError { var: "COACH_PG_TLS", reason });
            }
            other => {
                let reason = format!("expected verify-full or disable, got {other:?}");
                return Err(ConfigError { var: "COACH_PG_TLS", reason });
            }
        };
        Ok(Some(Self {
            host,
            port: env.number("COACH_PG_PORT")? as u16,
            database: env.text("COACH_PG_DATABASE"),
            user: env.text("COACH_PG_USER"),
            tls,
            pool_size: env.number("COACH_PG_POOL_SIZE")? as usize,
            connect_timeout: Duration::from_secs(env.number("COACH_PG_CONNECT_TIMEOUT_SECS")?),
            statement_timeout: Duration::from_secs(env.number("COACH_PG_STATEMENT_TIMEOUT_SECS")?),
            ef_search: env.number("COACH_PG_EF_SEARCH")? as u32,
            word_rows: env.number("COACH_PG_WORD_ROWS")?,
            analyzer: Analyzer::from_env(env)?,
        }))
    }
}

/// What the Coach secret holds for the database.
#[derive(Clone, Default)]
pub struct PgSecret {
    /// `postgres_password` (none: the server does not ask for one, as locally).
    pub password: Option<String>,
    /// `postgres_ca_pem`: certificates to trust besides the system's (the RDS CA bundle when
    /// connecting to the cluster directly; RDS Proxy's certificate needs none).
    pub ca_pem: Option<String>,
}

/// Reads [`PgSecret`] when the pool (re)connects.
pub type SecretReader = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = StoreResult<PgSecret>> + Send>> + Send + Sync>;

/// Connections to Coach's database (a pool, built on first use from the configuration and
/// the secret) and its schema.
pub struct Database {
    pub(super) config: PgConfig,
    secret: SecretReader,
    pool: tokio::sync::Mutex<Option<Pool>>,
    pub(super) migrated: tokio::sync::OnceCell<()>,
}

/// Locks a std mutex, still using it after a panic elsewhere (single inserts and removes
/// leave the sets behind these locks consistent).
pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What an operator reads from a PostgreSQL error.
pub(super) fn failure(e: &tokio_postgres::Error) -> Failure {
    if let Some(code) = e.code() {
        return match code {
            c if *c == SqlState::INVALID_PASSWORD
                || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                || *c == SqlState::INSUFFICIENT_PRIVILEGE =>
            {
                Failure::AccessDenied
            }
            c if *c == SqlState::TOO_MANY_CONNECTIONS
                || *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED =>
            {
                Failure::Throttled
            }
            c if *c == SqlState::QUERY_CANCELED => Failure::TimedOut,
            c if *c == SqlState::INVALID_CATALOG_NAME || *c == SqlState::UNDEFINED_TABLE => Failure::NotFound,
            c if *c == SqlState::CANNOT_CONNECT_NOW || *c == SqlState::ADMIN_SHUTDOWN => Failure::Unreachable,
            _ => Failure::Failed,
        };
    }
    let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>());
    match io.map(std::io::Error::kind) {
        Some(std::io::ErrorKind::TimedOut) => Failure::TimedOut,
        Some(_) => Failure::Unreachable,
        None if e.is_closed() || e.to_string().contains("timeout") => Failure::Unreachable,
        None => Failure::Failed,
    }
}

fn service(action: &'static str, e: tokio_postgres::Error) -> StoreError {
    StoreError::Service { action, failure: failure(&e), cause: Box::new(e) }
}

pub(super) fn pool_error(action: &'static str, e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => service(action, e),
        PoolError::Timeout(_) => StoreError::Service {
            action,
            failure: Failure::TimedOut,
            cause: "no database connection within the timeout".into(),
        },
        other => StoreError::Service { action, failure: Failure::Failed, cause: other.to_string().into() },
    }
}

fn unavailable(cause: StoreError) -> StoreError {
    StoreError::unavailable(crate::store::DOCUMENT_INDEX, cause)
}

/// PostgreSQL text cannot hold NUL: extracted text rarely has one, and it means nothing.
pub(super) fn text(s: &str) -> String {
    s.replace('\0', " ")
}

/// A usable vector: finite, not all zeros (pgvector refuses NaN and infinity; a zero vector
/// has no direction, so no similarity).
pub(super) fn usable(v: &[f32]) -> bool {
    v.iter().all(|x| x.is_finite()) && v.iter().any(|x| *x != 0.0)
}

pub(super) fn is_undefined_table(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNDEFINED_TABLE)
}

impl Database {
    pub fn new(config: PgConfig, secret: SecretReader) -> Self {
        Self { config, secret, pool: tokio::sync::Mutex::new(None), migrated: tokio::sync::OnceCell::new() }
    }

    /// The pool, built on first use from the configuration and the secret.
    pub(super) async fn pool(&self) -> StoreResult<Pool> {
        let mut pool = self.pool.lock().await;
        if let Some(pool) = pool.as_ref() {
            return Ok(pool.clone());
        }
        let secret = (self.secret)().await?;
        let built = self.build_pool(&secret)?;
        *pool = Some(built.clone());
        Ok(built)
    }

    fn build_pool(&self, secret: &PgSecret) -> StoreResult<Pool> {
        let c = &self.config;
        let mut pg = tokio_postgres::Config::new();
        pg.host(&c.host)
            .port(c.port)
            .dbname(&c.database)
            .user(&c.user)
            .application_name("coach")
            .connect_timeout(c.connect_timeout)
            // A peer gone silent (a failover, a network fault) is given up within seconds,
            // not the kernel's minutes: unacknowledged data after 10 s, or an idle connection
            // not answering keepalives (after 30 s, every 5 s, 3 times) ends the connection.
            .tcp_user_timeout(Duration::from_secs(10))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3)
            .options(format!(
                "-c statement_timeout={} -c hnsw.ef_search={} -c hnsw.iterative_scan=relaxed_order",
                c.statement_timeout.as_millis(),
                c.ef_search
            ));
        if let Some(password) = &secret.password {
            pg.password(password);
        }
        let manager_config = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        let manager = if c.tls {
            pg.ssl_mode(tokio_postgres::config::SslMode::Require);
            Manager::from_config(pg, tls(secret.ca_pem.as_deref())?, manager_config)
        } else {
            pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
            Manager::from_config(pg, tokio_postgres::NoTls, manager_config)
        };
        Pool::builder(manager)
            .max_size(c.pool_size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(c.connect_timeout * 2))
            .wait_timeout(Some(c.statement_timeout + c.connect_timeout))
            .recycle_timeout(Some(c.connect_timeout))
            .build()
            .map_err(|e| StoreError::internal(format!("database pool: {e}")))
    }

    /// A pooled connection. After a refused login the pool is dropped, so the next use reads
    /// the secret again (a rotated password).
    pub(super) async fn client(&self, action: &'static str) -> StoreResult<deadpool_postgres::Object> {
        let pool = self.pool().await?;
        match pool.get().await {
            Ok(client) => Ok(client),
            Err(e) => {
                let e = pool_error(action, e);
                if e.failure() == Some(Failure::AccessDenied) {
                    self.pool.lock().await.take();
                }
                Err(unavailable(e))
            }
        }
    }

    /// Runs `work` on a pooled connection; when the connection turns out dead (the server
    /// or a proxy closed it while the instance was frozen), once more on a fresh one. `work`
    /// must be safe to repeat: every operation here is.
    pub(super) async fn with_client<T, F>(&self, action: &'static str, work: F) -> StoreResult<T>
    where
        F: for<'c> Fn(&'c mut deadpool_postgres::Object) -> Pin<Box<dyn Future<Output = Result<T, Op>> + Send + 'c>>,
    {
        let mut client = self.client(action).await?;
        match work(&mut client).await {
            Err(Op::Db(e)) if e.is_closed() || failure(&e) == Failure::Unreachable => {
                drop(deadpool_postgres::Object::take(client));
                let mut client = self.client(action).await?;
                work(&mut client).await.map_err(|e| e.into_error(action))
            }
            other => other.map_err(|e| e.into_error(action)),
        }
    }
}

/// Why an operation on a connection failed.
pub(super) enum Op {
    Db(tokio_postgres::Error),
    Other(StoreError),
}

impl From<tokio_postgres::Error> for Op {
    fn from(e: tokio_postgres::Error) -> Self {
        Op::Db(e)
    }
}

impl From<StoreError> for Op {
    fn from(e: StoreError) -> Self {
        Op::Other(e)
    }
}

impl Op {
    fn into_error(self, action: &'static str) -> StoreError {
        match self {
            Op::Db(e) => unavailable(service(action, e)),
            Op::Other(e) => e,
        }
    }
}

/// The TLS connector: the system's roots, plus `ca_pem`'s certificates.
pub(super) fn tls(ca_pem: Option<&str>) -> StoreResult<tokio_postgres_rustls::MakeRustlsConnect> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(pem) = ca_pem {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|_| StoreError::internal("postgres_ca_pem in the Coach secret is not PEM certificates"))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(StoreError::internal("postgres_ca_pem in the Coach secret holds no usable certificate"));
        }
    }
    if roots.is_empty() {
        return Err(StoreError::internal("no trusted certificates to verify the database with"));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::internal(format!("TLS configuration: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}
