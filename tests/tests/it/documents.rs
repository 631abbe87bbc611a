//! Documents end to end: presigned upload, a real HTTP PUT to the emulator's S3, the ingest
//! event, and the status callers see; failures, idempotency, deletion, tenants and roles.

use coach_testkit::stack::{ingest_deadline, Deployment};
use coach_testkit::{events, stack::TestStack, tokens};
use lambda_http::{http::StatusCode, Request};
use serde_json::{json, Value};

fn editor() -> String {
    tokens::for_test("erin", "acme", &["editor"])
}

fn req(method: &str, path: &str, body: Option<Value>, token: &str) -> Request {
    events::with("uploads-create.json", method, path, body.as_ref(), Some(token))
}

async fn call(services: &Deployment, request: Request) -> (StatusCode, Value) {
    let response = upload_url::handle(&services.uploads, request).await;
    let status = response.status();
    let body = if response.body().is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(response.body().as_ref()).unwrap()
    };
    (status, body)
}

/// `POST /uploads`, then the PUT a browser would make with the returned URL and headers.
async fn upload(services: &Deployment, token: &str, filename: &str, content_type: &str, bytes: &[u8]) -> String {
    upload_declaring(services, token, (filename, content_type, bytes.len()), bytes).await
}

/// [`upload`] of `bytes` for an upload declared as `(filename, content type, size)`.
async fn upload_declaring(
    services: &Deployment,
    token: &str,
    (filename, content_type, size): (&str, &str, usize),
    bytes: &[u8],
) -> String {
    let body = json!({"filename": filename, "content_type": content_type, "size_bytes": size});
    let (status, upload) = call(services, req("POST", "/uploads", Some(body), token)).await;
    assert_eq!(status, StatusCode::CREATED, "{upload}");
    assert_eq!(upload["method"], "PUT");
    // Bound to the content type and exact size (signed headers), short-lived.
    let url = upload["upload_url"].as_str().unwrap();
    assert!(url.contains("X-Amz-SignedHeaders=content-length%3Bcontent-type%3Bhost"), "{url}");
    assert!(url.contains("X-Amz-Expires=300"), "{url}");
    assert_eq!(upload["headers"]["content-type"], content_type);
    let mut put = reqwest::Client::new().put(upload["upload_url"].as_str().unwrap()).body(bytes.to_vec());
    for (name, value) in upload["headers"].as_object().unwrap() {
        // The length is the body's own (S3 refuses one other than the signed length; the
        // emulator does not).
        if name != "content-length" {
            put = put.header(name, value.as_str().unwrap());
        }
    }
    let response = put.send().await.unwrap();
    assert!(response.status().is_success(), "PUT to the presigned URL: {}", response.status());
    upload["document_id"].as_str().unwrap().to_owned()
}

/// The S3 event S3 would send for `key` (from events/, key URL-encoded as S3 does).
fn s3_event(stack: &TestStack, name: &str, key: &str) -> Value {
    let mut event: Value = serde_json::from_str(&events::load(name)).unwrap();
    let encoded: String = key.split('/').map(percent_encode).collect::<Vec<_>>().join("/");
    event["Records"][0]["s3"]["object"]["key"] = encoded.into();
    event["Records"][0]["s3"]["bucket"]["name"] = stack.config.bucket.clone().into();
    event
}

fn percent_encode(part: &str) -> String {
    part.bytes()
        .map(|b| match b {
            b' ' => "+".to_owned(),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn document(services: &Deployment, token: &str, id: &str) -> (StatusCode, Value) {
    call(services, req("GET", &format!("/documents/{id}"), None, token)).await
}

/// The object key recorded for a document of tenant `acme`.
async fn key_of(services: &Deployment, id: &str) -> String {
    let who = coach::auth::Principal { user_id: "erin".into(), tenant: "acme".into(), roles: vec![], groups: vec![] };
    services.uploads.documents.get(&who, id).await.unwrap().key
}

/// The `expires_at` (DynamoDB TTL) stored on a document record of tenant `acme`, if any.
async fn stored_expiry(stack: &TestStack, id: &str) -> Option<u64> {
    use aws_sdk_dynamodb::types::AttributeValue;
    let output = stack
        .aws
        .dynamodb
        .get_item()
        .table_name(&stack.config.table)
        .key("pk", AttributeValue::S("TENANT#acme".into()))
        .key("sk", AttributeValue::S(format!("DOC#{id}")))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    let item = output.item.expect("the record");
    item.get("expires_at").map(|v| v.as_n().unwrap().parse().unwrap())
}

async fn object_exists(stack: &TestStack, key: &str) -> bool {
    stack.aws.s3.head_object().bucket(&stack.config.bucket).key(key).send().await.is_ok()
}

const GUIDE: &str =
    "# Weekly planning\n\nSpend twenty minutes on Monday.\n\n## One-on-ones\n\nTheir agenda comes first.\n";

#[tokio::test]
async fn upload_then_ingest_makes_the_document_ready() {
    let stack = TestStack::new().await;
    let services = stack.deploy();
    let id = upload(&services, &editor(), "Weekly planning (v2).md", "text/markdown", GUIDE.as_bytes()).await;

    let (_, pending) = document(&services, &editor(), &id).await;
    assert_eq!(pending["status"], "pending");
    assert_eq!(pending["filename"], "Weekly planning (v2).md");
    assert_eq!(pending["size_bytes"], GUIDE.len());
    // A pending record expires (DynamoDB TTL) a day after its 5-minute URL, unless its
    // upload is ingested.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let expiry = stored_expiry(&stack, &id).await.expect("a pending record expires");
    let due = now + 300 + coach::documents::PENDING_GRACE_SECS;
    assert!((due - 60..=due + 5).contains(&expiry), "expires at {expiry}, due about {due}");

    let key = key_of(&services, &id).await;
    assert_eq!(key, format!("uploads/acme/{id}/Weekly planning (v2).md"));
    let result = ingest::handle(&services.ingest, s3_event(&stack, "s3-put.json", &key), ingest_deadline()).await;
    assert!(result.is_ok(), "{result:?}");

    let (status, ready) = document(&services, &editor(), &id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(stored_expiry(&stack, &id).await, None, "an ingested document does not expire");
    assert_eq!(ready["chunks"], 2);
    assert!(ready.get("error").is_none());
    let shard = stack.indexed_doc("acme", &id).await.expect("indexed");
    assert_eq!(shard.title, "Weekly planning (v2).md");
    assert_eq!(shard.chunks[1].heading.as_deref(), Some("Weekly planning > One-on-ones"));
    assert_eq!(shard.chunks[1].text, "Their agenda comes first.");

    // Listed for the tenant, newest first.
    let second = upload(&services, &editor(), "notes.txt", "text/plain", b"plain notes").await;
    let (_, list) = call(&services, req("GET", "/documents", None, &tokens::for_test("uma", "acme", &["user"]))).await;
    let ids: Vec<&str> =
        list["documents"].as_array().unwrap().iter().map(|d| d["document_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![second.as_str(), id.as_str()]);
}

#[tokio::test]
async fn redelivery_is_idempotent_and_a_new_version_is_reindexed() {
    let stack = TestStack::new().await;
    let services = stack.deploy();
    let id = upload(&services, &editor(), "guide.md", "text/markdown", GUIDE.as_bytes()).await;
    let key = key_of(&services, &id).await;
    let event = s3_event(&stack, "s3-put.json", &key);
    ingest::handle(&services.ingest, event.clone(), ingest_deadline()).await.unwrap();
    let (_, first) = document(&services, &editor(), &id).await;

    let outcome = services
        .ingest
        .ingestor
        .handle(&coach::ingest::ObjectEvent { created: true, key: key.clone() }, ingest_deadline())
        .await;
    assert_eq!(outcome, Ok(coach::ingest::Outcome::Skipped("this version is already indexed")));
    let (_, again) = document(&services, &editor(), &id).await;
    assert_eq!(again, first, "nothing changed on re-delivery");

    // The same key with new content (of the declared size, as its upload URL allows) is
    // indexed again.
    let body = format!("# Weekly planning\n\nA new version.{}\n", " ".repeat(GUIDE.len() - 34)).into_bytes();
    assert_eq!(body.len(), GUIDE.len());
    stack.aws.s3.put_object().bucket(&stack.config.bucket).key(&key).body(body.into()).send().await.unwrap();
    ingest::handle(&services.ingest, event, ingest_deadline()).await.unwrap();
    let (_, updated) = document(&services, &editor(), &id).await;
    assert_eq!(updated["status"], "ready");
    assert_eq!(updated["chunks"], 1);
}

#[tokio::test]
async fn unreadable_documents_fail_with_a_reason() {
    let stack = TestStack::with_env(&[("COACH_MAX_UPLOAD_BYTES", "1000"), ("COACH_MAX_CHUNKS", "2")]).await;
    let services = stack.deploy();
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        (
            "sections.md",
            "text/markdown",
            b"# A\none\n# B\ntwo\n# C\nthree\n".to_vec(),
            "the document makes 3 chunks; the limit is 2 (split it into smaller files)",
        ),
        ("empty.txt", "text/plain", b"   \n\n ".to_vec(), "no text found in the document: it is empty"),
        ("latin1.txt", "text/plain", b"caf\xe9 cr\xe8me".to_vec(), "the file is not UTF-8 or UTF-16 text"),
        ("fake.pdf", "application/pdf", b"this is not a pdf".to_vec(), "the PDF is damaged or not a PDF file"),
        (
            "broken.pdf",
            "application/pdf",
            b"%PDF-1.7\n1 0 obj << /Type /Catalog".to_vec(),
            "the PDF is damaged or not a PDF file",
        ),
    ];
    for (name, content_type, bytes, reason) in cases {
        let id = upload(&services, &editor(), name, content_type, &bytes).await;
        let key = key_of(&services, &id).await;
        ingest::handle(&services.ingest, s3_event(&stack, "s3-put.json", &key), ingest_deadline()).await.unwrap();
        let (_, doc) = document(&services, &editor(), &id).await;
        assert_eq!(doc["status"], "failed", "{name}: {doc}");
        assert!(doc["error"].as_str().unwrap().starts_with(reason), "{name}: {doc}");
        assert!(doc.get("chunks").is_none());
        assert!(stack.indexed_doc("acme", &id).await.is_none(), "{name}: nothing half-indexed");
    }

    // An object larger than the limit (written past the presigned URL) is refused too.
    let id = upload(&services, &editor(), "big.txt", "text/plain", b"small").await;
    let key = key_of(&services, &id).await;
    stack
        .aws
        .s3
        .put_object()
        .bucket(&stack.config.bucket)
        .key(&key)
        .body(vec![b'a'; 2000].into())
        .send()
        .await
        .unwrap();
    ingest::handle(&services.ingest, s3_event(&stack, "s3-put.json", &key), ingest_deadline()).await.unwrap();
    let (_, doc) = document(&services, &editor(), &id).await;
    assert_eq!(doc["error"], "the file is 2000 bytes; the limit is 1000");
}

#[tokio::test]
async fn an_upload_of_another_size_than_declared_is_failed() {
    // S3 refuses a PUT whose length differs from the one signed into the URL; the emulator
    // does not, so ingest checks it too.
    let stack = TestStack::new().await;
    let services = stack.deploy();
    let bytes = GUIDE.as_bytes();
    let id = upload_declaring(&services, &editor(), ("guide.md", "text/markdown", bytes.len() - 10), bytes).await;
    let key = key_of(&services, &id).await;
    ingest::handle(&services.ingest, s3_event(&stack, "s3-put.json", &key), ingest_deadline()).await.unwrap();
    let (_, doc) = document(&services, &editor(), &id).await;
    assert_eq!(doc["status"], "failed", "{doc}");
    let expected = format!(
        "the uploaded file is {} bytes, not the {} bytes declared for its upload",
        bytes.len(),
        bytes.len() - 10
    );
    assert_eq!(doc["error"], expected.as_str());
    assert!(stack.indexed_doc("acme", &id).await.is_none());
}

#[tokio::test]
async fn a_real_pdf_is_read() {
    let stack = TestStack::new().await;
    let services = stack.deploy();
    let pdf = minimal_pdf("Delegate outcomes, not tasks.");
    let id = upload(&services, &editor(), "delegation.pdf", "application/pdf", &pdf).await;
    let key = key_of(&services, &id).await;
    ingest::handle(&services.ingest, s3_event(&stack, "s3-put.json", &key), ingest_deadline()).await.unwrap();
    let (_, doc) = document(&services, &editor(), &id).await;
    assert_eq!(doc["status"], "ready", "{doc}");
    let shard = stack.indexed_doc("acme", &id).await.expect("indexed");
    assert!(shard.chunks[0].text.contains("Delegate outcomes, not tasks."), "{:?}", shard.chunks);
}

/// A one-page PDF with `text` in Helvetica, with a correct cross-reference table.
fn minimal_pdf(text: &str) -> Vec<u8> {
    pdf_with_contents("", format!("BT /F1 12 Tf 72 720 Td ({text}) Tj ET").as_bytes())
}

/// A one-page PDF whose page contents are `stream` (its dictionary with `filter` added).
fn pdf_with_contents(filter: &str, stream: &[u8]) -> Vec<u8> {
    pdf_of_pages(&[(filter, stream)])
}

/// A PDF of one page per text (Helvetica).
fn paged_pdf(pages: &[&str]) -> Vec<u8> {
    let streams: Vec<Vec<u8>> =
        pages.iter().map(|t| format!("BT /F1 12 Tf 72 720 Td ({t}) Tj ET").into_bytes()).collect();
    let pages: Vec<(&str, &[u8])> = streams.iter().map(|s| ("", s.as_slice())).collect();
    pdf_of_pages(&pages)
}

/// A PDF of pages whose contents are the streams given (each dictionary with its filter
/// added), in Helvetica, with a correct cross-reference table.
fn pdf_of_pages(pages: &[(&str, &[u8])]) -> Vec<u8> {
    // 1 catalog, 2 page tree, 3 font, then a page and its contents per stream.
    let kids: Vec<String> = (0..pages.len()).map(|i| format!("{} 0 R", 4 + 2 * i)).collect();
    let mut objects = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        format!("<< /Type /Pages /Kids [{}] /Count {} >>", kids.join(" "), pages.len()).into_bytes(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_vec(),
    ];
    for (i, (filter, stream)) in pages.iter().enumerate() {
        let page = format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {} 0 R /Resources << /Font << /F1 3 0 R >> >> >>",
            5 + 2 * i
        );
        objects.push(page.into_bytes());
        let mut contents = format!("<< /Length {}{filter} >>\nstream\n", stream.len()).into_bytes();
        contents.extend(*stream);
        contents.extend(b"\nendstream");
        objects.push(contents);
    }
    let mut pdf = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend(format!("{} 0 obj\n", i + 1).as_bytes());
        pdf.extend(object);
        pdf.extend(b"\nendobj\n");
    }
    let xref = pdf.len();
    pdf.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for offset in offsets {
        pdf.extend(format!("{offset:010} 00000 n \n").as_bytes());
    }
    pdf.extend(
        format!("trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1).as_bytes(),
    );
    pdf
}

/// A zlib stream of `mib` MiB of zeros, about a thousandth of that in size: one MiB
/// compressed on its own (ending byte-aligned, referring to nothing before it) and repeated.
fn zlib_bomb(mib: usize) -> Vec<u8> {
    let mut block = Vec::with_capacity(4096);
    let mut deflate = flate2::Compress::new(flate2::Compression::best(), false);
    deflate.compress_vec(&vec![0; 1 << 20], &mut block, flate2::FlushCompress::Full).unwrap();
    let mut stream = vec![0x78, 0xDA];
    for _ in 0..mib {
        stream.extend(&block);
    }
    // An empty final stored block, then the Adler-32 of the zeros: a = 1, b = their count.
    stream.extend([0x01, 0x00, 0x00, 0xFF, 0xFF]);
    let adler = ((((mib as u64) << 20) % 65521) << 16) | 1;
    stream.extend((adler as u32).to_be_bytes());
    stream
}

#[test]
fn the_bomb_is_a_valid_zlib_stream() {
    use std::io::Read;
    let bomb = zlib_bomb(3);
    let mut inflated = Vec::new();
    flate2::read::ZlibDecoder::new(&bomb[..]).read_to_end(&mut inflated).unwrap();
    assert_eq!(inflated.len(), 3 << 20);
    assert!(inflated.iter().all(|&b| b == 0));
    assert!(bomb.len() < 10_000, "{}", bomb.len());
}

#[tokio::test]
async fn hostile_files_end_failed_within_the_limits() {
    let stack = TestStack::with_env(&[("COACH_EXTRACT_MEMORY_MB", "256"), ("COACH_EXTRACT_MAX_TEXT_MB", "1")]).await;
    let services = stack.deploy();
    let status = |id: String| {
        let services = &services;
        async move { document(services, &editor(), &id).await.1 }
    };

    // A 2 MB PDF whose page contents inflate to 2 GiB: the extraction child runs out of its
    // memory, not the function, and the document says why.
    let bomb = pdf_with_contents(" /Filter /FlateDecode", &zlib_bomb(2048));
    assert!(bomb.len() < 3 << 20, "{}", bomb.len());
    let id = upload(&services, &editor(), "bomb.pdf", "application/pdf", &bomb).await;
    let key = key_of(&services, &id).await;
    ingest::handle(&services.ingest, s3_event(&stack, "s3-put.json", &key), ingest_deadline()).await.unwrap();
    let doc = status(id.clone()).await;
    assert_eq!(doc["status"], "failed", "{doc}");
    assert!(
        doc["error"].as_str().unwrap().starts_with("reading the document needed more than 256 MiB of memory"),
        "{doc}"
    );
    assert!(stack.indexed_doc("acme", &id).await.is_none());

    // More text than the cap.
    let big = "All work and no play. ".repeat(60_000);
    let id = upload(&services, &editor(), "big.txt", "text/plain", big.as_bytes()).await;
    let key = key_of(&services, &id).await;
    ingest::handle(&services.ingest, s3_event(&stack, "s3-put.json", &key), ingest_deadline()).await.unwrap();
    let doc = status(id).await;
    assert_eq!(doc["error"], "the document holds more than 1 MiB of text; split it into smaller files", "{doc}");

    // With too little of the invocation left to read it, the event is retried and the
    // document stays as it was.
    let id = upload(&services, &editor(), "late.md", "text/markdown", GUIDE.as_bytes()).await;
    let key = key_of(&services, &id).await;
    let late = coach::deadline::Deadline::after(std::time::Duration::from_secs(20));
    assert!(ingest::handle(&services.ingest, s3_event(&stack, "s3-put.json", &key), late).await.is_err());
    assert_eq!(status(id.clone()).await["status"], "pending");
    // The same file with time enough is read as any other.
    ingest::handle(&services.ingest, s3_event(&stack, "s3-put.json", &key), ingest_deadline()).await.unwrap();
    assert_eq!(status(id).await["status"], "ready");
}

#[tokio::test]
async fn a_document_whose_reading_outlasts_its_budget_is_failed() {
    // A parser that never finishes, stood in for by a program that sleeps: the budget ends
    // it and the document is `failed`, not left `processing`.
    let dir = tempfile::tempdir().unwrap();
    let hang = dir.path().join("hang.sh");
    std::fs::write(&hang, "#!/bin/sh\nexec sleep 600\n").unwrap();
    std::fs::set_permissions(&hang, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let program = hang.display().to_string();
    let stack = TestStack::with_env(&[("COACH_EXTRACT_SECS", "2"), ("COACH_EXTRACT_PROGRAM", &program)]).await;
    let services = stack.deploy();
    let id = upload(&services, &editor(), "slow.md", "text/markdown", GUIDE.as_bytes()).await;
    let key = key_of(&services, &id).await;
    ingest::handle(&services.ingest, s3_event(&stack, "s3-put.json", &key), ingest_deadline()).await.unwrap();
    let (_, doc) = document(&services, &editor(), &id).await;
    assert_eq!(doc["status"], "failed", "{doc}");
    assert_eq!(doc["error"], "reading the document took too long (over 2 s); split it into smaller files");

    // Two documents of one SQS batch take turns: the first is stopped at its budget; the
    // second, having waited its own away, is handed back for a retry rather than failed.
    let mut event: Value = serde_json::from_str(&events::load("sqs-s3-put.json")).unwrap();
    let template = event["Records"][1].clone();
    let mut ids = Vec::new();
    let mut records = Vec::new();
    for name in ["first.md", "second.md"] {
        let id = upload(&services, &editor(), name, "text/markdown", GUIDE.as_bytes()).await;
        let mut record = template.clone();
        record["messageId"] = id.clone().into();
        record["body"] = s3_event(&stack, "s3-put.json", &key_of(&services, &id).await).to_string().into();
        records.push(record);
        ids.push(id);
    }
    event["Records"] = records.into();
    let response = ingest::handle(&services.ingest, event, ingest_deadline()).await.unwrap();
    let failures = response["batchItemFailures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{response}");
    let retried = failures[0]["itemIdentifier"].as_str().unwrap();
    for id in &ids {
        let (_, doc) = document(&services, &editor(), id).await;
        if id == retried {
            assert_eq!(doc["status"], "processing", "{doc}");
        } else {
            assert_eq!(doc["error"], "reading the document took too long (over 2 s); split it into smaller files");
        }
    }

    // A program that cannot be started is Coach's fault, not the document's: retried.
    let broken = stack.with_more_env(&[("COACH_EXTRACT_PROGRAM", "/nonexistent/coach-extract")]).deploy();
    let id = upload(&broken, &editor(), "guide.md", "text/markdown", GUIDE.as_bytes()).await;
    let key = key_of(&broken, &id).await;
    assert!(ingest::handle(&broken.ingest, s3_event(&stack, "s3-put.json", &key), ingest_deadline()).await.is_err());
    assert_eq!(document(&broken, &editor(), &id).await.1["status"], "processing");
}

#[tokio::test]
async fn delete_removes_object_index_entry_and_record() {
    let stack = TestStack::new().await;
    let services = stack.deploy();
    let id = upload(&services, &editor(), "guide.md", "text/markdown", GUIDE.as_bytes()).await;
    let key = key_of(&services, &id).await;
    ingest::handle(&services.ingest, s3_event(&stack, "s3-put.json", &key), ingest_deadline()).await.unwrap();
    assert!(stack.indexed_doc("acme", &id).await.is_some());

    let (status, _) = call(&services, req("DELETE", &format!("/documents/{id}"), None, &editor())).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!object_exists(&stack, &key).await);
    assert!(stack.indexed_doc("acme", &id).await.is_none());
    assert_eq!(document(&services, &editor(), &id).await.0, StatusCode::NOT_FOUND);

    // The ObjectRemoved event S3 then sends finds nothing left to do.
    assert!(ingest::handle(&services.ingest, s3_event(&stack, "s3-remove.json", &key), ingest_deadline())
        .await
        .is_ok());
}

/// Every version and delete marker of `key` left in the bucket.
async fn versions_left(stack: &TestStack, key: &str) -> usize {
    let page = stack.aws.s3.list_object_versions().bucket(&stack.config.bucket).prefix(key).send().await.unwrap();
    page.versions().len() + page.delete_markers().len()
}

#[tokio::test]
async fn delete_removes_every_version_and_a_put_after_it_does_not_bring_the_upload_back() {
    use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
    let stack = TestStack::new().await;
    let services = stack.deploy();
    // Versioned, as template.yaml makes the bucket.
    let versioning = VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
    stack
        .aws
        .s3
        .put_bucket_versioning()
        .bucket(&stack.config.bucket)
        .versioning_configuration(versioning)
        .send()
        .await
        .unwrap();
    let body = json!({"filename": "guide.md", "content_type": "text/markdown", "size_bytes": GUIDE.len()});
    let (_, created) = call(&services, req("POST", "/uploads", Some(body), &editor())).await;
    let id = created["document_id"].as_str().unwrap().to_owned();
    let put = || {
        let mut put =
            reqwest::Client::new().put(created["upload_url"].as_str().unwrap()).body(GUIDE.as_bytes().to_vec());
        for (name, value) in created["headers"].as_object().unwrap() {
            put = put.header(name, value.as_str().unwrap());
        }
        put.send()
    };
    // Two versions: the upload, and the same URL used again.
    assert!(put().await.unwrap().status().is_success());
    assert!(put().await.unwrap().status().is_success());
    let key = key_of(&services, &id).await;
    assert_eq!(versions_left(&stack, &key).await, 2);
    ingest::handle(&services.ingest, s3_event(&stack, "s3-put.json", &key), ingest_deadline()).await.unwrap();

    let (status, _) = call(&services, req("DELETE", &format!("/documents/{id}"), None, &editor())).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(versions_left(&stack, &key).await, 0, "no version and no delete marker is left");

    // The URL is still valid: a PUT now stores the object again, and its event removes it.
    assert!(put().await.unwrap().status().is_success());
    assert_eq!(versions_left(&stack, &key).await, 1);
    ingest::handle(&services.ingest, s3_event(&stack, "s3-put.json", &key), ingest_deadline()).await.unwrap();
    assert_eq!(versions_left(&stack, &key).await, 0, "an upload without its record is removed");
    assert_eq!(document(&services, &editor(), &id).await.0, StatusCode::NOT_FOUND);
    assert!(stack.indexed_doc("acme", &id).await.is_none());
}

/// One upload URL, one document: the presigned URL used twenty times (twenty versions of
/// the key in the versioned bucket) gives one ingest, of the first body, whichever event is
/// handled first; the later versions are removed.
#[tokio::test]
async fn an_upload_url_used_twenty_times_is_one_document_of_the_first_upload() {
    use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
    use coach::ingest::{ObjectEvent, Outcome};
    let stack = TestStack::new().await;
    let services = stack.deploy();
    let versioning = VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
    let bucket = &stack.config.bucket;
    stack.aws.s3.put_bucket_versioning().bucket(bucket).versioning_configuration(versioning).send().await.unwrap();
    // Twenty bodies of the declared size, each with its own word.
    let bodies: Vec<String> = (0..20).map(|i| format!("# Guide\n\nUpload {i:02} says zebra{i:02}.\n")).collect();
    let body = json!({"filename": "guide.md", "content_type": "text/markdown", "size_bytes": bodies[0].len()});
    let (status, created) = call(&services, req("POST", "/uploads", Some(body), &editor())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["document_id"].as_str().unwrap().to_owned();
    for text in &bodies {
        let mut put = reqwest::Client::new().put(created["upload_url"].as_str().unwrap()).body(text.clone());
        for (name, value) in created["headers"].as_object().unwrap() {
            put = put.header(name, value.as_str().unwrap());
        }
        assert!(put.send().await.unwrap().status().is_success());
    }
    let key = key_of(&services, &id).await;
    assert_eq!(versions_left(&stack, &key).await, 20);

    // Twenty events (the last upload's handled first, as S3 may deliver them): one ingest.
    let mut outcomes = Vec::new();
    for _ in 0..20 {
        let event = ObjectEvent { created: true, key: key.clone() };
        outcomes.push(services.ingest.ingestor.handle(&event, ingest_deadline()).await.unwrap());
    }
    let indexed = outcomes.iter().filter(|o| matches!(o, Outcome::Indexed { .. })).count();
    assert_eq!(indexed, 1, "{outcomes:?}");
    assert_eq!(versions_left(&stack, &key).await, 1, "the later uploads are removed");
    assert_eq!(stack.get_text(&key).await, bodies[0], "the first upload stays");
    let text: String = stack.indexed_doc("acme", &id).await.unwrap().chunks.iter().map(|c| c.text.clone()).collect();
    assert!(text.contains("zebra00") && !text.contains("zebra19"), "{text}");
    assert_eq!(document(&services, &editor(), &id).await.1["status"], "ready");
}

#[tokio::test]
async fn object_removed_event_removes_index_entry_and_record() {
    let stack = TestStack::new().await;
    let services = stack.deploy();
    let id = upload(&services, &editor(), "guide.md", "text/markdown", GUIDE.as_bytes()).await;
    let key = key_of(&services, &id).await;
    ingest::handle(&services.ingest, s3_event(&stack, "s3-put.json", &key), ingest_deadline()).await.unwrap();
    stack.aws.s3.delete_object().bucket(&stack.config.bucket).key(&key).send().await.unwrap();
    ingest::handle(&services.ingest, s3_event(&stack, "s3-remove.json", &key), ingest_deadline()).await.unwrap();
    assert!(stack.indexed_doc("acme", &id).await.is_none());
    assert_eq!(document(&services, &editor(), &id).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn other_tenants_see_404_and_roles_are_enforced() {
    let stack = TestStack::new().await;
    let services = stack.deploy();
    let id = upload(&services, &editor(), "guide.md", "text/markdown", GUIDE.as_bytes()).await;
    let outsider = tokens::for_test("erin", "globex", &["editor"]);
    assert_eq!(document(&services, &outsider, &id).await.0, StatusCode::NOT_FOUND);
    let (status, _) = call(&services, req("DELETE", &format!("/documents/{id}"), None, &outsider)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = call(&services, req("GET", "/documents", None, &outsider)).await;
    assert_eq!(list["documents"], json!([]));
    assert_eq!(document(&services, &editor(), &id).await.1["status"], "pending", "untouched");

    let user = tokens::for_test("uma", "acme", &["user"]);
    let body = json!({"filename": "a.md", "content_type": "text/markdown", "size_bytes": 10});
    let (status, err) = call(&services, req("POST", "/uploads", Some(body), &user)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(err["error"]["message"], "this action needs the editor role");
    let (status, _) = call(&services, req("DELETE", &format!("/documents/{id}"), None, &user)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(document(&services, &user, &id).await.0, StatusCode::OK, "users may read");
    let (status, _) = call(&services, req("GET", "/documents", None, "not-a-token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn upload_requests_are_validated() {
    let stack = TestStack::with_env(&[("COACH_MAX_UPLOAD_BYTES", "1000")]).await;
    let services = stack.deploy();
    let cases = [
        (json!({"filename": "a.exe", "content_type": "application/octet-stream", "size_bytes": 10}), 415),
        (json!({"filename": "a.md", "content_type": "text/markdown", "size_bytes": 1001}), 413),
        (json!({"filename": "a.pdf", "content_type": "text/markdown", "size_bytes": 10}), 400),
        (json!({"filename": "a.md", "content_type": "text/markdown", "size_bytes": 0}), 400),
        (json!({"filename": "a.md", "content_type": "text/markdown", "size_bytes": -5}), 400),
        (json!({"filename": "a.md", "content_type": "text/markdown"}), 400),
        (json!({"filename": "a.md", "content_type": "text/markdown", "size_bytes": 5, "acl": "public"}), 400),
    ];
    for (i, (body, expected)) in cases.into_iter().enumerate() {
        let (status, err) = call(&services, req("POST", "/uploads", Some(body), &editor())).await;
        assert_eq!(status.as_u16(), expected, "case {i}: {err}");
        assert!(err["error"]["code"].is_string());
    }
    let (status, _) = call(&services, req("GET", "/documents/../../etc", None, &editor())).await;
    assert!(status.is_client_error());
    let (status, _) = call(&services, req("GET", "/documents/not-an-id", None, &editor())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A traversal attempt in the file name stays inside the document's own folder.
    let body = json!({"filename": "../../other-tenant/x.md", "content_type": "text/markdown", "size_bytes": 5});
    let (status, upload) = call(&services, req("POST", "/uploads", Some(body), &editor())).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = upload["document_id"].as_str().unwrap();
    assert_eq!(key_of(&services, id).await, format!("uploads/acme/{id}/x.md"));
    assert!(upload["upload_url"].as_str().unwrap().contains(&format!("uploads/acme/{id}/x.md")));
}

#[tokio::test]
async fn sqs_wrapped_events_report_only_failed_messages() {
    let stack = TestStack::new().await;
    let services = stack.deploy();
    let id = upload(&services, &editor(), "guide.md", "text/markdown", GUIDE.as_bytes()).await;
    let key = key_of(&services, &id).await;
    let mut event: Value = serde_json::from_str(&events::load("sqs-s3-put.json")).unwrap();
    event["Records"][1]["body"] = s3_event(&stack, "s3-put.json", &key).to_string().into();
    let mut broken = event["Records"][1].clone();
    broken["messageId"] = "broken-1".into();
    broken["body"] = "{not json".into();
    event["Records"].as_array_mut().unwrap().push(broken);

    let response = ingest::handle(&services.ingest, event, ingest_deadline()).await.unwrap();
    assert_eq!(response, json!({"batchItemFailures": [{"itemIdentifier": "broken-1"}]}));
    assert_eq!(document(&services, &editor(), &id).await.1["status"], "ready");
}

#[tokio::test]
async fn malformed_events_are_errors_not_crashes() {
    let stack = TestStack::new().await;
    let services = stack.deploy();
    let unknown = ingest::handle(&services.ingest, json!({"hello": "world"}), ingest_deadline()).await.unwrap_err();
    assert!(matches!(unknown, ingest::EventError::Malformed { cause: None, .. }), "{unknown:?}");
    let broken = json!({"Records": [{"eventSource": "aws:s3", "s3": 5}]});
    let broken = ingest::handle(&services.ingest, broken, ingest_deadline()).await.unwrap_err();
    assert!(matches!(broken, ingest::EventError::Malformed { cause: Some(_), .. }), "{broken:?}");
    assert_eq!(broken.to_string(), "malformed S3 event");
    let ignored = s3_event(&stack, "s3-put.json", "prompt/system_prompt.md");
    assert!(
        ingest::handle(&services.ingest, ignored, ingest_deadline()).await.is_ok(),
        "keys ingest does not own are skipped"
    );
}

#[tokio::test]
async fn shared_docs_are_indexed_in_the_global_scope() {
    let stack = TestStack::new().await;
    let services = stack.deploy();
    let key = "docs/giving feedback.md";
    stack
        .aws
        .s3
        .put_object()
        .bucket(&stack.config.bucket)
        .key(key)
        .body(GUIDE.as_bytes().to_vec().into())
        .send()
        .await
        .unwrap();
    ingest::handle(&services.ingest, s3_event(&stack, "s3-put-doc.json", key), ingest_deadline()).await.unwrap();

    let record = stack.items("GLOBAL").await;
    let item = &record[0];
    assert_eq!(item["status"].as_s().unwrap(), "ready");
    assert_eq!(item["filename"].as_s().unwrap(), "giving feedback.md");
    let id = item["document_id"].as_s().unwrap();
    assert_eq!(stack.indexed(&coach::model::Scope::Global).await.remove(id).expect("indexed").chunks.len(), 2);

    // Tenants do not see shared docs in their document list.
    let (_, list) = call(&services, req("GET", "/documents", None, &editor())).await;
    assert_eq!(list["documents"], json!([]));
}

#[tokio::test]
async fn emulator_notifications_through_sqs_reach_ingest_as_on_aws() {
    let stack = TestStack::new().await;
    let services = stack.deploy();
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let queue_url = coach_testkit::stack::notify_queue(&stack.aws.s3, &sqs, &stack.config.bucket).await.unwrap();

    let id = upload(&services, &editor(), "Team notes.md", "text/markdown", GUIDE.as_bytes()).await;
    // Collect what the emulator sent: its s3:TestEvent first, then the upload's event.
    let mut records = Vec::new();
    for _ in 0..10 {
        let received = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for m in received.messages.unwrap_or_default() {
            records.push(json!({"messageId": m.message_id, "receiptHandle": m.receipt_handle, "body": m.body,
                "eventSource": "aws:sqs", "awsRegion": "us-east-1"}));
        }
        if records.iter().any(|r| r["body"].as_str().unwrap_or_default().contains("ObjectCreated")) {
            break;
        }
    }
    assert!(!records.is_empty(), "the emulator sent notifications");
    let response = ingest::handle(&services.ingest, json!({ "Records": records }), ingest_deadline()).await.unwrap();
    assert_eq!(response, json!({"batchItemFailures": []}));
    let (_, doc) = document(&services, &editor(), &id).await;
    assert_eq!(doc["status"], "ready", "{doc}");
}

// ------------------------------------------------------------------ embeddings

/// A fake embedding service: vector `[i, len(text), 1, 0]` per input, in either wire format.
fn embeddings_responder(gemini: bool) -> impl wiremock::Respond {
    move |request: &wiremock::Request| {
        let body: Value = request.body_json().unwrap();
        let texts: Vec<String> = if gemini {
            body["requests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["content"]["parts"][0]["text"].as_str().unwrap().to_owned())
                .collect()
        } else {
            body["input"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect()
        };
        let vectors: Vec<Value> =
            texts.iter().enumerate().map(|(i, t)| json!([i as f32, t.len() as f32, 1.0, 0.0])).collect();
        let body = if gemini {
            json!({"embeddings": vectors.iter().map(|v| json!({"values": v})).collect::<Vec<_>>()})
        } else {
            json!({"object": "list", "model": "embed-test", "data": vectors.iter().enumerate()
                .map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": v})).collect::<Vec<_>>()})
        };
        wiremock::ResponseTemplate::new(200).set_body_json(body)
    }
}

async fn ingest_with(vars: &[(&str, &str)]) -> (TestStack, Deployment, String) {
    let stack = TestStack::with_env(vars).await;
    let services = stack.deploy();
    let id = upload(&services, &editor(), "guide.md", "text/markdown", GUIDE.as_bytes()).await;
    let key = key_of(&services, &id).await;
    let _ = ingest::handle(&services.ingest, s3_event(&stack, "s3-put.json", &key), ingest_deadline()).await;
    (stack, services, id)
}

/// Titan Text Embeddings on Bedrock (`COACH_EMBEDDING_PROVIDER=bedrock`): one `InvokeModel`
/// a text with the configured length and `normalize`, through the IAM role (the policy
/// names the model), the vectors stored under the model's id, the calls metered at its price.
#[tokio::test]
async fn chunks_are_embedded_on_bedrock_and_the_calls_metered() {
    use wiremock::{matchers, Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .and(matchers::path_regex(r"^/model/[^/]+/invoke$"))
        .respond_with(|request: &wiremock::Request| {
            let body: Value = request.body_json().unwrap();
            let (text, dims) = (body["inputText"].as_str().unwrap(), body["dimensions"].as_u64().unwrap() as usize);
            assert_eq!(body["normalize"], true);
            // As Titan answers: a unit vector, and the tokens it counted (a thousand a word
            // here, so that the cost shows in dollars).
            let mut vector = vec![0.0f32; dims];
            vector[text.len() % dims] = 1.0;
            let tokens = 1000 * text.split_whitespace().count();
            ResponseTemplate::new(200).set_body_json(json!({"embedding": vector, "inputTextTokenCount": tokens}))
        })
        .mount(&server)
        .await;
    let endpoint = server.uri();
    let model = "amazon.titan-embed-text-v2:0";
    let (stack, services, id) = ingest_with(&[
        ("COACH_EMBEDDING_PROVIDER", "bedrock"),
        ("COACH_EMBEDDING_MODEL", model),
        ("COACH_BEDROCK_EMBEDDING_DIMENSIONS", "256"),
        ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", endpoint.as_str()),
    ])
    .await;
    let indexed = stack.indexed_doc("acme", &id).await.expect("indexed");
    assert_eq!((indexed.embedding_model.as_deref(), indexed.dims), (Some(model), 256));
    assert_eq!(indexed.vectors.len(), indexed.chunks.len() * 256);
    let calls = server.received_requests().await.unwrap();
    assert_eq!(calls.len(), indexed.chunks.len(), "one request a chunk");
    assert!(calls[0].url.path().ends_with("/invoke") && calls[0].headers.contains_key("authorization"));

    let user = tokens::for_test("alice", "acme", &["user"]);
    let request =
        events::with("chat-post.json", "POST", "/chat", Some(&json!({"message": "How do I plan?"})), Some(&user));
    assert_eq!(chat::handle(&services.chat, request).await.status(), StatusCode::OK);
    let admin = tokens::for_test("carol", "acme", &["admin"]);
    let request = events::with("chat-post.json", "GET", "/usage?scope=tenant", None, Some(&admin));
    let usage: Value = serde_json::from_slice(chat::handle(&services.chat, request).await.body().as_ref()).unwrap();
    let titan = usage["models"].as_array().unwrap().iter().find(|m| m["model"] == model).cloned();
    let titan = titan.unwrap_or_else(|| panic!("{usage}"));
    assert_eq!(titan["requests"].as_u64(), Some(indexed.chunks.len() as u64 + 1), "{usage}");
    // At the default price of the model: $0.02 a million tokens.
    let tokens = titan["input_tokens"].as_f64().unwrap();
    assert!((titan["cost_usd"].as_f64().unwrap() - tokens * 0.02 / 1e6).abs() < 1e-6, "{usage}");
}

/// Cohere Embed on Bedrock: the chunks in one `InvokeModel` (up to 96 texts) as
/// `search_document`, a question as `search_query`; v3's list of vectors, v4's vectors by
/// type at the configured length; stored at unit length under the model's id; metered.
#[tokio::test]
async fn chunks_are_embedded_by_cohere_on_bedrock_as_documents_and_questions_as_queries() {
    use wiremock::{matchers, Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .and(matchers::path_regex(r"^/model/[^/]+/invoke$"))
        .respond_with(|request: &wiremock::Request| {
            let body: Value = request.body_json().unwrap();
            let texts = body["texts"].as_array().unwrap();
            assert!(!texts.is_empty() && texts.len() <= 96, "{body}");
            assert_eq!(body["truncate"], "END");
            // Not unit length, as a model may answer: Coach scales them.
            let vector = |t: &Value, dims: usize| {
                let mut v = vec![1.0f32; dims];
                v[t.as_str().unwrap().len() % dims] = 3.0;
                v
            };
            match body["output_dimension"].as_u64() {
                None => {
                    let vectors: Vec<Vec<f32>> = texts.iter().map(|t| vector(t, 1024)).collect();
                    ResponseTemplate::new(200).set_body_json(
                        json!({"id": "e1", "texts": texts, "response_type": "embeddings_floats", "embeddings": vectors}),
                    )
                }
                Some(dims) => {
                    assert_eq!(body["embedding_types"], json!(["float"]));
                    let vectors: Vec<Vec<f32>> = texts.iter().map(|t| vector(t, dims as usize)).collect();
                    ResponseTemplate::new(200).set_body_json(
                        json!({"id": "e2", "texts": texts, "response_type": "embeddings_by_type", "embeddings": {"float": vectors}}),
                    )
                }
            }
        })
        .mount(&server)
        .await;
    let endpoint = server.uri();
    let model = "cohere.embed-multilingual-v3";
    let (stack, services, id) = ingest_with(&[
        ("COACH_EMBEDDING_PROVIDER", "bedrock"),
        ("COACH_EMBEDDING_MODEL", model),
        ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", endpoint.as_str()),
    ])
    .await;
    let indexed = stack.indexed_doc("acme", &id).await.expect("indexed");
    assert_eq!((indexed.embedding_model.as_deref(), indexed.dims), (Some(model), 1024));
    let norm = indexed.vectors[..1024].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "stored at unit length: {norm}");
    let calls = server.received_requests().await.unwrap();
    assert_eq!(calls.len(), 1, "the chunks in one request");
    let sent: Value = calls[0].body_json().unwrap();
    assert_eq!(
        (sent["input_type"].as_str(), sent["texts"].as_array().unwrap().len()),
        (Some("search_document"), indexed.chunks.len())
    );

    let user = tokens::for_test("alice", "acme", &["user"]);
    let request =
        events::with("chat-post.json", "POST", "/chat", Some(&json!({"message": "How do I plan?"})), Some(&user));
    assert_eq!(chat::handle(&services.chat, request).await.status(), StatusCode::OK);
    let asked: Value = server.received_requests().await.unwrap()[1].body_json().unwrap();
    assert_eq!((asked["input_type"].as_str(), &asked["texts"]), (Some("search_query"), &json!(["How do I plan?"])));
    let admin = tokens::for_test("carol", "acme", &["admin"]);
    let request = events::with("chat-post.json", "GET", "/usage?scope=tenant", None, Some(&admin));
    let usage: Value = serde_json::from_slice(chat::handle(&services.chat, request).await.body().as_ref()).unwrap();
    let cohere = usage["models"].as_array().unwrap().iter().find(|m| m["model"] == model).cloned();
    let cohere = cohere.unwrap_or_else(|| panic!("{usage}"));
    assert_eq!(cohere["requests"].as_u64(), Some(2), "{usage}");
    assert!(cohere["input_tokens"].as_u64().unwrap() > 0 && cohere["cost_usd"].as_f64().unwrap() > 0.0, "{usage}");

    // v4, through an inference profile, at a length of its choice.
    let v4 = "us.cohere.embed-v4:0";
    let (stack, _, id) = ingest_with(&[
        ("COACH_EMBEDDING_PROVIDER", "bedrock"),
        ("COACH_EMBEDDING_MODEL", v4),
        ("COACH_BEDROCK_EMBEDDING_DIMENSIONS", "512"),
        ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", endpoint.as_str()),
    ])
    .await;
    let indexed = stack.indexed_doc("acme", &id).await.expect("indexed");
    assert_eq!((indexed.embedding_model.as_deref(), indexed.dims), (Some(v4), 512));
    assert_eq!(indexed.vectors.len(), indexed.chunks.len() * 512);
}

#[tokio::test]
async fn chunks_are_embedded_when_a_provider_is_configured() {
    use wiremock::{matchers, Mock, MockServer};
    let server = MockServer::start().await;
    Mock::given(matchers::path("/v1/embeddings")).respond_with(embeddings_responder(false)).mount(&server).await;
    Mock::given(matchers::path("/v1beta/models/embed-g:batchEmbedContents"))
        .respond_with(embeddings_responder(true))
        .mount(&server)
        .await;
    let base = format!("{}/v1", server.uri());
    let (stack, _, id) = ingest_with(&[
        ("COACH_EMBEDDING_PROVIDER", "openai"),
        ("COACH_EMBEDDING_BASE_URL", &base),
        ("COACH_EMBEDDING_MODEL", "embed-test"),
    ])
    .await;
    let openai = stack.indexed_doc("acme", &id).await.expect("indexed");
    assert_eq!(openai.embedding_model.as_deref(), Some("embed-test"));
    assert_eq!(openai.dims, 4);
    assert_eq!(openai.vectors.len(), openai.chunks.len() * 4);
    // The second chunk is embedded with its heading path (vectors are stored at unit length).
    let expected = format!("Weekly planning > One-on-ones\n\n{}", openai.chunks[1].text);
    let raw = [1.0, expected.len() as f32, 1.0, 0.0];
    let norm = raw.iter().map(|x: &f32| x * x).sum::<f32>().sqrt();
    for (got, want) in openai.vectors[4..8].iter().zip(raw) {
        assert!((got - want / norm).abs() < 1e-6, "{:?}", &openai.vectors[4..8]);
    }
    let sent: Value = server.received_requests().await.unwrap()[0].body_json().unwrap();
    assert_eq!(sent["model"], "embed-test");

    let (stack, _, id) = ingest_with(&[
        ("COACH_EMBEDDING_PROVIDER", "gemini"),
        ("COACH_EMBEDDING_BASE_URL", &server.uri()),
        ("COACH_EMBEDDING_MODEL", "embed-g"),
    ])
    .await;
    let gemini = stack.indexed_doc("acme", &id).await.expect("indexed");
    assert_eq!(gemini.dims, 4);
    assert_eq!(gemini.vectors.len(), gemini.chunks.len() * 4);
}

#[tokio::test]
async fn embedding_outages_are_retried_and_refusals_fail_the_document() {
    use wiremock::{matchers, Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(matchers::path("/embeddings")).respond_with(ResponseTemplate::new(503)).mount(&server).await;
    let uri = server.uri();
    let vars = [
        ("COACH_EMBEDDING_PROVIDER", "openai"),
        ("COACH_EMBEDDING_BASE_URL", uri.as_str()),
        ("COACH_LLM_BACKOFF_MS", "1"),
    ];
    let stack = TestStack::with_env(&vars).await;
    let services = stack.deploy();
    let id = upload(&services, &editor(), "guide.md", "text/markdown", GUIDE.as_bytes()).await;
    let event = s3_event(&stack, "s3-put.json", &key_of(&services, &id).await);
    assert!(
        ingest::handle(&services.ingest, event.clone(), ingest_deadline()).await.is_err(),
        "outage: the event is retried"
    );
    assert_eq!(document(&services, &editor(), &id).await.1["status"], "processing");
    assert!(stack.indexed_doc("acme", &id).await.is_none());

    // The service recovers; the retried event completes the document.
    server.reset().await;
    Mock::given(matchers::path("/embeddings")).respond_with(embeddings_responder(false)).mount(&server).await;
    ingest::handle(&services.ingest, event.clone(), ingest_deadline()).await.unwrap();
    assert_eq!(document(&services, &editor(), &id).await.1["status"], "ready");

    // A refusal (bad key) is final for this version: failed, with the reason.
    server.reset().await;
    Mock::given(matchers::path("/embeddings")).respond_with(ResponseTemplate::new(401)).mount(&server).await;
    let id = upload(&services, &editor(), "other.md", "text/markdown", GUIDE.as_bytes()).await;
    ingest::handle(&services.ingest, s3_event(&stack, "s3-put.json", &key_of(&services, &id).await), ingest_deadline())
        .await
        .unwrap();
    let (_, doc) = document(&services, &editor(), &id).await;
    assert_eq!(doc["status"], "failed");
    assert_eq!(doc["error"], "the embedding service refused the request (status 401)");
}

#[tokio::test]
async fn a_text_document_sent_inline_takes_the_upload_path_to_ready() {
    let stack =
        TestStack::with_env(&[("COACH_EMBEDDING_PROVIDER", "none"), ("COACH_INLINE_UPLOAD_MAX_BYTES", "2000")]).await;
    let services = stack.deploy();
    let body = json!({
        "filename": "leave policy.md",
        "content": "# Parental leave\n\nParental leave is zqsixteen weeks.\n",
        "content_type": "text/markdown",
        "metadata": {"team": "people", "source.system": "wiki"},
    });
    let (status, created) = call(&services, req("POST", "/documents", Some(body), &editor())).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let id = created["document_id"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "pending");
    assert_eq!(created["status_url"], format!("/documents/{id}"));
    // Stored under the upload layout, with its type; the record pending with its metadata.
    let key = format!("uploads/acme/{id}/leave policy.md");
    assert_eq!(stack.get_text(&key).await, "# Parental leave\n\nParental leave is zqsixteen weeks.\n");
    let head = stack.aws.s3.head_object().bucket(&stack.config.bucket).key(&key).send().await.unwrap();
    assert_eq!(head.content_type(), Some("text/markdown"));
    let (_, record) = call(&services, req("GET", &format!("/documents/{id}"), None, &editor())).await;
    assert_eq!(record["status"], "pending");
    assert_eq!(record["size_bytes"], 53, "the bytes of the content");
    assert_eq!(record["metadata"], json!({"team": "people", "source.system": "wiki"}));
    // The S3 event runs the same ingest as for an upload.
    let event = coach::ingest::ObjectEvent { created: true, key };
    services.ingest.ingestor.handle(&event, ingest_deadline()).await.unwrap();
    let (_, record) = call(&services, req("GET", &format!("/documents/{id}"), None, &editor())).await;
    assert_eq!(record["status"], "ready", "{record}");
    assert_eq!(record["metadata"]["team"], "people");
    let cited = coach_testkit::flows::cited(&services, "acme", "zqsixteen").await;
    assert_eq!(cited, std::collections::BTreeSet::from([id]));
}

#[tokio::test]
async fn inline_documents_are_validated() {
    let stack = TestStack::with_env(&[("COACH_INLINE_UPLOAD_MAX_BYTES", "100")]).await;
    let services = stack.deploy();
    let post = |body: Value, token: &str| req("POST", "/documents", Some(body), token);
    let text = |content: &str| json!({"filename": "a.txt", "content": content, "content_type": "text/plain"});
    let cases = [
        (json!({"filename": "a.pdf", "content": "%PDF", "content_type": "application/pdf"}), 415),
        (json!({"filename": "a.md", "content": "x", "content_type": "text/plain"}), 400),
        (text(""), 400),
        (text(&"x".repeat(101)), 413),
        (json!({"filename": "a.txt", "content": "x", "content_type": "text/plain", "extra": 1}), 400),
        (json!({"filename": "a.txt", "content": "x", "content_type": "text/plain", "metadata": {"bad key": "v"}}), 400),
        (json!({"filename": "a.txt", "content": "x", "content_type": "text/plain", "metadata": {"k": "a\u{7}"}}), 400),
        (json!({"filename": "a.txt", "content": 5, "content_type": "text/plain"}), 400),
    ];
    for (body, expected) in cases {
        let (status, reply) = call(&services, post(body.clone(), &editor())).await;
        assert_eq!(status.as_u16(), expected, "{body}: {reply}");
        assert!(reply["error"]["code"].is_string());
    }
    let many: serde_json::Map<String, Value> = (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    let body = json!({"filename": "a.txt", "content": "x", "content_type": "text/plain", "metadata": many});
    assert_eq!(call(&services, post(body, &editor())).await.0, StatusCode::BAD_REQUEST);
    // Editors only; nothing was stored by any refused request.
    let user = tokens::for_test("ulla", "acme", &["user"]);
    assert_eq!(call(&services, post(text("x"), &user)).await.0, StatusCode::FORBIDDEN);
    assert!(stack.keys("uploads/").await.is_empty());
    let (_, listed) = call(&services, req("GET", "/documents", None, &editor())).await;
    assert_eq!(listed["documents"], json!([]));
}

#[tokio::test]
async fn a_csv_file_is_read_row_by_row_with_its_header() {
    let stack = TestStack::with_env(&[("COACH_EMBEDDING_PROVIDER", "none")]).await;
    let services = stack.deploy();
    let csv = "team,owner,budget\nplatform,zqada,120k\n\"growth, EU\",zqlee,80k\n";
    let id = upload(&services, &editor(), "teams.csv", "text/csv", csv.as_bytes()).await;
    let key = key_of(&services, &id).await;
    let result = ingest::handle(&services.ingest, s3_event(&stack, "s3-put.json", &key), ingest_deadline()).await;
    assert!(result.is_ok(), "{result:?}");
    let (_, ready) = document(&services, &editor(), &id).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["content_type"], "text/csv");
    let shard = stack.indexed_doc("acme", &id).await.expect("indexed");
    let text: Vec<&str> = shard.chunks.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(
        text.join("\n\n"),
        "team: platform; owner: zqada; budget: 120k\n\nteam: growth, EU; owner: zqlee; budget: 80k"
    );
    let cited = coach_testkit::flows::cited(&services, "acme", "zqlee").await;
    assert_eq!(cited, std::collections::BTreeSet::from([id]));
    // A CSV file that is not text fails with the reason.
    let id = upload(&services, &editor(), "binary.csv", "text/csv", b"a,b\n\x00\x01\x02").await;
    let key = key_of(&services, &id).await;
    ingest::handle(&services.ingest, s3_event(&stack, "s3-put.json", &key), ingest_deadline()).await.unwrap();
    let (_, failed) = document(&services, &editor(), &id).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"], "the file is not UTF-8 or UTF-16 text (it may be a binary file)");
}

#[tokio::test]
async fn a_word_document_is_read_and_a_damaged_one_fails_with_the_reason() {
    use std::io::Write;
    let stack = TestStack::with_env(&[("COACH_EMBEDDING_PROVIDER", "none")]).await;
    let services = stack.deploy();
    let mut package = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let deflated = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    package.start_file("word/document.xml", deflated).unwrap();
    package
        .write_all(
            br#"<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>
<w:p><w:r><w:t>Onboarding</w:t></w:r></w:p><w:p><w:r><w:t>Every new hire gets a zqbuddy for a month.</w:t></w:r></w:p>
</w:body></w:document>"#,
        )
        .unwrap();
    let docx = package.finish().unwrap().into_inner();
    let word = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";
    let id = upload(&services, &editor(), "Onboarding.docx", word, &docx).await;
    let key = key_of(&services, &id).await;
    ingest::handle(&services.ingest, s3_event(&stack, "s3-put.json", &key), ingest_deadline()).await.unwrap();
    let (_, ready) = document(&services, &editor(), &id).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    let shard = stack.indexed_doc("acme", &id).await.expect("indexed");
    assert_eq!(shard.chunks[0].text, "Onboarding\n\nEvery new hire gets a zqbuddy for a month.");
    let cited = coach_testkit::flows::cited(&services, "acme", "zqbuddy").await;
    assert_eq!(cited, std::collections::BTreeSet::from([id]));
    // A file that is not a Word document, declared as one.
    let id = upload(&services, &editor(), "fake.docx", word, b"\xD0\xCF\x11\xE0 an OLE file").await;
    let key = key_of(&services, &id).await;
    ingest::handle(&services.ingest, s3_event(&stack, "s3-put.json", &key), ingest_deadline()).await.unwrap();
    let (_, failed) = document(&services, &editor(), &id).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"], "the Word document is damaged, encrypted or not a .docx file");
}

/// Sources say where their passage is (heading path, PDF pages, the character range in the
/// extracted text), and `GET /documents/{id}/chunks/{n}` shows a passage with its
/// neighbours, under the document's tenant rules.
#[tokio::test]
async fn citations_point_to_the_passage_and_it_can_be_read_in_context() {
    let stack = TestStack::with_env(&[("COACH_CHUNK_SIZE", "200"), ("COACH_CHUNK_OVERLAP", "20")]).await;
    let services = stack.deploy();
    let guide = "# Guide\n\nIntro words about the guide.\n\n## Praise\n\nPraise zqspecific behaviour soon after it \
                 happens, in a sentence or two.\n\n## Deadlines\n\nRaise a missed deadline early and ask what gets \
                 in the way of the work.\n";
    let md = upload(&services, &editor(), "guide.md", "text/markdown", guide.as_bytes()).await;
    let pages = [
        "Page one talks about planning the week ahead with the team. It lists the meetings, the goals and the \
         people who own each of them for the quarter.",
        "Page two holds the zqpagetwo rule for delegating outcomes to people. Agree on the result, the limits \
         and the check-in points, then step back.",
        "Page three closes with the zqpagethree notes on reviews and retros. Keep them short, specific and \
         about the work rather than the person.",
    ];
    let pdf = upload(&services, &editor(), "handbook.pdf", "application/pdf", &paged_pdf(&pages)).await;
    for id in [&md, &pdf] {
        let key = key_of(&services, id).await;
        ingest::handle(&services.ingest, s3_event(&stack, "s3-put.json", &key), ingest_deadline()).await.unwrap();
    }
    let user = tokens::for_test("alice", "acme", &["user"]);
    let ask = |message: &str| {
        let request = events::with("chat-post.json", "POST", "/chat", Some(&json!({"message": message})), Some(&user));
        let services = &services;
        async move {
            let response = chat::handle(&services.chat, request).await;
            let reply: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{reply}");
            reply["sources"][0].clone()
        }
    };
    // Markdown: the heading path, and the range that is the passage in the document's text.
    let source = ask("zqspecific").await;
    assert_eq!(source["document_id"], md.as_str());
    assert_eq!(source["heading"], "Guide > Praise");
    assert!(source.get("pages").is_none(), "{source}");
    let (start, end) = (source["start"].as_u64().unwrap() as usize, source["end"].as_u64().unwrap() as usize);
    let passage: String = guide.chars().skip(start).take(end - start).collect();
    assert!(passage.starts_with("Praise zqspecific behaviour") && passage.ends_with("sentence or two."), "{passage:?}");
    assert!(source["snippet"].as_str().unwrap().starts_with(&passage[..40]));
    // PDF: the pages of each passage.
    for (word, page) in [("zqpagetwo", 2), ("zqpagethree", 3)] {
        let source = ask(word).await;
        assert_eq!(source["document_id"], pdf.as_str(), "{source}");
        let (first, last) = (source["pages"][0].as_u64().unwrap(), source["pages"][1].as_u64().unwrap());
        assert!(first <= page && page <= last && last - first <= 1, "{word}: {source}");
    }

    // The passage in context.
    let chunk = |id: &str, n: &str, token: &str| req("GET", &format!("/documents/{id}/chunks/{n}"), None, token);
    let (status, view) = call(&services, chunk(&md, "1", &user)).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!((view["document_id"].as_str(), view["title"].as_str()), (Some(md.as_str()), Some("guide.md")));
    assert_eq!(view["chunks"], 3);
    assert_eq!(view["passage"]["chunk"], 1);
    assert_eq!(view["passage"]["heading"], "Guide > Praise");
    assert_eq!(view["passage"]["start"], start as u64);
    assert_eq!(
        view["before"].as_array().unwrap().iter().map(|c| c["chunk"].clone()).collect::<Vec<_>>(),
        vec![json!(0)]
    );
    assert_eq!(view["after"][0]["heading"], "Guide > Deadlines");
    let (_, wide) = call(&services, chunk(&md, "0?context=5", &user)).await;
    assert_eq!((wide["before"].as_array().unwrap().len(), wide["after"].as_array().unwrap().len()), (0, 2));
    for (n, token, expected) in [
        ("3", user.clone(), StatusCode::NOT_FOUND),
        ("x", user.clone(), StatusCode::BAD_REQUEST),
        ("1?context=6", user.clone(), StatusCode::BAD_REQUEST),
        ("1", tokens::for_test("mallory", "globex", &["user"]), StatusCode::NOT_FOUND),
    ] {
        let (status, body) = call(&services, chunk(&md, n, &token)).await;
        assert_eq!(status, expected, "{n}: {body}");
    }
    assert_eq!(call(&services, chunk("not-an-id", "0", &user)).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(call(&services, chunk("doc-0123456789abcdef", "0", &user)).await.0, StatusCode::NOT_FOUND);
}
