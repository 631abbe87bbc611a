//! The documentation holds: `docs/CONFIGURATION.md` documents every `COACH_*` environment
//! variable the code, scripts and template read (so configuration never hides in the source),
//! with the defaults the code has; the README stays a door (under 300 lines); and every
//! relative link of the README and `docs/` leads to a file and heading that exist.

use std::{collections::BTreeSet, path::Path};

/// Adds every `COACH_*` name in `text` to `names`.
fn scan(text: &str, names: &mut BTreeSet<String>) {
    let mut rest = text;
    while let Some(at) = rest.find("COACH_") {
        let tail = &rest[at..];
        let end =
            tail.find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')).unwrap_or(tail.len());
        let name = tail[..end].trim_end_matches('_');
        let is_pattern = tail[end..].starts_with('*'); // `COACH_JWT_*` in prose
        if name.len() > "COACH_".len() && !is_pattern {
            names.insert(name.to_owned());
        }
        rest = &tail[end..];
    }
}

fn scan_dir(dir: &Path, names: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            scan_dir(&path, names);
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("rs" | "sh" | "py"))
            || path.file_name().is_some_and(|n| n == "run")
        {
            scan(&std::fs::read_to_string(&path).unwrap(), names);
        }
    }
}

fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The configuration reference.
fn configuration() -> String {
    std::fs::read_to_string(root().join("docs/CONFIGURATION.md")).expect("docs/CONFIGURATION.md")
}

#[test]
fn every_coach_variable_is_in_the_configuration_table() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut names = BTreeSet::new();
    for dir in ["shared/src", "functions", "tests/src", "tests/browser", "tools", "scripts", ".ci"] {
        scan_dir(&root.join(dir), &mut names);
    }
    scan(&std::fs::read_to_string(root.join("template.yaml")).unwrap(), &mut names);
    assert!(names.contains("COACH_BUCKET") && names.len() > 10, "scan found {names:?}");

    let table = configuration();
    let missing: Vec<_> = names.iter().filter(|n| !table.contains(&format!("| `{n}` |"))).collect();
    assert!(missing.is_empty(), "not in the configuration table (docs/CONFIGURATION.md): {missing:?}");
}

/// The configuration table says what `config::settings::SETTINGS` says: a row for every
/// `COACH_*` setting, and where the table fixes a default, the same default first in the
/// row's default column.
#[test]
fn the_configuration_table_gives_each_setting_its_default() {
    let readme = configuration();
    let mut checked = 0;
    for setting in coach::config::settings::SETTINGS.iter().filter(|s| s.name.starts_with("COACH_")) {
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", setting.name)))
            .unwrap_or_else(|| panic!("{} has no row in the configuration table", setting.name));
        let Some(default) = setting.default_text() else { continue };
        let column = row.split(" | ").nth(2).unwrap_or_default();
        let written = column.strip_prefix('`').and_then(|c| c.split('`').next());
        assert_eq!(written, Some(default.as_str()), "the documented default of {}: {column:?}", setting.name);
        checked += 1;
    }
    assert!(checked > 60, "checked {checked} defaults");
}

/// The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The README and every page of `docs/`.
fn pages() -> Vec<std::path::PathBuf> {
    let mut pages = vec![root().join("README.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    pages
}

#[test]
fn every_relative_link_of_the_docs_leads_somewhere() {
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            let tail = &rest[at + 2..];
            let Some(end) = tail.find(')') else { break };
            let target = &tail[..end];
            rest = &tail[end..];
            if target.contains("://") || target.starts_with("mailto:") || target.contains(' ') {
                continue;
            }
            let (file, fragment) = target.split_once('#').unwrap_or((target, ""));
            let linked = if file.is_empty() { page.clone() } else { page.parent().unwrap().join(file) };
            assert!(linked.exists(), "{}: {target} leads nowhere", page.display());
            if !fragment.is_empty() {
                let headings: Vec<String> = std::fs::read_to_string(&linked)
                    .unwrap()
                    .lines()
                    .filter_map(|l| l.strip_prefix('#'))
                    .map(|l| anchor(l.trim_start_matches('#')))
                    .collect();
                assert!(headings.iter().any(|h| h == fragment), "{}: no heading #{fragment} in {file}", page.display());
            }
            checked += 1;
        }
    }
    assert!(checked > 20, "checked {checked} links");
}

#[test]
fn the_readme_is_a_door_and_every_reference_page_is_linked_from_it() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(readme.lines().count() < 300, "the README has {} lines", readme.lines().count());
    for page in pages().iter().skip(1) {
        let name = page.file_name().unwrap().to_string_lossy();
        assert!(readme.contains(&format!("(docs/{name})")), "the README does not link docs/{name}");
    }
}
