//! The bucket's key layout: every object key Coach writes or reads is built, and read back,
//! here and nowhere else.
//!
//! | objects | key |
//! |---|---|
//! | a tenant's upload | `uploads/{tenant}/{document_id}/{file}` |
//! | a shared doc | `docs/{path}` |
//! | the system prompt, its base and manifest | `prompt/system_prompt.md`, `prompt/base.md`, `prompt/manifest.json` |
//! | a scope's index | `index/{tenant}/` or `index/_global/`: `manifest`, `seg/{id}`, `damaged/{id}`, `work/...` |
//! | a part of a document's vectors (a large document's embedding) | `index/{scope}/work/{id}/{version hash}/{from}-{to}` |

use crate::{ids::fnv1a, model::Scope};

/// Folder of the shared docs.
pub const DOCS_PREFIX: &str = "docs/";
/// The system prompt Coach serves.
pub const SYSTEM_PROMPT_KEY: &str = "prompt/system_prompt.md";
/// What the prompt refresh puts first.
pub const BASE_PROMPT_KEY: &str = "prompt/base.md";
/// What the prompt refresh built the prompt from.
pub const PROMPT_MANIFEST_KEY: &str = "prompt/manifest.json";

const UPLOADS_PREFIX: &str = "uploads/";

/// Where a tenant's upload of document `id` goes (`filename` already made safe).
pub fn upload_key(tenant: &str, id: &str, filename: &str) -> String {
    format!("{UPLOADS_PREFIX}{tenant}/{id}/{filename}")
}

/// The document an object key names, as the layout has it (the parts unchecked: what
/// makes a tenant or an id valid is the caller's to say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOf<'k> {
    /// `uploads/{tenant}/{id}/{file}`.
    Upload { tenant: &'k str, id: &'k str, filename: &'k str },
    /// `docs/{path}`: its path (not empty, not a folder).
    SharedDoc { path: &'k str },
}

/// The document `key` names; `None` for keys of no document.
pub fn document_of(key: &str) -> Option<KeyOf<'_>> {
    if let Some(rest) = key.strip_prefix(UPLOADS_PREFIX) {
        let mut parts = rest.splitn(3, '/');
        let (tenant, id, filename) = (parts.next()?, parts.next()?, parts.next()?);
        return Some(KeyOf::Upload { tenant, id, filename });
    }
    let path = key.strip_prefix(DOCS_PREFIX).filter(|p| !p.is_empty() && !p.ends_with('/'))?;
    Some(KeyOf::SharedDoc { path })
}

/// Folder of a scope's index: `index/{tenant}/` or `index/_global/`.
pub fn index_prefix(scope: &Scope) -> String {
    format!("index/{}/", scope.name())
}

/// A scope's manifest: `index/{scope}/manifest`.
pub fn manifest_key(scope: &Scope) -> String {
    format!("{}manifest", index_prefix(scope))
}

/// A segment of the scope's index: `index/{scope}/seg/{id}`.
pub fn segment_key(scope: &Scope, id: &str) -> String {
    format!("{}seg/{id}", index_prefix(scope))
}

/// A reader's report that a segment is damaged: `index/{scope}/damaged/{id}`.
pub fn damaged_key(scope: &Scope, id: &str) -> String {
    format!("{}damaged/{id}", index_prefix(scope))
}

/// Where a part of document `id` (version `etag`) covering chunks `from..to` is stored.
pub fn embedding_part_key(scope: &Scope, id: &str, etag: &str, from: usize, to: usize) -> String {
    format!("{}work/{id}/{:016x}/{from:08}-{to:08}", index_prefix(scope), fnv1a(etag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_read_back_as_they_are_built() {
        let key = upload_key("acme", "01JD3QA1B2C3D4E5F6G7H8J9KM", "Team handbook.pdf");
        assert_eq!(
            document_of(&key),
            Some(KeyOf::Upload { tenant: "acme", id: "01JD3QA1B2C3D4E5F6G7H8J9KM", filename: "Team handbook.pdf" })
        );
        assert_eq!(document_of("docs/team/a.md"), Some(KeyOf::SharedDoc { path: "team/a.md" }));
        for none in ["docs/", "docs/team/", "uploads/acme/x", SYSTEM_PROMPT_KEY, "index/acme/manifest"] {
            assert_eq!(document_of(none), None, "{none}");
        }
        assert_eq!(index_prefix(&Scope::Global), "index/_global/");
        assert_eq!(index_prefix(&Scope::Tenant("acme".into())), "index/acme/");
        let part = embedding_part_key(&Scope::Tenant("acme".into()), "D1", "\"v1\"", 0, 64);
        assert!(part.starts_with("index/acme/work/D1/") && part.ends_with("/00000000-00000064"), "{part}");
        assert_ne!(part, embedding_part_key(&Scope::Tenant("acme".into()), "D1", "\"v2\"", 0, 64));
    }
}
