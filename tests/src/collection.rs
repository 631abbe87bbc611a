//! Test collections in the CISI format, as `make eval` and the in-process tuning tool read
//! them (`../shared/eval/cisi`): `.I id` starts a record, `.T`/`.A`/`.W`/`.X` fields follow,
//! `.X` (cross-references) is dropped; judgements are `query_id doc_id ...` lines.

use std::{collections::BTreeMap, path::Path};

/// Follow-ups that name nothing of their topic, asked after a judged query in turn
/// (`tests/fixtures/eval/follow-ups.txt`): the conversational runs' (b).
pub fn follow_ups() -> Vec<&'static str> {
    include_str!("../fixtures/eval/follow-ups.txt").lines().map(str::trim).filter(|l| !l.is_empty()).collect()
}

/// A collection: its documents (id, text as uploaded: title, blank line, abstract) and its
/// judged queries (id, text), in file order, with the relevant documents of each.
pub struct Collection {
    pub docs: Vec<(String, String)>,
    pub queries: Vec<(String, String)>,
    pub relevant: BTreeMap<String, Vec<String>>,
}

impl Collection {
    /// Reads `CISI.ALL`, `CISI.QRY` and `CISI.REL` from `dir`.
    pub fn read(dir: &Path) -> Result<Self, String> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .map_err(|e| format!("{}: {e}", path.display()))
        };
        let docs = records(&read("CISI.ALL")?, &["T", "W"])
            .into_iter()
            .map(|(id, r)| (id, format!("{}\n\n{}\n", field(&r, "T"), field(&r, "W"))))
            .collect();
        let mut relevant: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in read("CISI.REL")?.lines() {
            if let [query, doc, ..] = line.split_whitespace().collect::<Vec<_>>()[..] {
                relevant.entry(query.to_owned()).or_default().push(doc.to_owned());
            }
        }
        let queries = records(&read("CISI.QRY")?, &["W"])
            .into_iter()
            .filter(|(id, _)| relevant.contains_key(id))
            .map(|(id, r)| (id, field(&r, "W").to_owned()))
            .collect();
        Ok(Self { docs, queries, relevant })
    }
}

/// Records of a CISI-format file: the `fields` asked for, joined in order.
fn records(text: &str, fields: &[&str]) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut field = String::new();
    for line in text.lines() {
        if let Some(id) = line.strip_prefix(".I ") {
            out.push((id.trim().to_owned(), Vec::new()));
            field.clear();
        } else if line.starts_with('.') && line.len() == 2 {
            field = line[1..].to_owned();
        } else if let Some((_, record)) = out.last_mut() {
            if fields.contains(&field.as_str()) {
                match record.last_mut() {
                    Some((f, value)) if *f == field => {
                        value.push(' ');
                        value.push_str(line.trim());
                    }
                    _ => record.push((field.clone(), line.trim().to_owned())),
                }
            }
        }
    }
    out
}

fn field<'a>(record: &'a [(String, String)], name: &str) -> &'a str {
    record.iter().find(|(f, _)| f == name).map_or("", |(_, v)| v.as_str())
}

/// nDCG@`depth` of `ranked` documents against binary `relevant` judgements.
pub fn ndcg(ranked: &[String], relevant: &[String], depth: usize) -> f64 {
    let gain = |i: usize| 1.0 / (i as f64 + 2.0).log2();
    let dcg: f64 =
        ranked.iter().take(depth).enumerate().filter(|(_, d)| relevant.contains(d)).map(|(i, _)| gain(i)).sum();
    let ideal: f64 = (0..relevant.len().min(depth)).map(gain).sum();
    dcg / ideal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_join_their_fields_and_drop_cross_references() {
        let text = ".I 1\n.T\nA title\n.W\nFirst line\nsecond line\n.X\n2 5 1\n.I 2\n.W\nOnly text\n";
        let r = records(text, &["T", "W"]);
        assert_eq!(r.len(), 2);
        assert_eq!((field(&r[0].1, "T"), field(&r[0].1, "W")), ("A title", "First line second line"));
        assert_eq!(field(&r[1].1, "T"), "");
        assert_eq!(follow_ups().len(), 12);
        assert!((ndcg(&["a".into(), "x".into()], &["a".into()], 10) - 1.0).abs() < 1e-9);
    }
}
