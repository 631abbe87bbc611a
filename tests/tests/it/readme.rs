//! The README documents every `COACH_*` environment variable the code, scripts and
//! template read, so configuration never hides in the source.

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

#[test]
fn every_coach_variable_is_in_the_readme_table() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut names = BTreeSet::new();
    for dir in ["shared/src", "functions", "tests/src", "tests/browser", "tools", "scripts", ".ci"] {
        scan_dir(&root.join(dir), &mut names);
    }
    scan(&std::fs::read_to_string(root.join("template.yaml")).unwrap(), &mut names);
    assert!(names.contains("COACH_BUCKET") && names.len() > 10, "scan found {names:?}");

    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let missing: Vec<_> = names.iter().filter(|n| !readme.contains(&format!("| `{n}` |"))).collect();
    assert!(missing.is_empty(), "not in the README's configuration table: {missing:?}");
}

/// The README's configuration table says what `config::settings::SETTINGS` says: a row for
/// every `COACH_*` setting, and where the table fixes a default, the same default first in
/// the row's default column.
#[test]
fn the_readme_table_gives_each_setting_its_default() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut checked = 0;
    for setting in coach::config::settings::SETTINGS.iter().filter(|s| s.name.starts_with("COACH_")) {
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", setting.name)))
            .unwrap_or_else(|| panic!("{} has no row in the README's configuration table", setting.name));
        let Some(default) = setting.default_text() else { continue };
        let column = row.split(" | ").nth(2).unwrap_or_default();
        let written = column.strip_prefix('`').and_then(|c| c.split('`').next());
        assert_eq!(written, Some(default.as_str()), "the README's default of {}: {column:?}", setting.name);
        checked += 1;
    }
    assert!(checked > 60, "checked {checked} defaults");
}
