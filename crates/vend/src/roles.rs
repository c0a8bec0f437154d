//! Roles: what a role grants in storage terms. Which tokens a role applies to (its
//! claim rules) and its prefixes templated from claims use `artifactstore_oidc::claims`.

use serde::{Deserialize, Serialize};

/// What a credential may do, in storage terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Read,
    Write,
    List,
    Delete,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Read, Action::Write, Action::List, Action::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::List => "list",
            Action::Delete => "delete",
        }
    }
}
