//! From verified JWT claims to a [`Principal`]: user id, tenant, roles and groups, read from
//! the claim names configured in [`AuthConfig`]. Nothing here checks signatures.

use serde::Serialize;
use serde_json::{Map, Value};

use super::{unauthorized, AuthConfig, TenantSource};
use crate::{
    error::Error,
    model::access::{normalise_groups, valid_group, Clearance, MAX_CALLER_GROUPS},
};

/// What a caller may do. Roles are ordered: a platform admin may do what an admin may, an
/// admin what an editor may, and an editor what a user may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Chat.
    User,
    /// Upload and delete documents.
    Editor,
    /// Everything in the tenant: API keys, usage and audit of the tenant.
    Admin,
    /// The deployment's operators (`platform-admin` in the token, or a subject listed in
    /// `COACH_PLATFORM_ADMINS`): what concerns every tenant, such as rebuilding the shared
    /// system prompt. Never an API key's.
    PlatformAdmin,
}

impl std::str::FromStr for Role {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_lowercase().as_str() {
            "user" => Ok(Role::User),
            "editor" => Ok(Role::Editor),
            "admin" => Ok(Role::Admin),
            "platform-admin" => Ok(Role::PlatformAdmin),
            _ => Err(()),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::User => "user",
            Role::Editor => "editor",
            Role::Admin => "admin",
            Role::PlatformAdmin => "platform-admin",
        })
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    pub user_id: String,
    pub tenant: String,
    /// Known roles named by the token (or the default role), sorted, no duplicates.
    pub roles: Vec<Role>,
    /// Access groups (the token's `COACH_GROUPS_CLAIM`, or the API key's), sorted, no
    /// duplicates: which restricted documents the caller reads ([`Principal::clearance`]).
    pub groups: Vec<String>,
}

impl Principal {
    /// Whose data this caller reads and writes: their tenant and user id.
    pub fn owner(&self) -> crate::model::Owner<'_> {
        crate::model::Owner { tenant: &self.tenant, user: &self.user_id }
    }

    /// Whether the caller is an API key (user id `key:{id}`; a token's subject never is).
    pub fn is_api_key(&self) -> bool {
        self.user_id.starts_with(super::api_keys::KEY_USER_PREFIX)
    }

    /// What the caller may read of the tenant's documents: everything for an admin, else the
    /// open documents and those of the caller's groups.
    pub fn clearance(&self) -> Clearance<'_> {
        if self.has_role(Role::Admin) {
            Clearance::All
        } else {
            Clearance::Groups(&self.groups)
        }
    }

    /// Whether the caller has `role` or a higher one.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.iter().any(|r| *r >= role)
    }

    /// Route guard: 403 unless the caller has `role` or a higher one.
    pub fn require(&self, role: Role) -> Result<(), Error> {
        if self.has_role(role) {
            Ok(())
        } else {
            Err(Error::RoleRefused {
                role: role.to_string(),
                tenant: self.tenant.clone(),
                user_id: self.user_id.clone(),
            })
        }
    }
}

/// Tenant ids end up in S3 keys and DynamoDB keys: keep them to a safe alphabet. A leading
/// `_` or `.` is refused, so no tenant can be named like `_global` (the shared docs' scope).
pub fn validate_tenant(tenant: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&tenant.len())
        && tenant.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !tenant.starts_with(['.', '_']);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{tenant:?} is not a valid tenant id (1-64 letters, digits, '-', '_' or '.', not starting with '_' or '.')"
        ))
    }
}

pub(super) fn principal(claims: &Map<String, Value>, config: &AuthConfig) -> Result<Principal, Error> {
    let user_id = match claims.get(&config.user_claim) {
        // `key:` names API keys: a token may not pass for one (their limits, budgets, audit).
        Some(Value::String(s)) if s.starts_with(super::api_keys::KEY_USER_PREFIX) => {
            return Err(unauthorized(format!("token claim {:?} may not start with \"key:\"", config.user_claim)))
        }
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 && !s.chars().any(char::is_control) => s.clone(),
        Some(_) => return Err(unauthorized(format!("token claim {:?} is malformed", config.user_claim))),
        None => return Err(unauthorized(format!("token lacks the {:?} claim", config.user_claim))),
    };
    let tenant = match &config.tenant {
        TenantSource::Single(tenant) => tenant.clone(),
        TenantSource::Claim(claim) => match claims.get(claim) {
            Some(Value::String(s)) if validate_tenant(s).is_ok() => s.clone(),
            Some(_) => return Err(unauthorized(format!("token claim {claim:?} is not a valid tenant id"))),
            None => return Err(unauthorized(format!("token lacks the {claim:?} claim"))),
        },
    };
    let mut roles: Vec<Role> = match claims.get(&config.roles_claim) {
        Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str()?.parse().ok()).collect(),
        // A space- or comma-separated string, as in OAuth `scope`.
        Some(Value::String(s)) => s.split([' ', ',']).filter_map(|r| r.parse().ok()).collect(),
        _ => Vec::new(),
    };
    if roles.is_empty() {
        roles.extend(config.default_role);
    }
    if config.platform_admins.contains(&user_id) {
        roles.push(Role::PlatformAdmin);
    }
    roles.sort();
    roles.dedup();
    let groups = groups(claims, config)?;
    Ok(Principal { user_id, tenant, roles, groups })
}

/// The caller's access groups from the claim `COACH_GROUPS_CLAIM` names (none when it is
/// empty or the token lacks it): an array of names, or a space- or comma-separated string.
/// Names that cannot be group names are left out; more than [`MAX_CALLER_GROUPS`] is a 401
/// (keeping some would make access depend on which).
fn groups(claims: &Map<String, Value>, config: &AuthConfig) -> Result<Vec<String>, Error> {
    let Some(claim) = config.groups_claim.as_deref() else { return Ok(Vec::new()) };
    let names: Vec<String> = match claims.get(claim) {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        Some(Value::String(s)) => s.split([' ', ',']).map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    let groups = normalise_groups(names.into_iter().filter(|g| valid_group(g)).collect());
    if groups.len() > MAX_CALLER_GROUPS {
        return Err(unauthorized(format!("token claim {claim:?} names more than {MAX_CALLER_GROUPS} groups")));
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthMode;
    use serde_json::json;

    fn config() -> AuthConfig {
        AuthConfig {
            mode: AuthMode::Hs256,
            issuer: None,
            audience: vec![],
            leeway_secs: 30,
            user_claim: "sub".into(),
            tenant: TenantSource::Claim("https://coach.example.com/tenant".into()),
            roles_claim: "cognito:groups".into(),
            default_role: Some(Role::User),
            platform_admins: vec!["auth0|ops".into()],
            groups_claim: Some("https://coach.example.com/groups".into()),
        }
    }

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn maps_namespaced_and_prefixed_claims() {
        let p = principal(
            &claims(json!({"sub": "auth0|42", "https://coach.example.com/tenant": "acme", "cognito:groups": ["Editor", "other", "admin"]})),
            &config(),
        )
        .unwrap();
        assert_eq!(
            p,
            Principal {
                user_id: "auth0|42".into(),
                tenant: "acme".into(),
                roles: vec![Role::Editor, Role::Admin],
                groups: vec![]
            }
        );
        assert!(p.has_role(Role::User));
    }

    #[test]
    fn roles_from_a_scope_string_and_default_role() {
        let mut c = config();
        c.roles_claim = "scope".into();
        let p = principal(
            &claims(json!({"sub": "u", "https://coach.example.com/tenant": "t", "scope": "openid editor"})),
            &c,
        )
        .unwrap();
        assert_eq!(p.roles, vec![Role::Editor]);
        let p = principal(&claims(json!({"sub": "u", "https://coach.example.com/tenant": "t"})), &c).unwrap();
        assert_eq!(p.roles, vec![Role::User]);
        c.default_role = None;
        let p = principal(&claims(json!({"sub": "u", "https://coach.example.com/tenant": "t"})), &c).unwrap();
        assert!(p.roles.is_empty());
        assert_eq!(p.require(Role::User).unwrap_err().status().as_u16(), 403);
    }

    #[test]
    fn missing_or_unsafe_claims_are_401() {
        let c = config();
        let err = principal(&claims(json!({"https://coach.example.com/tenant": "t"})), &c).unwrap_err();
        assert_eq!(err, Error::Unauthorized("token lacks the \"sub\" claim".into()));
        let err = principal(&claims(json!({"sub": "u"})), &c).unwrap_err();
        assert_eq!(err.status().as_u16(), 401);
        let err =
            principal(&claims(json!({"sub": "u", "https://coach.example.com/tenant": "../other"})), &c).unwrap_err();
        assert_eq!(err.status().as_u16(), 401);
        let err = principal(&claims(json!({"sub": 7, "https://coach.example.com/tenant": "t"})), &c).unwrap_err();
        assert_eq!(err.status().as_u16(), 401);
    }

    #[test]
    fn platform_admins_come_from_the_token_or_the_deployment_and_keys_from_neither() {
        let c = config();
        let of = |value: Value| principal(&claims(value), &c);
        let p = of(json!({"sub": "u", "https://coach.example.com/tenant": "t", "cognito:groups": ["platform-admin"]}));
        assert_eq!(p.unwrap().roles, vec![Role::PlatformAdmin]);
        let p = of(json!({"sub": "auth0|ops", "https://coach.example.com/tenant": "t"})).unwrap();
        assert_eq!(p.roles, vec![Role::User, Role::PlatformAdmin], "COACH_PLATFORM_ADMINS");
        assert!(p.has_role(Role::Admin) && !p.is_api_key());
        let p = of(json!({"sub": "u", "https://coach.example.com/tenant": "t", "cognito:groups": ["admin"]})).unwrap();
        assert_eq!(p.require(Role::PlatformAdmin).unwrap_err().status().as_u16(), 403, "a tenant's admin is not");
        // A token may not pass for an API key.
        let err = of(json!({"sub": "key:01HZZZZZZZZZZZZZZZZZZZZZZZ", "https://coach.example.com/tenant": "t"}));
        assert_eq!(err.unwrap_err().status().as_u16(), 401);
        assert_eq!(serde_json::to_value(Role::PlatformAdmin).unwrap(), "platform-admin");
        assert_eq!("platform-admin".parse::<Role>(), Ok(Role::PlatformAdmin));
    }

    #[test]
    fn groups_come_from_the_configured_claim_and_admins_read_everything() {
        let mut c = config();
        let tenant = "https://coach.example.com/tenant";
        let groups = "https://coach.example.com/groups";
        let p =
            principal(&claims(json!({"sub": "u", tenant: "t", groups: ["hr", "board", "hr", "", " x", "a\nb"]})), &c)
                .unwrap();
        assert_eq!(p.groups, vec!["board", "hr"], "sorted, distinct, invalid names left out");
        let hr = vec!["hr".to_owned()];
        assert_eq!(p.clearance(), Clearance::Groups(&["board".to_owned(), "hr".to_owned()]));
        assert!(p.clearance().may_read(Some(&hr)) && !p.clearance().may_read(Some(&["legal".to_owned()])));
        // A string claim, as some IdPs send one group.
        let p = principal(&claims(json!({"sub": "u", tenant: "t", groups: "hr legal"})), &c).unwrap();
        assert_eq!(p.groups, vec!["hr", "legal"]);
        // No claim: no groups; an admin reads everything anyway.
        let p = principal(&claims(json!({"sub": "u", tenant: "t", "cognito:groups": ["admin"]})), &c).unwrap();
        assert!(p.groups.is_empty() && p.clearance() == Clearance::All);
        // Too many is refused rather than cut.
        let many: Vec<String> = (0..=MAX_CALLER_GROUPS).map(|i| format!("g{i}")).collect();
        let err = principal(&claims(json!({"sub": "u", tenant: "t", groups: many})), &c).unwrap_err();
        assert_eq!(err.status().as_u16(), 401);
        // Without a groups claim configured, a token's groups are not read.
        c.groups_claim = None;
        let p = principal(&claims(json!({"sub": "u", tenant: "t", groups: ["hr"]})), &c).unwrap();
        assert!(p.groups.is_empty());
    }

    #[test]
    fn single_tenant_ignores_tenant_claims() {
        let mut c = config();
        c.tenant = TenantSource::Single("default".into());
        let p = principal(&claims(json!({"sub": "u", "https://coach.example.com/tenant": "evil"})), &c).unwrap();
        assert_eq!(p.tenant, "default");
    }

    #[test]
    fn role_guard_follows_the_hierarchy() {
        let p = Principal { user_id: "u".into(), tenant: "t".into(), roles: vec![Role::Editor], groups: vec![] };
        assert!(p.require(Role::User).is_ok());
        assert!(p.require(Role::Editor).is_ok());
        assert_eq!(p.require(Role::Admin), Err(Error::Forbidden("this action needs the admin role".into())));
    }
}
