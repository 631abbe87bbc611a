//! `coach-dev`: sets up the local stack and mints tokens for it, against the AWS endpoint
//! in the environment. It refuses to run without `AWS_ENDPOINT_URL`, so it never touches a
//! real account.
//!
//! - `coach-dev setup [DOCS_DIR]`: creates the bucket (`COACH_BUCKET`), the table
//!   (`COACH_TABLE`) and the secret (`COACH_SECRET_ID`, with a random HS256 key) unless
//!   they exist, and uploads every file of DOCS_DIR (default `examples/docs`) to `docs/`.
//!   `COACH_DEV_LLM_API_KEY`, when set, goes into the secret as `llm_api_key`.
//! - `coach-dev token [--user U] [--tenant T] [--roles R1,R2] [--ttl SECONDS]`: prints an
//!   HS256 token signed with the local secret's key (defaults: `dev-user`, `dev`, `user`,
//!   3600), with `iss`/`aud` set when `COACH_JWT_ISSUER`/`COACH_JWT_AUDIENCE` are.

use std::path::{Path, PathBuf};

use aws_config::BehaviorVersion;
use coach::{auth::HS256_SECRET_FIELD, aws::AwsClients, config::Config};
use coach_testkit::{
    stack::{create_bucket, create_secret, create_table},
    tokens,
};

const USAGE: &str = "usage: coach-dev setup [DOCS_DIR]
       coach-dev token [--user USER] [--tenant TENANT] [--roles ROLE,...] [--ttl SECONDS]";

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") if args.len() <= 2 => setup(args.get(1).map(PathBuf::from)).await,
        Some("token") => token(&args[1..]).await,
        _ => Err(USAGE.to_owned()),
    };
    if let Err(message) = result {
        eprintln!("coach-dev: {message}");
        std::process::exit(2);
    }
}

async fn local_stack() -> Result<(Config, AwsClients), String> {
    if std::env::var("AWS_ENDPOINT_URL").map_or(true, |v| v.trim().is_empty()) {
        return Err("AWS_ENDPOINT_URL is not set; coach-dev only works with a local emulator".into());
    }
    let config = Config::from_env().map_err(|e| e.to_string())?;
    let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let aws = AwsClients::from_sdk_config(&sdk, &config);
    Ok((config, aws))
}

async fn setup(docs_dir: Option<PathBuf>) -> Result<(), String> {
    let (config, aws) = local_stack().await?;
    create_bucket(&aws.s3, &config.bucket).await?;
    println!("bucket   {}", config.bucket);
    create_table(&aws.dynamodb, &config.table).await?;
    println!("table    {}", config.table);
    let mut fields = serde_json::json!({ HS256_SECRET_FIELD: random_hex(32)? });
    if let Ok(key) = std::env::var("COACH_DEV_LLM_API_KEY") {
        fields[coach::llm::API_KEY_FIELD] = key.into();
    }
    create_secret(&aws.secrets, &config.secret_id, &fields).await?;
    println!("secret   {}", config.secret_id);

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
    let secret = aws.secrets.get_secret_value().secret_id(&config.secret_id).send().await.map_err(|e| {
        format!("read secret {}: {}", config.secret_id, aws_sdk_secretsmanager::error::DisplayErrorContext(e))
    })?;
    let fields: serde_json::Value = serde_json::from_str(secret.secret_string().unwrap_or_default())
        .map_err(|_| "secret is not JSON".to_owned())?;
    let key = fields[HS256_SECRET_FIELD].as_str().ok_or_else(|| format!("secret has no {HS256_SECRET_FIELD}"))?;

    let role_list: Vec<&str> = roles.split(',').map(str::trim).filter(|r| !r.is_empty()).collect();
    let mut claims = tokens::claims(&user, &tenant, &role_list, ttl);
    // Use the configured claim names, so the token matches what the functions read.
    let auth = &config.auth;
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
