//! Access groups as a security property, over both index stores: a caller outside a
//! document's groups never receives its passages, title, snippet, id or a cached answer built
//! from it, on any path (chat, stream, `/qa`, `/summarize`, `/mindmap`, the documents routes,
//! MCP, the OpenAI-compatible API), while a caller in one of them (or an admin) does; an
//! access change applies to search at once, both ways; another tenant never sees it.

use coach::{
    auth::{Principal, Role},
    documents::{AccessInput, UploadRequest},
};
use coach_testkit::{
    events,
    flows::{chat_call, created, stream_call, uploads_call},
    stack::{ingest_deadline, Deployment, Store, TestStack},
    tokens,
};
use lambda_http::http::StatusCode;
use serde_json::{json, Value};

/// Uploads and ingests a markdown document of `tenant` readable by `access` (`None`: the
/// tenant), as an admin would; returns its id.
async fn add(
    stack: &TestStack,
    services: &Deployment,
    tenant: &str,
    name: &str,
    body: &str,
    access: Option<&[&str]>,
) -> String {
    let admin = Principal { user_id: "erin".into(), tenant: tenant.into(), roles: vec![Role::Admin], groups: vec![] };
    let request = UploadRequest {
        filename: name.into(),
        content_type: "text/markdown".into(),
        size_bytes: body.len() as u64,
        access: access.map(|groups| AccessInput::Groups(groups.iter().map(|g| (*g).to_owned()).collect())),
    };
    let id = services.uploads.documents.create_upload(&admin, &request).await.unwrap().document_id;
    let key = format!("uploads/{tenant}/{id}/{name}");
    stack.put(&key, body.as_bytes()).await;
    let outcome = services.ingest.ingestor.handle(&created(&key), ingest_deadline()).await.unwrap();
    assert!(matches!(outcome, coach::ingest::Outcome::Indexed { .. }), "{outcome:?}");
    id
}

/// A token of `user` in `tenant` with `roles` and access `groups` (the `groups` claim).
fn token(user: &str, tenant: &str, roles: &[&str], groups: &[&str]) -> String {
    let mut claims = tokens::claims(user, tenant, roles, 600);
    claims["groups"] = json!(groups);
    tokens::hs256(coach_testkit::stack::TEST_HS256_KEY.as_bytes(), &claims)
}

/// A JSON-RPC `tools/call` of `tool` on `/mcp`: the result.
async fn mcp(services: &Deployment, token: &str, tool: &str, arguments: Value) -> Value {
    let body =
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": arguments}});
    let mut request = events::with("chat-post.json", "POST", "/mcp", Some(&body), Some(token));
    request.headers_mut().insert("mcp-protocol-version", "2025-11-25".parse().unwrap());
    let response = chat::handle(&services.chat, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    answer["result"].clone()
}

/// What must never reach a caller outside the restricted documents' groups.
struct Secret {
    ids: Vec<String>,
    /// Their titles and a word only their text holds (never in a question: answers may
    /// repeat those).
    words: Vec<&'static str>,
}

impl Secret {
    /// The first of the restricted ids, titles or words `text` holds.
    fn leaked<'a>(&'a self, text: &'a str) -> Option<&'a str> {
        self.ids.iter().map(String::as_str).chain(self.words.iter().copied()).find(|w| text.contains(w))
    }

    fn assert_kept_from(&self, what: &str, text: &str) {
        assert_eq!(self.leaked(text), None, "{what} gave a restricted document away: {text}");
    }

    fn assert_given(&self, what: &str, text: &str) {
        assert!(text.contains("zanzibar"), "{what} should find the restricted passages: {text}");
    }
}

/// Every path a caller reads documents through, for `token`: each one's whole answer, named.
async fn every_path(services: &Deployment, token: &str, payroll: &str) -> Vec<(&'static str, String)> {
    let question = "What is the payroll bonus?";
    let mut out = Vec::new();
    let (status, reply) =
        Box::pin(chat_call(services, "POST", "/chat", Some(json!({"message": question})), token)).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    out.push(("chat", reply.to_string()));
    let (status, _, events) = Box::pin(stream_call(services, json!({"message": question}), token)).await;
    assert_eq!(status, StatusCode::OK);
    out.push(("stream", format!("{events:?}")));
    let (status, answer) =
        Box::pin(chat_call(services, "POST", "/qa", Some(json!({"question": question})), token)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    out.push(("qa", answer.to_string()));
    let (status, summary) =
        Box::pin(chat_call(services, "POST", "/summarize", Some(json!({"document_id": payroll})), token)).await;
    assert!(status == StatusCode::OK || status == StatusCode::NOT_FOUND, "{status} {summary}");
    out.push(("summarize", summary.to_string()));
    let (status, map) =
        Box::pin(chat_call(services, "POST", "/mindmap", Some(json!({"topic": "payroll bonus"})), token)).await;
    assert_eq!(status, StatusCode::OK, "{map}");
    out.push(("mindmap", map.to_string()));
    let completion = json!({"model": "coach", "messages": [{"role": "user", "content": question}]});
    let (status, completed) =
        Box::pin(chat_call(services, "POST", "/v1/chat/completions", Some(completion), token)).await;
    assert_eq!(status, StatusCode::OK, "{completed}");
    out.push(("openai", completed.to_string()));
    out.push((
        "mcp search",
        Box::pin(mcp(services, token, "search_documents", json!({"query": question}))).await.to_string(),
    ));
    out.push(("mcp ask", Box::pin(mcp(services, token, "ask", json!({"question": question}))).await.to_string()));
    let summary = Box::pin(mcp(services, token, "summarize_document", json!({"document_id": payroll}))).await;
    out.push(("mcp summarize", summary.to_string()));
    out.push(("mcp list", Box::pin(mcp(services, token, "list_documents", json!({}))).await.to_string()));
    let (status, listed) = Box::pin(uploads_call(services, "GET", "/documents?limit=100", None, token)).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    out.push(("list", listed.to_string()));
    let (_, record) = Box::pin(uploads_call(services, "GET", &format!("/documents/{payroll}"), None, token)).await;
    out.push(("status", record.to_string()));
    let (_, chunk) =
        Box::pin(uploads_call(services, "GET", &format!("/documents/{payroll}/chunks/0"), None, token)).await;
    out.push(("chunk", chunk.to_string()));
    out
}

async fn every_path_keeps_restricted_documents_from_callers_outside_their_groups(store: Store) {
    // Two passages a query may return: the restricted documents rank first for it, so a
    // filter applied after ranking would leave a caller outside their groups short.
    let stack = TestStack::with_store(store, &[("COACH_RETRIEVAL_TOP_K", "2"), ("COACH_QA_CACHE_SECS", "300")]).await;
    let services = stack.deploy();
    let restricted = [
        ("payroll-policy.md", "# Payroll\n\nThe zanzibar bonus is paid in payroll every March."),
        ("payroll-bands.md", "# Bands\n\nZanzibar bands: the payroll bonus grows with each band."),
        ("payroll-review.md", "# Review\n\nThe zanzibar payroll review sets the bonus pool."),
    ];
    let mut ids = Vec::new();
    for (name, body) in restricted {
        ids.push(add(&stack, &services, "acme", name, body, Some(&["hr"])).await);
    }
    let board = add(
        &stack,
        &services,
        "acme",
        "board-minutes.md",
        "# Minutes\n\nThe board discussed the bonus.",
        Some(&["board"]),
    )
    .await;
    let open = [
        add(&stack, &services, "acme", "handbook.md", "# Handbook\n\nAsk your manager about the bonus.", None).await,
        add(&stack, &services, "acme", "benefits.md", "# Benefits\n\nA bonus is paid to everyone in good years.", None)
            .await,
    ];
    let payroll = ids[0].clone();
    let secret = Secret {
        ids: ids.clone(),
        words: vec!["zanzibar", "Zanzibar", "payroll-policy.md", "payroll-bands.md", "payroll-review.md"],
    };

    // Outside the group: nothing of the restricted documents on any path; still two passages.
    let alice = token("alice", "acme", &["user"], &[]);
    let sales = token("sam", "acme", &["user", "editor"], &["sales"]);
    for (who, token) in [("alice", &alice), ("sam of sales", &sales)] {
        for (path, text) in Box::pin(every_path(&services, token, &payroll)).await {
            secret.assert_kept_from(&format!("{path} for {who}"), &text);
        }
        let (_, reply) = Box::pin(chat_call(
            &services,
            "POST",
            "/chat",
            Some(json!({"message": "payroll bonus bands review"})),
            token,
        ))
        .await;
        let cited: Vec<&str> =
            reply["sources"].as_array().unwrap().iter().map(|s| s["document_id"].as_str().unwrap()).collect();
        assert_eq!(cited.len(), 2, "top_k readable passages, not fewer: {reply}");
        assert!(cited.iter().all(|id| open.iter().any(|o| o == id)), "{cited:?}");
    }

    // In the group, and an admin: the restricted passages come back.
    let harry = token("harry", "acme", &["user"], &["hr"]);
    let admin = token("ada", "acme", &["admin"], &[]);
    for (who, token) in [("harry of hr", &harry), ("the admin", &admin)] {
        let paths = Box::pin(every_path(&services, token, &payroll)).await;
        for (path, text) in &paths {
            if ["chat", "stream", "qa", "mcp search", "mcp ask", "chunk", "summarize"].contains(path) {
                secret.assert_given(&format!("{path} for {who}"), text);
            }
        }
        let listed = &paths.iter().find(|(p, _)| *p == "list").unwrap().1;
        assert!(ids.iter().all(|id| listed.contains(id.as_str())), "{who}: {listed}");
        assert_eq!(listed.contains(board.as_str()), *who == *"the admin", "board minutes: {listed}");
    }
    let (_, record) = Box::pin(uploads_call(&services, "GET", &format!("/documents/{payroll}"), None, &harry)).await;
    assert_eq!(record["access"], json!(["hr"]), "{record}");
    let (_, record) = Box::pin(uploads_call(&services, "GET", &format!("/documents/{}", open[0]), None, &harry)).await;
    assert_eq!(record["access"], "tenant");

    // The answer cache: harry's answer (built from payroll passages) is never alice's; a
    // caller of the same groups shares it.
    let question = json!({"question": "How is the payroll bonus paid?"});
    let (_, kept) = Box::pin(chat_call(&services, "POST", "/qa", Some(question.clone()), &harry)).await;
    secret.assert_given("qa for harry", &kept.to_string());
    let (_, theirs) = Box::pin(chat_call(&services, "POST", "/qa", Some(question.clone()), &alice)).await;
    assert_eq!(theirs["cached"], false, "{theirs}");
    secret.assert_kept_from("qa for alice after harry", &theirs.to_string());
    let hana = token("hana", "acme", &["user"], &["hr"]);
    let (_, shared) = Box::pin(chat_call(&services, "POST", "/qa", Some(question.clone()), &hana)).await;
    assert_eq!(shared["cached"], true, "{shared}");

    // Editors outside the group can neither change nor delete it: it does not exist for them.
    let (status, _) =
        uploads_call(&services, "PATCH", &format!("/documents/{payroll}"), Some(json!({"access": "tenant"})), &sales)
            .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = Box::pin(uploads_call(&services, "DELETE", &format!("/documents/{payroll}"), None, &sales)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Nor restrict a document away from themselves.
    let (status, refused) = uploads_call(
        &services,
        "PATCH",
        &format!("/documents/{}", open[0]),
        Some(json!({"access": ["board"]})),
        &sales,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");

    // Opened to the tenant: alice finds it at once (and not a kept answer from before); then
    // restricted again: gone again.
    let hr_editor = token("hal", "acme", &["editor"], &["hr"]);
    let (status, changed) = uploads_call(
        &services,
        "PATCH",
        &format!("/documents/{payroll}"),
        Some(json!({"access": "tenant"})),
        &hr_editor,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["access"], "tenant");
    let (_, reply) =
        Box::pin(chat_call(&services, "POST", "/chat", Some(json!({"message": "payroll bonus bands review"})), &alice))
            .await;
    assert!(reply.to_string().contains(payroll.as_str()), "opened: {reply}");
    let (_, opened) = Box::pin(chat_call(&services, "POST", "/qa", Some(question.clone()), &alice)).await;
    assert_eq!(opened["cached"], false);
    assert!(opened.to_string().contains(payroll.as_str()), "{opened}");
    let (status, changed) =
        uploads_call(&services, "PATCH", &format!("/documents/{payroll}"), Some(json!({"access": ["hr"]})), &hr_editor)
            .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    for (path, text) in Box::pin(every_path(&services, &alice, &payroll)).await {
        secret.assert_kept_from(&format!("{path} for alice after the document was restricted again"), &text);
    }
    // Both changes are audited.
    let (_, audit) = Box::pin(chat_call(&services, "GET", "/audit", None, &admin)).await;
    let changes = audit["events"].as_array().unwrap().iter().filter(|e| e["operation"] == "document.access").count();
    assert_eq!(changes, 2, "{audit}");

    // Another tenant, in a group of the same name: nothing of acme's.
    let globex = token("gus", "globex", &["user", "editor"], &["hr"]);
    for (path, text) in Box::pin(every_path(&services, &globex, &payroll)).await {
        secret.assert_kept_from(&format!("{path} for globex"), &text);
    }

    // An API key reads what its groups read, never more than its creator's groups.
    let hr_admin = token("ada", "acme", &["admin"], &["hr"]);
    let create = |groups: Value| json!({"name": "bot", "roles": ["user"], "groups": groups});
    let (status, refused) =
        Box::pin(chat_call(&services, "POST", "/api-keys", Some(create(json!(["board"]))), &hr_admin)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    let (status, key) =
        Box::pin(chat_call(&services, "POST", "/api-keys", Some(create(json!(["hr"]))), &hr_admin)).await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    assert_eq!(key["groups"], json!(["hr"]));
    let (status, plain) = Box::pin(chat_call(&services, "POST", "/api-keys", Some(create(json!([]))), &hr_admin)).await;
    assert_eq!(status, StatusCode::CREATED, "{plain}");
    let ask = json!({"message": "payroll bonus bands review"});
    let (_, with_group) =
        Box::pin(chat_call(&services, "POST", "/chat", Some(ask.clone()), key["key"].as_str().unwrap())).await;
    secret.assert_given("chat for the hr key", &with_group.to_string());
    let (_, without) = Box::pin(chat_call(&services, "POST", "/chat", Some(ask), plain["key"].as_str().unwrap())).await;
    secret.assert_kept_from("chat for a key without groups", &without.to_string());

    // Deleted by someone who may read it: gone for everyone, its access with it.
    let (status, _) =
        Box::pin(uploads_call(&services, "DELETE", &format!("/documents/{payroll}"), None, &hr_editor)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = Box::pin(uploads_call(&services, "GET", &format!("/documents/{payroll}"), None, &admin)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// The property over the real stores: for random group assignments, what each caller's
/// search returns equals what the same search returns from a tenant holding only the
/// documents that caller may read (the reference filter), passage for passage, score for
/// score (and MCP's `search_documents` likewise, and the documents list is exactly the
/// readable documents); so nothing restricted is returned, and nothing readable is crowded
/// out. Then again after every document's access is changed (`PATCH`) to another random
/// assignment: the collection statistics follow the changes, not only the uploads.
async fn a_callers_search_equals_the_search_of_their_readable_documents_alone(store: Store) {
    let stack = TestStack::with_store(store, &[("COACH_RETRIEVAL_TOP_K", "4")]).await;
    let services = stack.deploy();
    let words = ["bonus", "payroll", "feedback", "goals", "salary", "review", "hiring", "board", "budget", "team"];
    let accesses: [Option<&[&str]>; 4] = [None, Some(&["hr"]), Some(&["board"]), Some(&["hr", "legal"])];
    let callers: [&[&str]; 3] = [&[], &["hr"], &["board", "legal"]];
    let questions = ["payroll bonus", "feedback on goals", "board budget review", "team salary hiring"];
    let mut rng = fastrand::Rng::with_seed(20261207);
    let tenant = "acme";
    let admin = token("erin", tenant, &["admin"], &[]);
    let mut docs: Vec<(String, String, String, usize)> = Vec::new();
    let mut searches_with_passages = 0;
    for i in 0..10 {
        let sentences: Vec<String> = (0..rng.usize(1..4))
            .map(|_| {
                let picked: Vec<&str> = (0..rng.usize(2..6)).map(|_| words[rng.usize(..words.len())]).collect();
                format!("{}.", picked.join(" "))
            })
            .collect();
        let (name, body, access) =
            (format!("doc-{i}.md"), format!("# Note {i}\n\n{}", sentences.join(" ")), rng.usize(..accesses.len()));
        let id = add(&stack, &services, tenant, &name, &body, accesses[access]).await;
        docs.push((id, name, body, access));
    }
    for round in 0..2 {
        if round > 0 {
            for (id, _, _, access) in &mut docs {
                *access = rng.usize(..accesses.len());
                let change = match accesses[*access] {
                    None => json!({"access": "tenant"}),
                    Some(groups) => json!({"access": groups}),
                };
                let (status, body) =
                    Box::pin(uploads_call(&services, "PATCH", &format!("/documents/{id}"), Some(change), &admin)).await;
                assert_eq!(status, StatusCode::OK, "{body}");
            }
        }
        for (c, groups) in callers.iter().enumerate() {
            let may_read = |access: usize| accesses[access].is_none_or(|list| list.iter().any(|g| groups.contains(g)));
            // The reference: a tenant of the readable documents alone, all open.
            let reference = format!("ref-{round}-{c}");
            let mut readable = 0;
            for (_, name, body, access) in &docs {
                if may_read(*access) {
                    add(&stack, &services, &reference, name, body, None).await;
                    readable += 1;
                }
            }
            // A user of each per round, so no one meets the per-user rate limit.
            let caller = token(&format!("cleo-{round}-{c}"), tenant, &["user"], groups);
            let referee = token(&format!("rita-{round}-{c}"), &reference, &["user"], &[]);
            // The list: exactly the readable documents.
            let (status, listed) =
                Box::pin(uploads_call(&services, "GET", "/documents?limit=100", None, &caller)).await;
            assert_eq!(status, StatusCode::OK, "{listed}");
            let mut names: Vec<&str> =
                listed["documents"].as_array().unwrap().iter().map(|d| d["filename"].as_str().unwrap()).collect();
            names.sort_unstable();
            let mut expected: Vec<&str> = docs
                .iter()
                .filter(|(_, _, _, access)| may_read(*access))
                .map(|(_, name, _, _)| name.as_str())
                .collect();
            expected.sort_unstable();
            assert_eq!(names, expected, "round {round}, caller {groups:?}: the list");
            for question in questions {
                // MCP's search: the reference's passages.
                let searched = |token: String| {
                    let services = &services;
                    async move {
                        let result =
                            Box::pin(mcp(services, &token, "search_documents", json!({"query": question}))).await;
                        let passages = result["structuredContent"]["passages"].as_array().cloned().unwrap_or_default();
                        passages
                            .iter()
                            .map(|p| (p["title"].as_str().unwrap_or_default().to_owned(), p["chunk"].as_u64()))
                            .collect::<Vec<_>>()
                    }
                };
                let got = searched(caller.clone()).await;
                let expected = if readable == 0 { Vec::new() } else { searched(referee.clone()).await };
                assert_eq!(got, expected, "round {round}, caller {groups:?}, {question:?}: MCP search");
                searches_with_passages += usize::from(!got.is_empty());
                let ask = |token: String| {
                    let services = &services;
                    async move {
                        let (status, reply) =
                            Box::pin(chat_call(services, "POST", "/chat", Some(json!({"message": question})), &token))
                                .await;
                        assert_eq!(status, StatusCode::OK, "{reply}");
                        let sources = reply["sources"].as_array().unwrap().clone();
                        sources
                            .iter()
                            .map(|s| {
                                (
                                    s["title"].as_str().unwrap().to_owned(),
                                    s["chunk"].as_u64().unwrap(),
                                    s["score"].as_f64().unwrap(),
                                )
                            })
                            .collect::<Vec<_>>()
                    }
                };
                let got = ask(caller.clone()).await;
                let expected = if readable == 0 { Vec::new() } else { ask(referee.clone()).await };
                let strip =
                    |list: &[(String, u64, f64)]| list.iter().map(|(t, c, _)| (t.clone(), *c)).collect::<Vec<_>>();
                assert_eq!(strip(&got), strip(&expected), "round {round}, caller {groups:?}, {question:?}");
                for ((_, _, a), (_, _, b)) in got.iter().zip(&expected) {
                    assert!((a - b).abs() < 1e-4, "round {round}, caller {groups:?}, {question:?}: {a} vs {b}");
                }
            }
        }
        if store == Store::Postgres {
            // The per-set totals the searches subtract are the documents' own, summed.
            let sums = |table: &str| {
                stack.sql(&format!(
                    "SELECT coalesce(string_agg(g || ':' || c || ':' || l, ' ' ORDER BY g), '') FROM (
                         SELECT array_to_string(groups, ',') AS g, sum(chunks) AS c, sum(length) AS l FROM {table}
                         WHERE scope = '{tenant}' AND groups IS NOT NULL GROUP BY groups
                         HAVING sum(chunks) <> 0 OR sum(length) <> 0) t"
                ))
            };
            let totals = sums("coach_access_totals");
            assert!(!totals.is_empty(), "round {round}: some documents are restricted");
            assert_eq!(totals, sums("coach_document_access"), "round {round}");
        }
    }
    assert!(searches_with_passages >= 12, "most searches find passages: {searches_with_passages} of 24");
}

/// A change that reached a document's record but not the index (its request failed halfway)
/// is applied by ingest before the document becomes searchable.
async fn ingest_applies_a_restriction_that_reached_only_the_record(store: Store) {
    use coach::store::DocumentStore;
    let stack = TestStack::with_store(store, &[]).await;
    let services = stack.deploy();
    let (id, key) =
        coach_testkit::flows::upload(&stack, &services, "acme", "salary.md", "# Salary\n\nThe zanzibar salary table.")
            .await;
    let scope = coach::model::Scope::Tenant("acme".into());
    let groups = vec!["hr".to_owned()];
    stack.aws.table().set_access(&scope, &id, Some(&groups), 0, 1).await.unwrap();
    let outcome = services.ingest.ingestor.handle(&created(&key), ingest_deadline()).await.unwrap();
    assert!(matches!(outcome, coach::ingest::Outcome::Indexed { .. }), "{outcome:?}");
    let ask = json!({"message": "zanzibar salary table"});
    let (_, reply) =
        Box::pin(chat_call(&services, "POST", "/chat", Some(ask.clone()), &token("al", "acme", &["user"], &[]))).await;
    assert!(!reply.to_string().contains("zanzibar") && !reply.to_string().contains(id.as_str()), "{reply}");
    let (_, reply) =
        Box::pin(chat_call(&services, "POST", "/chat", Some(ask), &token("hr", "acme", &["user"], &["hr"]))).await;
    assert!(reply.to_string().contains(id.as_str()), "{reply}");
}

/// The same document id in two tenants: each tenant's access applies to its own document
/// alone, and a change in one leaves the other as it was.
async fn the_same_document_id_in_two_tenants_keeps_each_tenants_access(store: Store) {
    use coach::store::DocumentStore;
    let stack = TestStack::with_store(store, &[]).await;
    let services = stack.deploy();
    let id =
        add(&stack, &services, "acme", "payroll.md", "# Payroll\n\nThe zanzibar payroll bonus.", Some(&["hr"])).await;
    // globex holds a document of the very same id, open to its tenant.
    let globex = coach::model::Scope::Tenant("globex".into());
    let (name, body) = ("notes.md", "# Notes\n\nThe quokka payroll bonus.");
    let key = format!("uploads/globex/{id}/{name}");
    let record = coach::model::NewDocument {
        document_id: &id,
        filename: name,
        kind: coach::model::Kind::Markdown,
        size_bytes: body.len() as u64,
        key: &key,
        uploaded_by: "gus",
        metadata: None,
        access: None,
    };
    let now = tokens::now() as u64;
    stack.aws.table().create(&globex, &record, now * 1000, now + 3600).await.unwrap();
    stack.put(&key, body.as_bytes()).await;
    let outcome = services.ingest.ingestor.handle(&created(&key), ingest_deadline()).await.unwrap();
    assert!(matches!(outcome, coach::ingest::Outcome::Indexed { .. }), "{outcome:?}");

    let ask = |token: String| {
        let services = &services;
        async move {
            let (status, reply) =
                Box::pin(chat_call(services, "POST", "/chat", Some(json!({"message": "payroll bonus"})), &token)).await;
            assert_eq!(status, StatusCode::OK, "{reply}");
            reply.to_string()
        }
    };
    let (gus, ann, hal) = (
        token("gus", "globex", &["user"], &[]),
        token("ann", "acme", &["user"], &[]),
        token("hal", "acme", &["user"], &["hr"]),
    );
    let board = token("bo", "globex", &["user"], &["board"]);
    assert!(ask(gus.clone()).await.contains("quokka"), "globex's own, open document");
    let outside = ask(ann.clone()).await;
    assert!(!outside.contains(id.as_str()) && !outside.contains("quokka"), "{outside}");
    let inside = ask(hal.clone()).await;
    assert!(inside.contains("zanzibar") && !inside.contains("quokka"), "{inside}");

    // globex restricts its document: acme's stays as it was, both ways.
    let admin = token("gia", "globex", &["admin"], &[]);
    let change = json!({"access": ["board"]});
    let (status, changed) =
        Box::pin(uploads_call(&services, "PATCH", &format!("/documents/{id}"), Some(change), &admin)).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert!(!ask(gus).await.contains("quokka"), "restricted in globex now");
    assert!(ask(board).await.contains("quokka"));
    let inside = ask(hal).await;
    assert!(inside.contains("zanzibar") && !inside.contains("quokka"), "{inside}");
    let (_, record) = Box::pin(uploads_call(
        &services,
        "GET",
        &format!("/documents/{id}"),
        None,
        &token("ada", "acme", &["admin"], &[]),
    ))
    .await;
    assert_eq!(record["access"], json!(["hr"]), "{record}");
    assert!(!ask(ann).await.contains(id.as_str()));
}

over_both_stores!(
    the_same_document_id_in_two_tenants_keeps_each_tenants_access,
    ingest_applies_a_restriction_that_reached_only_the_record,
    every_path_keeps_restricted_documents_from_callers_outside_their_groups,
    a_callers_search_equals_the_search_of_their_readable_documents_alone,
);

/// Listing pages past documents a caller may not read: every readable document once, in
/// order, pages full while there are more, and no cursor naming an unreadable document.
#[tokio::test]
async fn a_list_pages_past_unreadable_documents_and_its_cursors_name_none() {
    let stack = TestStack::new().await;
    let services = stack.deploy();
    let mut open = Vec::new();
    let mut restricted = Vec::new();
    // Newest first: o4 r3 r2 o3 r1 o2 o1 (a run of two unreadable records inside).
    for (i, access) in
        [None, None, Some(&["hr"][..]), None, Some(&["hr"][..]), Some(&["board"][..]), None].iter().enumerate()
    {
        let id =
            add(&stack, &services, "acme", &format!("doc-{i}.md"), &format!("# Doc {i}\n\nText {i}."), *access).await;
        match access {
            None => open.push(id),
            Some(_) => restricted.push(id),
        }
    }
    open.reverse();
    let alice = token("alice", "acme", &["user"], &[]);
    for limit in [1, 2, 3, 10] {
        let (mut seen, mut cursor) = (Vec::new(), None::<String>);
        loop {
            let path = match &cursor {
                Some(c) => format!("/documents?limit={limit}&cursor={c}"),
                None => format!("/documents?limit={limit}"),
            };
            let (status, page) = Box::pin(uploads_call(&services, "GET", &path, None, &alice)).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            let ids: Vec<String> = page["documents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["document_id"].as_str().unwrap().to_owned())
                .collect();
            cursor = page["next_cursor"].as_str().map(str::to_owned);
            if cursor.is_some() {
                assert_eq!(ids.len(), limit, "a page is full while more follow: {page}");
            }
            assert!(restricted.iter().all(|r| !page.to_string().contains(r.as_str())), "limit {limit}: {page}");
            seen.extend(ids);
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(seen, open, "limit {limit}");
    }
}
