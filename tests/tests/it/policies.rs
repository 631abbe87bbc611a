//! template.yaml's IAM policies against the least-privilege rules of
//! `scripts/check_policies.py` (which secrets each function reads, no wildcards, no Scan,
//! versions listed only under a prefix). Moto does not enforce IAM, so the policies are
//! checked as written.

#[test]
fn template_policies_are_least_privilege() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = std::process::Command::new(root.join(".venv/bin/python"))
        .arg(root.join("scripts/check_policies.py"))
        .arg(root.join("template.yaml"))
        .output()
        .expect("the project's venv python (scripts/bootstrap.sh)");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}{}", String::from_utf8_lossy(&output.stderr));
}
