//! The shape of the shared crate, checked on its source: no module imports one that imports
//! it back (directly or around a longer loop), and only the store area names an AWS SDK
//! type. A module is a top-level entry of `shared/src` (`chat.rs`, `store/`, ...); its
//! imports are the `crate::` paths in its files.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

/// The modules each module's source refers to through `crate::`.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// Adds the `crate::` references in `text` (paths and `use crate::{...}` groups) to `deps`.
fn references(text: &str, deps: &mut BTreeSet<String>) {
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group: split at commas outside nested braces.
            let (mut depth, mut item_start) = (0usize, true);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if c.is_whitespace() => {}
                    _ if item_start => {
                        deps.insert(ident(&group[i..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            deps.insert(ident(rest));
        }
    }
    deps.retain(|d| !d.is_empty() && d.chars().next().is_some_and(|c| c.is_ascii_lowercase()));
}

fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    (first != "lib.rs").then(|| first.trim_end_matches(".rs").to_owned())
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its comments (doc links are not imports).
fn code(text: &str) -> String {
    text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// Whether `code` names a path into one of the AWS SDK crates (`aws_sdk_s3::...`).
fn names_sdk(code: &str) -> Option<String> {
    ["aws_sdk_", "aws_smithy_", "aws_config::"].iter().find_map(|prefix| {
        code.match_indices(prefix).find_map(|(at, _)| {
            let name: String =
                code[at..].chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
            name.contains("::").then_some(name)
        })
    })
}

/// Every module's references, and the code of each module's files.
fn crate_graph() -> (Graph, BTreeMap<String, String>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let (mut graph, mut texts) = (Graph::new(), BTreeMap::<String, String>::new());
    for file in all {
        let Some(module) = module_of(&src, &file) else { continue };
        let text = code(&std::fs::read_to_string(&file).unwrap());
        let deps = graph.entry(module.clone()).or_default();
        references(&text, deps);
        deps.remove(&module);
        texts.entry(module).or_default().push_str(&text);
    }
    (graph, texts)
}

/// A loop of imports, if there is one: `a -> b -> ... -> a`.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(node: &str, graph: &Graph, path: &mut Vec<String>, done: &mut BTreeSet<String>) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let (graph, _) = crate_graph();
    assert!(graph.len() > 15 && graph.contains_key("store"), "modules found: {:?}", graph.keys());
    assert!(graph["chat"].contains("history") && graph["store"].contains("model"), "{graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle in shared/src: {}", cycle.join(" -> "));
    }
}

#[test]
fn only_the_store_names_sdk_types() {
    let (_, texts) = crate_graph();
    for (module, text) in texts.iter().filter(|(m, _)| m.as_str() != "store") {
        if let Some(path) = names_sdk(text) {
            panic!("module `{module}` names {path}; SDK types belong in store/");
        }
    }
    assert!(names_sdk(&texts["store"]).is_some(), "the store does use the SDK");
}

#[test]
fn the_checks_see_groups_and_loops() {
    let mut deps = BTreeSet::new();
    references("use crate::{a::X, b::{c::Y, Z}, e};\nfn f() { crate::d::g(); crate::Error }", &mut deps);
    assert_eq!(deps.into_iter().collect::<Vec<_>>(), ["a", "b", "d", "e"]);
    let graph: Graph = [("a", "b"), ("b", "c"), ("c", "a")]
        .iter()
        .map(|(k, v)| (k.to_string(), BTreeSet::from([v.to_string()])))
        .collect();
    assert_eq!(find_cycle(&graph), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
    let acyclic: Graph =
        [("a", "b"), ("b", "c")].iter().map(|(k, v)| (k.to_string(), BTreeSet::from([v.to_string()]))).collect();
    assert_eq!(find_cycle(&acyclic), None);
    assert_eq!(names_sdk("let c: aws_sdk_s3::Client;"), Some("aws_sdk_s3::Client".into()));
    assert_eq!(names_sdk(r#"const Q: &str = "aws_smithy_runtime=warn";"#), None);
    assert_eq!(code("// see crate::x\nuse crate::y;"), "use crate::y;");
}

/// Every Rust file of `shared/src` and of the functions, with its path.
fn sources() -> Vec<(std::path::PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut all = Vec::new();
    files(&root.join("src"), &mut all);
    files(&root.join("../functions"), &mut all);
    all.into_iter().map(|f| (f.clone(), std::fs::read_to_string(&f).unwrap())).collect()
}

#[test]
fn only_the_configuration_reads_the_environment() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config");
    for (file, text) in sources().iter().filter(|(f, _)| !f.starts_with(&config)) {
        for pattern in ["env::var(", "env::var_os(", "env::vars("] {
            assert!(
                !code(text).contains(pattern),
                "{} reads the environment ({pattern}); use config::Env",
                file.display()
            );
        }
    }
}

/// Settings are read before anything is built: a function that reads the environment
/// (takes an [`coach::config::Env`]) takes no client, store or secret, so each function's
/// settings are one value read at cold start and every module gets its dependencies through
/// its `new`. `AwsClients::cold_start` is the one place that does both, in that order.
#[test]
fn what_reads_settings_builds_nothing() {
    let mut readers = 0;
    for (file, text) in sources() {
        let text = code(&text);
        for (at, _) in text.match_indices("fn ") {
            let signature: String = text[at..].chars().take_while(|c| *c != '{' && *c != ';').collect();
            let parameters = signature.split("->").next().unwrap_or_default();
            if !parameters.contains("&Env") || signature.starts_with("fn cold_start") {
                continue;
            }
            readers += 1;
            for dependency in ["Arc<", "Client", "Secrets", "Store", "reqwest", "Bucket", "Table"] {
                assert!(
                    !parameters.contains(dependency),
                    "{}: `{}` reads settings and takes a {dependency}: read a config, pass it to `new`",
                    file.display(),
                    signature.trim()
                );
            }
        }
    }
    assert!(readers > 30, "found {readers} settings readers");
}

#[test]
fn every_setting_the_code_reads_is_a_row_of_the_settings_table() {
    use coach::config::settings::{setting, Kind};
    // The configuration's own tests read settings the wrong way on purpose.
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config");
    let mut read = 0;
    for (file, text) in sources().into_iter().filter(|(f, _)| !f.starts_with(&config)) {
        let text = code(&text);
        for method in ["number", "number_or", "float", "boolean_or", "text", "string_or", "string", "list"] {
            let call = format!("env.{method}(\"");
            for (at, _) in text.match_indices(&call) {
                let name: String = text[at + call.len()..].chars().take_while(|c| *c != '"').collect();
                let row = setting(&name).unwrap_or_else(|| panic!("{}: {name} is not in SETTINGS", file.display()));
                let fits = matches!(
                    (method, row.kind),
                    ("number", Kind::Number { default: Some(_), .. })
                        | ("number_or", Kind::Number { .. })
                        | ("float", Kind::Float { .. })
                        | ("boolean_or", Kind::Flag)
                        | ("list", Kind::List)
                        | ("text", Kind::Text { default: Some(_) })
                        | ("string_or", Kind::Text { default: None })
                        | ("string", _)
                );
                assert!(fits, "{}: {name} read with env.{method} but the table says {:?}", file.display(), row.kind);
                read += 1;
            }
        }
    }
    assert!(read > 80, "found {read} reads");
}
