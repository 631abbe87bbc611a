//! IAM as AWS would enforce it, for the local stack, where moto enforces none.
//!
//! Every SDK client a function's state is built with ([`crate::stack::TestStack::deploy`])
//! carries an [`Enforce`] interceptor that reads each AWS call as it is about to be sent
//! (service, operation, and the resources it names: table and index, bucket and key with a
//! list's `s3:prefix`, queue, secret; each item of a transaction), translates it into the IAM
//! actions and resource ARNs AWS authorizes it as, and evaluates those against that
//! function's policies in `template.yaml` (inline and managed statements, `!If` on the
//! template's conditions, `!Sub`/`!Ref`/`!GetAtt`, wildcards, `StringLike`/`StringEquals`
//! conditions). A call the policies would deny fails as on AWS, and is kept: the
//! [`crate::stack::Deployment`] fails its test at the end naming the function, the call and
//! the permission no statement grants.
//!
//! The test's resource names (unique per stack) are mapped onto the template's: the stack's
//! table is `CoachTable`, its bucket `DocumentsBucket`, its secrets `CoachSecret` and
//! `JwtSecret`, its jobs queue `IngestJobsQueue`.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, OnceLock},
};

use aws_smithy_runtime_api::{
    box_error::BoxError,
    client::{
        interceptors::{context::BeforeTransmitInterceptorContextRef, Intercept},
        orchestrator::Metadata,
        runtime_components::RuntimeComponents,
    },
};
use aws_smithy_types::config_bag::ConfigBag;
use serde_json::Value as Json;
use serde_norway::Value;

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";
const STAGE: &str = "test";

/// One permission a call needs: an action on a resource (on any of several, where one test
/// resource stands for two of the template's), with the condition keys it sets.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Need {
    pub action: String,
    pub resources: Vec<String>,
    pub context: BTreeMap<String, String>,
}

/// One statement of a policy, resolved.
#[derive(Debug, Clone)]
struct Statement {
    sid: String,
    allow: bool,
    actions: Vec<String>,
    resources: Vec<String>,
    /// operator -> key -> patterns
    conditions: Vec<(String, String, Vec<String>)>,
}

/// A call the template's policies would deny.
#[derive(Debug, Clone)]
pub struct Denial {
    pub function: String,
    pub call: String,
    pub need: Need,
    /// The function's statements that grant the action, elsewhere.
    pub near: Vec<String>,
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} needs {} on {}{} and no statement of its policies in template.yaml allows it{}",
            self.function,
            self.call,
            self.need.action,
            self.need.resources.join(" or "),
            if self.need.context.is_empty() { String::new() } else { format!(" with {:?}", self.need.context) },
            if self.near.is_empty() { String::new() } else { format!(" ({})", self.near.join("; ")) }
        )
    }
}

/// The template's names for the stack's resources, and which conditions hold.
#[derive(Debug, Clone)]
pub struct Names {
    pub table: String,
    pub bucket: String,
    pub secret_id: String,
    pub jwt_secret_id: String,
    pub queue_url: Option<String>,
    /// Template conditions that hold for this stack (`UsePostgres`, `UseLocalEmbeddings`).
    pub conditions: BTreeSet<String>,
    /// Template parameters this stack sets, by name (`LlmModel`); the others take their
    /// defaults.
    pub parameters: BTreeMap<String, String>,
}

/// The policies of every function of a stack, and the denials seen so far.
pub struct Iam {
    names: Names,
    functions: BTreeMap<String, Vec<Statement>>,
    denials: Mutex<Vec<Denial>>,
}

fn template() -> &'static Value {
    static TEMPLATE: OnceLock<Value> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
        serde_norway::from_str(&std::fs::read_to_string(path).expect("template.yaml")).expect("template.yaml parses")
    })
}

/// `template` with `parameters` as their parameters' values (their defaults, as `!Ref` reads
/// them here).
fn with_parameters(template: &Value, parameters: &BTreeMap<String, String>) -> Value {
    let mut template = template.clone();
    for (name, value) in parameters {
        let parameter = template.get_mut("Parameters").and_then(|p| p.get_mut(name.as_str()));
        let parameter = parameter.and_then(Value::as_mapping_mut).unwrap_or_else(|| panic!("no parameter {name}"));
        parameter.insert(Value::String("Default".into()), Value::String(value.clone()));
    }
    template
}

/// A tag's name without its `!`, and the tagged value.
fn intrinsic(value: &Value) -> Option<(String, &Value)> {
    match value {
        Value::Tagged(tagged) => Some((tagged.tag.to_string().trim_start_matches('!').to_owned(), &tagged.value)),
        Value::Mapping(map) if map.len() == 1 => {
            let (key, inner) = map.iter().next()?;
            let key = key.as_str()?;
            let name = key.strip_prefix("Fn::").or((key == "Ref").then_some("Ref"))?;
            Some((name.to_owned(), inner))
        }
        _ => None,
    }
}

impl Iam {
    /// The policies of every function in `template.yaml`, resolved for `names`.
    pub fn new(names: Names) -> Self {
        let template = &with_parameters(template(), &names.parameters);
        let mut functions = BTreeMap::new();
        let resources = template["Resources"].as_mapping().expect("Resources");
        for (name, resource) in resources {
            if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
                continue;
            }
            let name = name.as_str().expect("a resource name").to_owned();
            let mut statements = Vec::new();
            let policies = resource["Properties"]["Policies"].as_sequence().cloned().unwrap_or_default();
            for policy in &policies {
                collect(template, &names.conditions, policy, &mut statements);
            }
            functions.insert(name, statements);
        }
        Self { names, functions, denials: Mutex::new(Vec::new()) }
    }

    /// The interceptor for `function`'s clients (its logical name in the template).
    pub fn enforcer(self: &Arc<Self>, function: &str) -> Enforce {
        assert!(self.functions.contains_key(function), "{function} is no function of template.yaml");
        Enforce { iam: self.clone(), function: function.to_owned() }
    }

    /// The denials so far.
    pub fn denials(&self) -> Vec<Denial> {
        self.denials.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Whether `function`'s policies allow `need`.
    pub fn allows(&self, function: &str, need: &Need) -> bool {
        let statements = &self.functions[function];
        let applies = |s: &&Statement| {
            s.grants(&need.action)
                && s.resources.iter().any(|r| need.resources.iter().any(|resource| glob(r, resource)))
                && s.conditions.iter().all(|(op, key, patterns)| {
                    let Some(value) = need.context.get(key) else { return false };
                    match op.as_str() {
                        "StringLike" => patterns.iter().any(|p| glob(p, value)),
                        "StringEquals" => patterns.iter().any(|p| p == value),
                        other => panic!("condition operator {other} is not evaluated here; add it to iam.rs"),
                    }
                })
        };
        let matching: Vec<&Statement> = statements.iter().filter(applies).collect();
        matching.iter().any(|s| s.allow) && !matching.iter().any(|s| !s.allow)
    }

    /// The permissions `function`'s call needs; the denied ones are recorded. `Err` names the
    /// first denied.
    fn check(&self, function: &str, call: &str, needs: Vec<Need>) -> Result<(), String> {
        let denied: Vec<Denial> = needs
            .into_iter()
            .filter(|need| !self.allows(function, need))
            .map(|need| {
                let near = self.functions[function]
                    .iter()
                    .filter(|s| s.allow && s.grants(&need.action))
                    .map(|s| format!("{} grants it on {} only", s.sid, s.resources.join(", ")))
                    .collect();
                Denial { function: function.to_owned(), call: call.to_owned(), need, near }
            })
            .collect();
        let Some(first) = denied.first() else { return Ok(()) };
        let message = format!("AccessDenied (template.yaml): {first}");
        eprintln!("{message}");
        self.denials.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(denied);
        Err(message)
    }

    fn table_arn(&self) -> String {
        format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/CoachTable")
    }

    fn bucket_name(&self) -> String {
        resolve_string(template(), &template()["Resources"]["DocumentsBucket"]["Properties"]["BucketName"])
    }

    /// The IAM view of a call: what it needs.
    fn needs(&self, service: &str, operation: &str, request: &Request) -> Vec<Need> {
        let need =
            |action: String, resource: String| Need { action, resources: vec![resource], context: BTreeMap::new() };
        match service.to_ascii_lowercase().as_str() {
            "dynamodb" => {
                let body: Json = serde_json::from_slice(&request.body).unwrap_or(Json::Null);
                let table = |name: &Json| match name.as_str() {
                    Some(t) if t == self.names.table => self.table_arn(),
                    Some(t) => format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{t}"),
                    None => "?".to_owned(),
                };
                match operation {
                    "TransactWriteItems" | "TransactGetItems" => body["TransactItems"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .flat_map(|item| item.as_object().into_iter().flatten())
                        .map(|(kind, inner)| {
                            let action = match kind.as_str() {
                                "Put" => "PutItem",
                                "Update" => "UpdateItem",
                                "Delete" => "DeleteItem",
                                "ConditionCheck" => "ConditionCheckItem",
                                "Get" => "GetItem",
                                other => other,
                            };
                            need(format!("dynamodb:{action}"), table(&inner["TableName"]))
                        })
                        .collect(),
                    "BatchWriteItem" | "BatchGetItem" => body["RequestItems"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(name, _)| need(format!("dynamodb:{operation}"), table(&Json::String(name.clone()))))
                        .collect(),
                    _ => {
                        let mut resource = table(&body["TableName"]);
                        if let Some(index) = body["IndexName"].as_str() {
                            resource = format!("{resource}/index/{index}");
                        }
                        vec![need(format!("dynamodb:{operation}"), resource)]
                    }
                }
            }
            "s3" => {
                let (bucket, key) = request.s3_path();
                let bucket = if bucket == self.names.bucket { self.bucket_name() } else { bucket };
                let object = |key: &str| format!("arn:aws:s3:::{bucket}/{key}");
                let versioned = request.query.contains_key("versionId");
                let with_prefix = |action: &str| {
                    let mut n = need(action.to_owned(), format!("arn:aws:s3:::{bucket}"));
                    n.context.insert("s3:prefix".to_owned(), request.query.get("prefix").cloned().unwrap_or_default());
                    n
                };
                match operation {
                    "GetObject" | "HeadObject" => {
                        let action = if versioned { "s3:GetObjectVersion" } else { "s3:GetObject" };
                        vec![need(action.to_owned(), object(&key))]
                    }
                    "PutObject" => vec![need("s3:PutObject".to_owned(), object(&key))],
                    "CopyObject" => {
                        let source = request.header("x-amz-copy-source").unwrap_or_default();
                        let source = percent_decode(source.trim_start_matches('/'));
                        let (source_bucket, source_key) = source.split_once('/').unwrap_or((&source, ""));
                        let source_bucket = if source_bucket == self.names.bucket {
                            self.bucket_name()
                        } else {
                            source_bucket.to_owned()
                        };
                        vec![
                            need("s3:PutObject".to_owned(), object(&key)),
                            need("s3:GetObject".to_owned(), format!("arn:aws:s3:::{source_bucket}/{source_key}")),
                        ]
                    }
                    "DeleteObject" => {
                        let action = if versioned { "s3:DeleteObjectVersion" } else { "s3:DeleteObject" };
                        vec![need(action.to_owned(), object(&key))]
                    }
                    "DeleteObjects" => {
                        let body = String::from_utf8_lossy(&request.body);
                        body.split("<Object>")
                            .skip(1)
                            .map(|part| {
                                let field = |name: &str| {
                                    let start = part.find(&format!("<{name}>"))? + name.len() + 2;
                                    let end = part[start..].find(&format!("</{name}>"))? + start;
                                    Some(xml_unescape(&part[start..end]))
                                };
                                let action = if field("VersionId").is_some() {
                                    "s3:DeleteObjectVersion"
                                } else {
                                    "s3:DeleteObject"
                                };
                                need(action.to_owned(), object(&field("Key").unwrap_or_default()))
                            })
                            .collect()
                    }
                    "ListObjectsV2" | "ListObjects" => vec![with_prefix("s3:ListBucket")],
                    "ListObjectVersions" => vec![with_prefix("s3:ListBucketVersions")],
                    "HeadBucket" => vec![need("s3:ListBucket".to_owned(), format!("arn:aws:s3:::{bucket}"))],
                    other => vec![need(format!("s3:{other}"), format!("arn:aws:s3:::{bucket}"))],
                }
            }
            "sqs" => {
                let body: Json = serde_json::from_slice(&request.body).unwrap_or(Json::Null);
                let url = body["QueueUrl"].as_str().unwrap_or_default();
                let queue = if Some(url) == self.names.queue_url.as_deref() {
                    format!("arn:aws:sqs:{REGION}:{ACCOUNT}:coach-{STAGE}-ingest-jobs")
                } else {
                    format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{}", url.rsplit('/').next().unwrap_or_default())
                };
                let action = operation.strip_suffix("Batch").unwrap_or(operation);
                vec![need(format!("sqs:{action}"), queue)]
            }
            "secretsmanager" | "secrets manager" => {
                let body: Json = serde_json::from_slice(&request.body).unwrap_or(Json::Null);
                let id = body["SecretId"].as_str().unwrap_or_default();
                // With one secret for both (a stack that made its own), either may be meant.
                let mut resources = Vec::new();
                if id == self.names.secret_id {
                    resources.push(secret_arn("CoachSecret"));
                }
                if id == self.names.jwt_secret_id {
                    resources.push(secret_arn("JwtSecret"));
                }
                if resources.is_empty() {
                    resources.push(format!("arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{id}"));
                }
                vec![Need { action: format!("secretsmanager:{operation}"), resources, context: BTreeMap::new() }]
            }
            "bedrock runtime" | "bedrockruntime" => {
                // `/model/{modelId}/converse`: a model id, an inference profile's id or an ARN.
                let model = request.path.strip_prefix("/model/").and_then(|p| p.rsplit_once('/'));
                let id = percent_decode(model.map_or("", |(m, _)| m));
                let action = match operation {
                    "Converse" | "InvokeModel" => "bedrock:InvokeModel",
                    "ConverseStream" | "InvokeModelWithResponseStream" => "bedrock:InvokeModelWithResponseStream",
                    other => return vec![need(format!("bedrock:{other}"), "*".to_owned())],
                };
                let geographies = ["us", "eu", "apac", "global", "us-gov", "jp", "au", "ca"];
                // A guardrail in the request is applied on the caller's behalf.
                let body: Json = serde_json::from_slice(&request.body).unwrap_or(Json::Null);
                let guardrail = body["guardrailConfig"]["guardrailIdentifier"].as_str().map(|g| {
                    let arn = if g.starts_with("arn:") {
                        g.to_owned()
                    } else {
                        format!("arn:aws:bedrock:{REGION}:{ACCOUNT}:guardrail/{g}")
                    };
                    need("bedrock:ApplyGuardrail".to_owned(), arn)
                });
                let mut needs: Vec<Need> = guardrail.into_iter().collect();
                needs.extend(match id.split_once('.') {
                    _ if id.starts_with("arn:") => vec![need(action.to_owned(), id.clone())],
                    // An inference profile: the profile, and each model it routes to (in any
                    // region) as reached through that profile.
                    Some((geography, model)) if geographies.contains(&geography) && model.contains('.') => {
                        let profile = format!("arn:aws:bedrock:{REGION}:{ACCOUNT}:inference-profile/{id}");
                        let through = BTreeMap::from([("bedrock:InferenceProfileArn".to_owned(), profile.clone())]);
                        vec![
                            need(action.to_owned(), profile),
                            Need {
                                action: action.to_owned(),
                                resources: vec![format!("arn:aws:bedrock:{REGION}::foundation-model/{model}")],
                                context: through,
                            },
                        ]
                    }
                    _ => vec![need(action.to_owned(), format!("arn:aws:bedrock:{REGION}::foundation-model/{id}"))],
                });
                needs
            }
            other => vec![need(format!("{other}:{operation}"), "*".to_owned())],
        }
    }
}

impl Statement {
    /// Whether the statement names `action` (IAM actions are case-insensitive).
    fn grants(&self, action: &str) -> bool {
        self.actions.iter().any(|a| glob(&a.to_ascii_lowercase(), &action.to_ascii_lowercase()))
    }
}

fn secret_arn(logical: &str) -> String {
    format!("arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{logical}-AbCdEf")
}

/// The branch of `!If [condition, yes, no]` (`inner`) that the stack's `conditions` take.
fn branch<'a>(template: &Value, conditions: &BTreeSet<String>, inner: &'a Value) -> &'a Value {
    let parts = inner.as_sequence().expect("!If [condition, yes, no]");
    let condition = parts[0].as_str().expect("a condition name");
    assert!(template["Conditions"].get(condition).is_some(), "condition {condition} is not in template.yaml");
    if conditions.contains(condition) {
        &parts[1]
    } else {
        &parts[2]
    }
}

/// Statements of one entry of a function's `Policies`.
fn collect(template: &Value, conditions: &BTreeSet<String>, policy: &Value, out: &mut Vec<Statement>) {
    if let Some((name, inner)) = intrinsic(policy) {
        match name.as_str() {
            "If" => collect(template, conditions, branch(template, conditions, inner), out),
            "Ref" => {
                let target = inner.as_str().expect("a Ref name");
                if target == "AWS::NoValue" {
                    return;
                }
                let document = &template["Resources"][target]["Properties"]["PolicyDocument"];
                assert!(document.is_mapping(), "{target} is not a managed policy");
                collect(template, conditions, document, out);
            }
            other => panic!("policy intrinsic {other} is not evaluated here; add it to iam.rs"),
        }
        return;
    }
    let Some(statements) = policy.get("Statement").and_then(Value::as_sequence) else {
        panic!("a policy iam.rs cannot read (a SAM policy template?): {policy:?}")
    };
    for statement in statements {
        // A statement under `!If [condition, statement, !Ref AWS::NoValue]`.
        let statement = match intrinsic(statement) {
            Some((name, inner)) if name == "If" => {
                let branch = branch(template, conditions, inner);
                if matches!(intrinsic(branch), Some((name, target)) if name == "Ref" && target.as_str() == Some("AWS::NoValue"))
                {
                    continue;
                }
                branch
            }
            Some((name, _)) => panic!("statement intrinsic {name} is not evaluated here; add it to iam.rs"),
            None => statement,
        };
        let list = |field: &str| -> Vec<String> {
            match statement.get(field) {
                Some(Value::Sequence(items)) => items.iter().map(|v| resolve_string(template, v)).collect(),
                Some(value) => vec![resolve_string(template, value)],
                None => Vec::new(),
            }
        };
        assert!(
            statement.get("NotAction").is_none() && statement.get("NotResource").is_none(),
            "NotAction/NotResource"
        );
        let mut conditions_of = Vec::new();
        if let Some(Value::Mapping(ops)) = statement.get("Condition") {
            for (op, keys) in ops {
                for (key, patterns) in keys.as_mapping().expect("condition keys") {
                    let patterns = match patterns {
                        Value::Sequence(items) => items.iter().map(|v| resolve_string(template, v)).collect(),
                        value => vec![resolve_string(template, value)],
                    };
                    conditions_of.push((
                        op.as_str().expect("an operator").to_owned(),
                        key.as_str().expect("a key").to_owned(),
                        patterns,
                    ));
                }
            }
        }
        out.push(Statement {
            sid: statement.get("Sid").and_then(Value::as_str).unwrap_or_default().to_owned(),
            allow: statement.get("Effect").and_then(Value::as_str) == Some("Allow"),
            actions: list("Action"),
            resources: list("Resource"),
            conditions: conditions_of,
        });
    }
}

/// A template value as the string CloudFormation would make of it.
fn resolve_string(template: &Value, value: &Value) -> String {
    // Tags first: `as_str` reads through them.
    let Some((name, inner)) = intrinsic(value) else {
        return value.as_str().unwrap_or_else(|| panic!("not a string: {value:?}")).to_owned();
    };
    match name.as_str() {
        "Ref" => reference(template, inner.as_str().expect("a Ref name"), None),
        "GetAtt" => {
            let (resource, attribute) = match inner {
                Value::String(s) => s.split_once('.').map(|(r, a)| (r.to_owned(), a.to_owned())).expect("X.Attr"),
                Value::Sequence(parts) => (
                    parts[0].as_str().expect("a resource").to_owned(),
                    parts[1].as_str().expect("an attribute").to_owned(),
                ),
                other => panic!("GetAtt {other:?}"),
            };
            reference(template, &resource, Some(&attribute))
        }
        "Sub" => {
            let text = inner.as_str().expect("!Sub with a string");
            let mut out = String::new();
            let mut rest = text;
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let end = rest[start..].find('}').expect("closing }") + start;
                let var = &rest[start + 2..end];
                out.push_str(&match var.split_once('.') {
                    Some((resource, attribute)) if !var.starts_with("AWS::") => {
                        reference(template, resource, Some(attribute))
                    }
                    _ => reference(template, var, None),
                });
                rest = &rest[end + 1..];
            }
            out.push_str(rest);
            out
        }
        other => panic!("intrinsic {other} is not evaluated here; add it to iam.rs"),
    }
}

/// What `!Ref name` (or `!GetAtt name.attribute`) stands for, in this test account.
fn reference(template: &Value, name: &str, attribute: Option<&str>) -> String {
    match name {
        "AWS::Partition" => return "aws".to_owned(),
        "AWS::AccountId" => return ACCOUNT.to_owned(),
        "AWS::Region" => return REGION.to_owned(),
        "AWS::URLSuffix" => return "amazonaws.com".to_owned(),
        "Stage" => return STAGE.to_owned(),
        _ => {}
    }
    if let Some(parameter) = template["Parameters"].get(name) {
        return parameter.get("Default").map(|d| resolve_string(template, d)).unwrap_or_default();
    }
    let resource = &template["Resources"][name];
    let kind = resource["Type"].as_str().unwrap_or_else(|| panic!("no resource {name} in template.yaml"));
    match (kind, attribute) {
        ("AWS::DynamoDB::Table", None) => name.to_owned(),
        ("AWS::DynamoDB::Table", Some("Arn")) => format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"),
        ("AWS::SecretsManager::Secret", None) => secret_arn(name),
        ("AWS::SQS::Queue", Some("Arn")) => {
            let queue = resolve_string(template, &resource["Properties"]["QueueName"]);
            format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{queue}")
        }
        ("AWS::SQS::Queue", None) => {
            let queue = resolve_string(template, &resource["Properties"]["QueueName"]);
            format!("https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{queue}")
        }
        ("AWS::S3::Bucket", None) => resolve_string(template, &resource["Properties"]["BucketName"]),
        ("AWS::S3::Bucket", Some("Arn")) => {
            format!("arn:aws:s3:::{}", resolve_string(template, &resource["Properties"]["BucketName"]))
        }
        _ => format!("{name}.{}", attribute.unwrap_or("Ref")),
    }
}

/// IAM's wildcards: `*` any run of characters, `?` one.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

/// The parts of an HTTP request the IAM view reads.
struct Request {
    path: String,
    query: BTreeMap<String, String>,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Request {
    /// Bucket and key of a path-style S3 request.
    fn s3_path(&self) -> (String, String) {
        let path = self.path.trim_start_matches('/');
        let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
        (percent_decode(bucket), percent_decode(key))
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).cloned()
    }
}

/// The SDK interceptor that enforces one function's policies.
#[derive(Clone)]
pub struct Enforce {
    iam: Arc<Iam>,
    function: String,
}

impl std::fmt::Debug for Enforce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Enforce({})", self.function)
    }
}

impl Intercept for Enforce {
    fn name(&self) -> &'static str {
        "CoachTestIamEnforce"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let metadata = cfg.load::<Metadata>().expect("the operation's metadata");
        let (service, operation) = (metadata.service().to_owned(), metadata.name().to_owned());
        let http = context.request();
        let uri: lambda_http::http::Uri = http.uri().parse().map_err(|e| format!("uri: {e}"))?;
        let query = uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        let headers =
            http.headers().iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned())).collect::<BTreeMap<_, _>>();
        let body = http.body().bytes().map(<[u8]>::to_vec).unwrap_or_default();
        let request = Request { path: uri.path().to_owned(), query, headers, body };
        let needs = self.iam.needs(&service, &operation, &request);
        let call = format!("{service}:{operation}");
        self.iam.check(&self.function, &call, needs).map_err(BoxError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("arn:aws:s3:::b/uploads/*", "arn:aws:s3:::b/uploads/t/d/f.md"));
        assert!(!glob("arn:aws:s3:::b/uploads/*", "arn:aws:s3:::b/index/x"));
        assert!(glob("s3:Get*", "s3:GetObject"));
        assert!(glob("a?c", "abc") && !glob("a?c", "ac"));
        assert!(glob("*", ""));
    }
}
