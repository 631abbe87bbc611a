//! `coach-dev`: sets up the local stack against the AWS endpoint in the environment.
//!
//! `coach-dev setup [DOCS_DIR]` creates the bucket (`COACH_BUCKET`), the table
//! (`COACH_TABLE`) and the secret (`COACH_SECRET_ID`, default `coach-local`) unless they
//! exist, and uploads every file of DOCS_DIR (default `examples/docs`) to `docs/`.
//! It refuses to run without `AWS_ENDPOINT_URL`, so it never touches a real account.

use std::path::{Path, PathBuf};

use aws_config::BehaviorVersion;
use coach::config::Config;
use coach_testkit::stack::{create_bucket, create_table};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup(args.get(1).map(PathBuf::from)).await,
        _ => Err("usage: coach-dev setup [DOCS_DIR]".to_owned()),
    };
    if let Err(message) = result {
        eprintln!("coach-dev: {message}");
        std::process::exit(2);
    }
}

async fn setup(docs_dir: Option<PathBuf>) -> Result<(), String> {
    if std::env::var("AWS_ENDPOINT_URL").map_or(true, |v| v.trim().is_empty()) {
        return Err("AWS_ENDPOINT_URL is not set; coach-dev only sets up a local emulator".into());
    }
    let config = Config::from_env().map_err(|e| e.to_string())?;
    let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let aws = coach::aws::AwsClients::from_sdk_config(&sdk, &config);

    create_bucket(&aws.s3, &config.bucket).await?;
    println!("bucket   {}", config.bucket);
    create_table(&aws.dynamodb, &config.table).await?;
    println!("table    {}", config.table);

    let secret_id = std::env::var("COACH_SECRET_ID").unwrap_or_else(|_| "coach-local".to_owned());
    create_secret(&aws_sdk_secretsmanager::Client::new(&sdk), &secret_id).await?;
    println!("secret   {secret_id}");

    let docs_dir = docs_dir.unwrap_or_else(|| PathBuf::from("examples/docs"));
    let uploaded = upload_docs(&aws.s3, &config.bucket, &docs_dir).await?;
    println!(
        "docs     {uploaded} file(s) from {} to s3://{}/docs/",
        docs_dir.display(),
        config.bucket
    );
    Ok(())
}

/// Creates the secret with a fresh random HS256 key unless it exists.
async fn create_secret(client: &aws_sdk_secretsmanager::Client, secret_id: &str) -> Result<(), String> {
    let key = random_hex(32)?;
    let value = serde_json::json!({ "jwt_hs256_secret": key }).to_string();
    match client.create_secret().name(secret_id).secret_string(value).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_exists_exception()) => Ok(()),
        Err(e) => Err(format!(
            "create secret {secret_id}: {}",
            aws_sdk_secretsmanager::error::DisplayErrorContext(e)
        )),
    }
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
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("bad file name {}", path.display()))?;
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
