//! The AWS resources Coach runs on, created against an emulator: the bucket, the table and
//! the secret. The table definition mirrors `CoachTable` in template.yaml; the local stack
//! (`coach-dev setup`) and the integration tests both create resources through here.

use std::time::Duration;

use aws_config::{timeout::TimeoutConfig, BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TimeToLiveSpecification,
};
use std::sync::Arc;

use aws_sdk_s3::config::Credentials;
use coach::{
    config::{ConfigError, Env, StartupError},
    index::{
        segment::{build, documents, memory, split},
        Index, IndexStoreConfig,
    },
    model::{Scope, Shard},
    secrets::{Secrets, SecretsConfig},
    store::{
        AwsClients, DocumentIndex, IndexStore, Manifest, ManifestRead, PassageSearch, Segment, SegmentInfo, StoreConfig,
    },
};

use crate::{
    iam::{Enforce, Iam, Names},
    postgres::Postgres,
};

/// Partition and sort key attribute names, and the TTL attribute (see template.yaml).
pub const PARTITION_KEY: &str = "pk";
pub const SORT_KEY: &str = "sk";
pub const TTL_ATTRIBUTE: &str = "expires_at";

/// SDK configuration for an emulator at `endpoint`, with dummy credentials.
pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "coach-testkit"))
        .timeout_config(TimeoutConfig::builder().operation_timeout(Duration::from_secs(10)).build())
        .load()
        .await
}

/// A bucket and table name no other test uses (lowercase, valid for both services).
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// Creates the bucket unless it exists.
pub async fn create_bucket(s3: &aws_sdk_s3::Client, bucket: &str) -> Result<(), String> {
    match s3.create_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|e| e.is_bucket_already_owned_by_you()) => Ok(()),
        Err(e) => Err(format!("create bucket {bucket}: {}", aws_sdk_s3::error::DisplayErrorContext(e))),
    }
}

/// Creates the table (on-demand, `pk`/`sk` string keys, index `gsi1` on `gsi1pk`/`gsi1sk`,
/// TTL on `expires_at`) unless it exists.
pub async fn create_table(dynamodb: &aws_sdk_dynamodb::Client, table: &str) -> Result<(), String> {
    let key = |name: &str, key_type| {
        KeySchemaElement::builder().attribute_name(name).key_type(key_type).build().map_err(|e| e.to_string())
    };
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| e.to_string())
    };
    let created = dynamodb
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(PARTITION_KEY, KeyType::Hash)?)
        .key_schema(key(SORT_KEY, KeyType::Range)?)
        .attribute_definitions(attr(PARTITION_KEY)?)
        .attribute_definitions(attr(SORT_KEY)?)
        .attribute_definitions(attr("gsi1pk")?)
        .attribute_definitions(attr("gsi1sk")?)
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(coach::store::SESSIONS_INDEX)
                .key_schema(key("gsi1pk", KeyType::Hash)?)
                .key_schema(key("gsi1sk", KeyType::Range)?)
                .projection(Projection::builder().projection_type(ProjectionType::All).build())
                .build()
                .map_err(|e| e.to_string())?,
        )
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_in_use_exception()) => return Ok(()),
        Err(e) => return Err(format!("create table {table}: {}", aws_sdk_dynamodb::error::DisplayErrorContext(e))),
    }
    dynamodb
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(TTL_ATTRIBUTE)
                .build()
                .map_err(|e| e.to_string())?,
        )
        .send()
        .await
        .map_err(|e| format!("enable TTL on {table}: {}", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
    Ok(())
}

/// Creates the Coach secret (a JSON object of string fields) unless it exists.
pub async fn create_secret(
    secrets: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
    fields: &serde_json::Value,
) -> Result<(), String> {
    match secrets.create_secret().name(secret_id).secret_string(fields.to_string()).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_exists_exception()) => Ok(()),
        Err(e) => Err(format!("create secret {secret_id}: {}", aws_sdk_secretsmanager::error::DisplayErrorContext(e))),
    }
}

/// The HS256 key the test stacks put in their secret.
pub const TEST_HS256_KEY: &str = "test-hs256-key-0123456789abcdef0123456789abcdef";

/// Name of the local ingest queue for a bucket.
pub fn queue_name(bucket: &str) -> String {
    format!("{bucket}-ingest")
}

/// Creates the ingest queue and sends the bucket's object events for `uploads/` and `docs/`
/// to it, as template.yaml sends them to the ingest function.
pub async fn notify_queue(s3: &aws_sdk_s3::Client, sqs: &aws_sdk_sqs::Client, bucket: &str) -> Result<String, String> {
    use aws_sdk_s3::types::{
        Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter,
        QueueConfiguration, S3KeyFilter,
    };
    let queue_url = sqs
        .create_queue()
        .queue_name(queue_name(bucket))
        .attributes(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout, "30")
        .send()
        .await
        .map_err(|e| format!("create queue: {}", aws_sdk_sqs::error::DisplayErrorContext(e)))?
        .queue_url
        .ok_or("create queue: no URL")?;
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| format!("queue ARN: {}", aws_sdk_sqs::error::DisplayErrorContext(e)))?
        .attributes
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn).cloned())
        .ok_or("queue has no ARN")?;
    let mut configuration = NotificationConfiguration::builder();
    for prefix in ["uploads/", "docs/"] {
        let filter = NotificationConfigurationFilter::builder()
            .key(
                S3KeyFilter::builder()
                    .filter_rules(FilterRule::builder().name(FilterRuleName::Prefix).value(prefix).build())
                    .build(),
            )
            .build();
        configuration = configuration.queue_configurations(
            QueueConfiguration::builder()
                .queue_arn(&arn)
                .events(Event::from("s3:ObjectCreated:*"))
                .events(Event::from("s3:ObjectRemoved:*"))
                .filter(filter)
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    s3.put_bucket_notification_configuration()
        .bucket(bucket)
        .notification_configuration(configuration.build())
        .send()
        .await
        .map_err(|e| format!("bucket notifications: {}", aws_sdk_s3::error::DisplayErrorContext(e)))?;
    Ok(queue_url)
}

/// A Coach stack on the shared emulator with names of its own.
pub struct TestStack {
    pub sdk: SdkConfig,
    /// The bucket, table and secret names, and how they are reached.
    pub config: StoreConfig,
    pub aws: AwsClients,
    /// The environment the functions read: the test's variables and the names above.
    vars: Vec<(String, String)>,
    /// With the Postgres index store: the stack's database on the shared server.
    pub database: Option<String>,
}

/// Which index store a stack's functions use (`COACH_INDEX_STORE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    S3,
    /// A database of the stack's own on the test binary's PostgreSQL ([`Postgres::shared`]).
    Postgres,
}

/// The functions of one deployment over a stack, each with the state its `main` builds:
/// what a test drives when it crosses functions (upload, then ingest, then chat).
///
/// Each function's AWS clients are held to its policies in template.yaml ([`crate::iam`]):
/// a call they would deny fails, and the deployment fails its test when dropped.
pub struct Deployment {
    pub chat: chat::State,
    pub stream: Arc<chat::stream::StreamState>,
    pub uploads: upload_url::State,
    pub ingest: ingest::State,
    pub refresh: docs_refresh::State,
    pub iam: Arc<Iam>,
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let denials = self.iam.denials();
        if !denials.is_empty() && !std::thread::panicking() {
            let lines: Vec<String> = denials.iter().map(ToString::to_string).collect();
            panic!("AWS would deny {} call(s) of this deployment:\n{}", lines.len(), lines.join("\n"));
        }
    }
}

impl TestStack {
    /// Bucket, table and secret (with [`TEST_HS256_KEY`]) created, default configuration.
    pub async fn new() -> Self {
        Self::with_env(&[]).await
    }

    /// Like [`TestStack::new`], with extra environment variables for the configuration.
    pub async fn with_env(vars: &[(&str, &str)]) -> Self {
        Self::on(&crate::moto::Moto::shared().endpoint, vars).await
    }

    /// Like [`TestStack::with_env`], with the index in `store`.
    pub async fn with_store(store: Store, vars: &[(&str, &str)]) -> Self {
        match store {
            Store::S3 => Self::with_env(vars).await,
            Store::Postgres => {
                let server = Postgres::shared();
                let database = unique_name("coach_pg").replace('-', "_");
                server.database(&database).expect("a test database");
                let port = server.port.to_string();
                let mut all = vec![
                    ("COACH_INDEX_STORE", "postgres"),
                    ("COACH_PG_HOST", "127.0.0.1"),
                    ("COACH_PG_PORT", port.as_str()),
                    ("COACH_PG_DATABASE", database.as_str()),
                    ("COACH_PG_USER", crate::postgres::USER),
                    ("COACH_PG_TLS", "disable"),
                ];
                all.extend_from_slice(vars);
                let mut stack = Self::with_env(&all).await;
                stack.database = Some(database);
                stack
            }
        }
    }

    /// Runs SQL in the stack's database (Postgres index store only); the rows as `psql -A -t` prints them.
    pub fn sql(&self, statements: &str) -> String {
        let database = self.database.as_deref().expect("a stack with the Postgres index store");
        Postgres::shared().sql(database, statements).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The configured index store, as the functions build it.
    fn index(&self) -> Index {
        self.build(&self.aws, |env, aws| -> Result<_, coach::config::ConfigError> {
            let secrets = Secrets::coach(aws, SecretsConfig::from_env(env)?);
            Ok(Index::new(IndexStoreConfig::from_env(env)?, aws, &secrets))
        })
    }

    /// The index store's search, as chat builds it.
    pub fn passage_search(&self) -> Arc<dyn PassageSearch> {
        self.index().search(&self.aws)
    }

    /// The index store's writer, as ingest builds it.
    pub fn document_index(&self) -> Arc<dyn DocumentIndex> {
        self.index().writer(&self.aws)
    }

    /// Configuration and clients for unique names, with nothing created.
    pub async fn without_resources(vars: &[(&str, &str)]) -> Self {
        Self::on_endpoint(&crate::moto::Moto::shared().endpoint, vars, false).await
    }

    /// Bucket, table and secret created on the emulator at `endpoint` (for example a
    /// dedicated [`crate::moto::Moto`] a test will stop).
    /// As deployed, the signing key is in a secret of its own (`COACH_JWT_SECRET_ID`).
    pub async fn on(endpoint: &str, vars: &[(&str, &str)]) -> Self {
        let stack = Self::on_endpoint(endpoint, vars, true).await;
        create_bucket(&stack.aws.s3, &stack.config.bucket).await.unwrap();
        create_table(&stack.aws.dynamodb, &stack.config.table).await.unwrap();
        let fields = serde_json::json!({ coach::auth::HS256_SECRET_FIELD: TEST_HS256_KEY });
        create_secret(&stack.aws.secrets, &stack.config.secret_id, &fields).await.unwrap();
        if stack.config.jwt_secret_id != stack.config.secret_id {
            create_secret(&stack.aws.secrets, &stack.config.jwt_secret_id, &fields).await.unwrap();
        }
        stack
    }

    async fn on_endpoint(endpoint: &str, vars: &[(&str, &str)], jwt_secret: bool) -> Self {
        let name = unique_name("coach-test");
        // The embedded model from models/ (scripts/model.sh): the default provider, as deployed.
        let mut all = vec![
            ("COACH_EMBEDDING_MODEL_DIR".to_owned(), model_dir().display().to_string()),
            ("COACH_EXTRACT_PROGRAM".to_owned(), extract_program().display().to_string()),
        ];
        if jwt_secret {
            all.push(("COACH_JWT_SECRET_ID".to_owned(), format!("{name}-jwt")));
        }
        all.extend(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        for var in ["COACH_BUCKET", "COACH_TABLE", "COACH_SECRET_ID"] {
            all.push((var.to_owned(), name.clone()));
        }
        all.push(("COACH_S3_FORCE_PATH_STYLE".to_owned(), "true".to_owned()));
        let config = Self::read(&all, StoreConfig::from_env).expect("test configuration is valid");
        let sdk = sdk_config(endpoint).await;
        let aws = AwsClients::from_sdk_config(&sdk, config.clone());
        Self { sdk, config, aws, vars: all, database: None }
    }

    /// The same resources, with `vars` added to the environment (a function deployed from it
    /// sees the same bucket, table and secret with other settings).
    pub fn with_more_env(&self, vars: &[(&str, &str)]) -> Self {
        let mut all = self.vars.clone();
        all.extend(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        // Store settings that are not resource names (the signing key's secret, timeouts).
        let config = Self::read(&all, StoreConfig::from_env).expect("test configuration is valid");
        let aws = self.aws.with_config(config.clone());
        Self { sdk: self.sdk.clone(), config, aws, vars: all, database: self.database.clone() }
    }

    /// Runs `read` over this stack's environment (the last value of a variable wins).
    fn read<T>(vars: &[(String, String)], read: impl FnOnce(&Env) -> T) -> T {
        let lookup = |name: &str| vars.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        read(&Env(&lookup))
    }

    /// Starts a function over this stack as its cold start does, with `aws`'s clients:
    /// `load` reads its settings from this stack's environment, `new` builds its state.
    pub fn start<C, S>(
        &self,
        aws: &AwsClients,
        load: impl FnOnce(&Env) -> Result<C, ConfigError>,
        new: impl FnOnce(C, &AwsClients) -> Result<S, StartupError>,
    ) -> S {
        let settings = Self::read(&self.vars, load).expect("function settings");
        new(settings, aws).expect("function state")
    }

    /// Builds something of a function's over this stack from its environment, with `aws`'s
    /// clients.
    pub fn build<T, E: std::fmt::Debug>(
        &self,
        aws: &AwsClients,
        build: impl FnOnce(&Env, &AwsClients) -> Result<T, E>,
    ) -> T {
        Self::read(&self.vars, |env| build(env, aws)).expect("function state")
    }

    /// Writes an object to this stack's bucket.
    pub async fn put(&self, key: &str, body: &[u8]) {
        self.aws.s3.put_object().bucket(&self.config.bucket).key(key).body(body.to_vec().into()).send().await.unwrap();
    }

    /// Reads an object of this stack's bucket as text.
    pub async fn get_text(&self, key: &str) -> String {
        let object = self.aws.s3.get_object().bucket(&self.config.bucket).key(key).send().await.unwrap();
        String::from_utf8(object.body.collect().await.unwrap().into_bytes().to_vec()).unwrap()
    }

    /// The stored manifest of a scope's index, if it has one.
    pub async fn manifest(&self, scope: &Scope) -> Option<Manifest> {
        match self.aws.bucket().manifest(scope, None).await.expect("manifest readable") {
            ManifestRead::Changed { manifest, .. } => Some(manifest),
            ManifestRead::Missing => None,
            ManifestRead::NotModified => panic!("304 to an unconditional read"),
        }
    }

    /// The live documents of a scope's index as stored: per the manifest, each document's
    /// data from the segment that serves it.
    pub async fn indexed(&self, scope: &Scope) -> std::collections::BTreeMap<String, Shard> {
        let mut out = std::collections::BTreeMap::new();
        let Some(manifest) = self.manifest(scope).await else { return out };
        let bucket = self.aws.bucket();
        for info in &manifest.segments {
            let bytes = bucket.read_segment(scope, &info.id).await.unwrap().expect("a served segment exists");
            let segment = Segment::decode(&bytes).expect("a served segment is intact");
            let live = |id: &str| manifest.docs.get(id).is_some_and(|e| e.segment == info.id);
            for shard in documents(segment, |d| live(&d.document_id)) {
                assert!(out.insert(shard.document_id.clone(), shard).is_none(), "a document served twice");
            }
        }
        assert_eq!(out.len(), manifest.docs.len(), "every live document is in its segment");
        out
    }

    /// Writes `docs` as a scope's index the way compaction leaves it (segments of about
    /// `segment_bytes`, written concurrently, and a manifest serving them), for benchmarks
    /// that need a large tenant without ingesting it document by document.
    pub async fn seed_index(&self, scope: &Scope, docs: Vec<Shard>, segment_bytes: u64) -> Manifest {
        let bucket = self.aws.bucket();
        let mut manifest = Manifest::default();
        let mut writes = Vec::new();
        for (n, part) in split(docs, segment_bytes).into_iter().enumerate() {
            let docs: Vec<(String, u32)> =
                part.iter().map(|d| (d.document_id.clone(), d.chunks.len() as u32)).collect();
            let segment = build(part, &coach::analysis::Analyzer::default());
            let id = format!("01SEED{n:020}");
            let bytes = segment.encode();
            let info = SegmentInfo {
                id: id.clone(),
                bytes: bytes.len() as u64,
                memory: memory(&segment),
                docs: docs.len() as u32,
                chunks: segment.chunks.len() as u32,
            };
            manifest.serve(info, &docs, "", 0);
            let (bucket, scope) = (bucket.clone(), scope.clone());
            writes.push(tokio::spawn(async move { bucket.write_segment(&scope, &id, bytes.into()).await }));
        }
        for write in writes {
            write.await.expect("segment write task").expect("segment written");
        }
        bucket.put_manifest(scope, &manifest, None).await.expect("manifest written");
        manifest
    }

    /// One tenant document as indexed, if it is.
    pub async fn indexed_doc(&self, tenant: &str, id: &str) -> Option<Shard> {
        self.indexed(&Scope::Tenant(tenant.to_owned())).await.remove(id)
    }

    /// Keys of the stored objects under `prefix`.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let listed = self.aws.s3.list_objects_v2().bucket(&self.config.bucket).prefix(prefix).send().await.unwrap();
        listed.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect()
    }

    /// The table's items in partition `pk` (as a test reads what a function stored).
    pub async fn items(
        &self,
        pk: &str,
    ) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
        let query = self.aws.dynamodb.query().table_name(&self.config.table).key_condition_expression("pk = :pk");
        let pk = aws_sdk_dynamodb::types::AttributeValue::S(pk.to_owned());
        query.expression_attribute_values(":pk", pk).send().await.unwrap().items.unwrap_or_default()
    }

    /// Every function's state over this stack, as each function's `main` builds it.
    pub fn deploy(&self) -> Deployment {
        self.deploy_with(&self.aws)
    }

    /// Like [`TestStack::deploy`], with other clients (an unreachable endpoint, a timing
    /// HTTP client).
    pub fn deploy_with(&self, aws: &AwsClients) -> Deployment {
        self.deployment(aws, true)
    }

    /// Like [`TestStack::deploy_with`], without the IAM check: what a benchmark measures is
    /// the functions' own time, not the check's.
    pub fn deploy_unchecked(&self, aws: &AwsClients) -> Deployment {
        self.deployment(aws, false)
    }

    fn deployment(&self, aws: &AwsClients, checked: bool) -> Deployment {
        let iam = Arc::new(Iam::new(self.iam_names()));
        let held = |function: &str| if checked { enforcing(aws, iam.enforcer(function)) } else { aws.clone() };
        Deployment {
            chat: self.start(&held("ChatFunction"), chat::Settings::load, chat::State::new),
            stream: Arc::new(self.start(
                &held("ChatStreamFunction"),
                chat::StreamSettings::load,
                chat::stream::StreamState::new,
            )),
            uploads: self.start(&held("UploadUrlFunction"), upload_url::Settings::load, upload_url::State::new),
            ingest: self.start(&held("IngestFunction"), ingest::Settings::load, ingest::State::new),
            refresh: self.start(&held("DocsRefreshFunction"), docs_refresh::Settings::load, docs_refresh::State::new),
            iam,
        }
    }

    /// This stack's resources as the template names them, and the template conditions its
    /// settings make true.
    pub fn iam_names(&self) -> Names {
        let var = |name: &str| self.vars.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.to_ascii_lowercase());
        let mut conditions = std::collections::BTreeSet::new();
        if var("COACH_INDEX_STORE").as_deref() == Some("postgres") {
            conditions.insert("UsePostgres".to_owned());
        }
        if var("COACH_EMBEDDING_PROVIDER").is_none_or(|p| p == "local") {
            conditions.insert("UseLocalEmbeddings".to_owned());
        }
        let raw = |name: &str| self.vars.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        if var("COACH_LLM_PROVIDER").as_deref() == Some("bedrock") {
            conditions.insert("UseBedrock".to_owned());
            if raw("COACH_BEDROCK_GUARDRAIL_ID").is_some() {
                conditions.insert("UseBedrockGuardrail".to_owned());
            }
        }
        if var("COACH_EMBEDDING_PROVIDER").as_deref() == Some("bedrock") {
            conditions.insert("UseBedrockEmbeddings".to_owned());
        }
        // The models and the guardrail are parameters of the template, which the Bedrock
        // policies name.
        let parameters = [
            ("LlmModel", "COACH_LLM_MODEL"),
            ("BedrockGuardrailId", "COACH_BEDROCK_GUARDRAIL_ID"),
            ("EmbeddingModel", "COACH_EMBEDDING_MODEL"),
        ]
        .into_iter()
        .filter_map(|(parameter, var)| raw(var).map(|value| (parameter.to_owned(), value)))
        .collect();
        Names {
            table: self.config.table.clone(),
            bucket: self.config.bucket.clone(),
            secret_id: self.config.secret_id.clone(),
            jwt_secret_id: self.config.jwt_secret_id.clone(),
            queue_url: raw("COACH_INGEST_QUEUE_URL"),
            conditions,
            parameters,
        }
    }
}

/// `aws`'s clients, each also held to a function's policies by `enforce`.
pub fn enforcing(aws: &AwsClients, enforce: Enforce) -> AwsClients {
    aws.with_interceptor(enforce)
}

/// The embedded embedding model's folder: `models/` at the repository's root, where
/// `scripts/model.sh` installs it.
/// The program ingest reads documents in ([`coach::ingest::sandbox`]): this one when it can
/// serve as the extraction child (the package's binaries call `serve_if_child`), else (a
/// test or bench harness, under `deps/`) the package's `coach-extract` beside it, which
/// Cargo builds before it runs integration tests and benches.
pub fn extract_program() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the running program's path");
    match exe.parent() {
        Some(deps) if deps.ends_with("deps") => deps.with_file_name("coach-extract"),
        _ => exe,
    }
}

/// The deadline of an ingest invocation that starts now (the template's ingest timeout).
pub fn ingest_deadline() -> coach::deadline::Deadline {
    coach::deadline::Deadline::after(std::time::Duration::from_secs(300))
}

pub fn model_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/all-minilm-l6-v2")
}
