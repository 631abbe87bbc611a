//! Who may read which document of a tenant: access groups.
//!
//! A tenant's document is readable by everyone in the tenant (`access: "tenant"`, the
//! default) or restricted to a list of groups (`access: ["hr", "board"]`): then only callers
//! in one of those groups read it. A caller's groups come from their token (the claim
//! `COACH_GROUPS_CLAIM` names) or their API key. A tenant's admins read every document of
//! the tenant whatever their groups. The shared docs (`docs/`) are readable by every caller.
//!
//! A document's access is `None` (the tenant) or `Some` groups, sorted and distinct.

/// Most groups a document may be restricted to.
pub const MAX_DOCUMENT_GROUPS: usize = 20;
/// Most groups a caller may have (a token naming more is refused).
pub const MAX_CALLER_GROUPS: usize = 200;
/// Longest group name, in characters.
pub const MAX_GROUP_CHARS: usize = 128;

/// Whether `name` may name a group: 1 to [`MAX_GROUP_CHARS`] characters, no control
/// characters, no white space at either end. (IdP group names vary: Cognito's and Auth0's
/// are names, Entra ID's are object ids; all fit.)
pub fn valid_group(name: &str) -> bool {
    let chars = name.chars().count();
    (1..=MAX_GROUP_CHARS).contains(&chars) && !name.chars().any(char::is_control) && name.trim() == name
}

/// What a caller may read of their tenant's documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clearance<'a> {
    /// Every document (the tenant's admins).
    All,
    /// Documents open to the tenant, and those restricted to one of these groups (sorted,
    /// distinct).
    Groups(&'a [String]),
}

impl Clearance<'_> {
    /// Whether a document of this `access` (`None`: the whole tenant) is readable.
    pub fn may_read(&self, access: Option<&[String]>) -> bool {
        match (self, access) {
            (Clearance::All, _) | (_, None) => true,
            (Clearance::Groups(mine), Some(groups)) => groups.iter().any(|g| mine.binary_search(g).is_ok()),
        }
    }

    /// Whether every document is readable.
    pub fn is_all(&self) -> bool {
        matches!(self, Clearance::All)
    }

    /// The groups, when the clearance is not [`Clearance::All`].
    pub fn groups(&self) -> Option<&[String]> {
        match self {
            Clearance::All => None,
            Clearance::Groups(groups) => Some(groups),
        }
    }

    /// A short key naming what this clearance reads, for caches of what was read with it:
    /// `all`, or a digest of the groups. Two callers with the same key read the same.
    pub fn key(&self) -> String {
        match self {
            Clearance::All => "all".to_owned(),
            Clearance::Groups(groups) => {
                let names: Vec<&str> = groups.iter().map(String::as_str).collect();
                // Length-prefixed parts, SHA-256: no two group lists share a key.
                format!("groups:{}", crate::ids::digest(&names))
            }
        }
    }
}

/// A list of groups as a document or an API key holds it, from `groups` as sent: at most
/// [`MAX_DOCUMENT_GROUPS`] names (counted as sent), each a valid group name; sorted and
/// distinct. Otherwise what is wrong with it, to tell the caller.
pub fn group_list(groups: &[String]) -> Result<Vec<String>, String> {
    if groups.len() > MAX_DOCUMENT_GROUPS {
        return Err(format!("at most {MAX_DOCUMENT_GROUPS} groups"));
    }
    if !groups.iter().all(|g| valid_group(g)) {
        return Err(format!(
            "group names are 1 to {MAX_GROUP_CHARS} characters, without control characters or white space at either end"
        ));
    }
    Ok(normalise_groups(groups.to_vec()))
}

/// `groups` as a document's or a caller's groups: sorted, distinct.
pub fn normalise_groups(mut groups: Vec<String>) -> Vec<String> {
    groups.sort();
    groups.dedup();
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(names: &[&str]) -> Vec<String> {
        normalise_groups(names.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn a_caller_reads_open_documents_and_those_of_a_group_of_theirs() {
        let hr = groups(&["hr", "all-staff"]);
        let caller = Clearance::Groups(&hr);
        assert!(caller.may_read(None));
        assert!(caller.may_read(Some(&groups(&["board", "hr"]))));
        assert!(!caller.may_read(Some(&groups(&["board"]))));
        let nobody = Clearance::Groups(&[]);
        assert!(nobody.may_read(None) && !nobody.may_read(Some(&groups(&["hr"]))));
        assert!(Clearance::All.may_read(Some(&groups(&["board"]))));
    }

    #[test]
    fn keys_tell_clearances_apart() {
        let (a, b, ab) = (groups(&["a"]), groups(&["b"]), groups(&["a", "b"]));
        let keys =
            [Clearance::All, Clearance::Groups(&[]), Clearance::Groups(&a), Clearance::Groups(&b)].map(|c| c.key());
        let mut distinct = keys.to_vec();
        distinct.extend([Clearance::Groups(&ab).key()]);
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 5, "{keys:?}");
        assert_eq!(Clearance::Groups(&groups(&["b", "a", "a"])).key(), Clearance::Groups(&ab).key());
    }

    #[test]
    fn group_names_are_bounded_and_printable() {
        for ok in ["hr", "cognito:admins", "Board Members", "6f1c2a9e-0b1d-4c8e-9a7f-2f3e4d5c6b7a", "ü"] {
            assert!(valid_group(ok), "{ok}");
        }
        for bad in ["", " hr", "hr ", "a\nb", "\u{0}"] {
            assert!(!valid_group(bad), "{bad:?}");
        }
        assert!(valid_group(&"x".repeat(MAX_GROUP_CHARS)) && !valid_group(&"x".repeat(MAX_GROUP_CHARS + 1)));
    }
}
