//! What a credential may reach (its scope), the session policy that expresses it for
//! an upstream STS, and how a caller's own policy may narrow it (never widen).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::roles::Action;

/// The longest session policy accepted, as in STS.
pub const MAX_POLICY_CHARS: usize = 2048;

/// Bucket, key prefixes (empty: the whole bucket) and actions of one credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub bucket: String,
    pub prefixes: Vec<String>,
    pub actions: BTreeSet<Action>,
}

fn object_actions(action: Action) -> &'static [&'static str] {
    match action {
        Action::Read => &["s3:GetObject", "s3:GetObjectVersion"],
        Action::Write => &[
            "s3:PutObject",
            "s3:AbortMultipartUpload",
            "s3:ListMultipartUploadParts",
        ],
        Action::Delete => &["s3:DeleteObject"],
        Action::List => &[],
    }
}

impl Scope {
    /// The IAM session policy that grants exactly this scope: object actions on each
    /// prefix, and listing with an `s3:prefix` condition.
    pub fn session_policy(&self) -> String {
        let mut statements = Vec::new();
        let actions: Vec<&str> = self
            .actions
            .iter()
            .flat_map(|a| object_actions(*a).iter().copied())
            .collect();
        let objects: Vec<String> = if self.prefixes.is_empty() {
            vec![format!("arn:aws:s3:::{}/*", self.bucket)]
        } else {
            self.prefixes
                .iter()
                .map(|p| format!("arn:aws:s3:::{}/{p}*", self.bucket))
                .collect()
        };
        if !actions.is_empty() {
            statements.push(json!({
                "Sid": "Objects",
                "Effect": "Allow",
                "Action": actions,
                "Resource": objects,
            }));
        }
        if self.actions.contains(&Action::List) || self.actions.contains(&Action::Write) {
            let mut list_actions = Vec::new();
            if self.actions.contains(&Action::List) {
                list_actions.push("s3:ListBucket");
            }
            if self.actions.contains(&Action::Write) {
                list_actions.push("s3:ListBucketMultipartUploads");
            }
            let mut statement = json!({
                "Sid": "List",
                "Effect": "Allow",
                "Action": list_actions,
                "Resource": [format!("arn:aws:s3:::{}", self.bucket)],
            });
            if !self.prefixes.is_empty() {
                let patterns: Vec<String> = self.prefixes.iter().map(|p| format!("{p}*")).collect();
                statement["Condition"] = json!({ "StringLike": { "s3:prefix": patterns } });
            }
            statements.push(statement);
        }
        json!({ "Version": "2012-10-17", "Statement": statements }).to_string()
    }

    /// Narrows this scope by a caller's session policy (the STS `Policy` parameter):
    /// the result is the intersection. Only `Allow` statements without conditions are
    /// understood; anything else is refused rather than ignored, since ignoring a
    /// `Deny` would hand out more than was asked for.
    pub fn narrow(&self, policy: &str) -> Result<Scope, String> {
        if policy.chars().count() > MAX_POLICY_CHARS {
            return Err(format!(
                "the policy is longer than {MAX_POLICY_CHARS} characters"
            ));
        }
        let doc: Value =
            serde_json::from_str(policy).map_err(|e| format!("the policy is not JSON: {e}"))?;
        let statements = match doc.get("Statement") {
            Some(Value::Array(items)) => items.clone(),
            Some(item @ Value::Object(_)) => vec![item.clone()],
            _ => return Err("the policy has no Statement".into()),
        };
        // Per statement: object actions and where they apply; listing on its own.
        let mut object_actions: Option<BTreeSet<Action>> = None;
        let mut whole_bucket = false;
        let mut prefixes: BTreeSet<String> = BTreeSet::new();
        let mut list = false;
        for st in &statements {
            if st.get("Effect").and_then(Value::as_str) != Some("Allow") {
                return Err("only Allow statements are supported".into());
            }
            if st.get("Condition").is_some()
                || st.get("NotAction").is_some()
                || st.get("NotResource").is_some()
            {
                return Err("Condition, NotAction and NotResource are not supported".into());
            }
            let mut st_actions = BTreeSet::new();
            for a in strings(st.get("Action")) {
                st_actions.extend(actions_of(&a));
            }
            let on_objects: BTreeSet<Action> = st_actions
                .iter()
                .copied()
                .filter(|a| *a != Action::List)
                .collect();
            let resources: Vec<ResourceMatch> = strings(st.get("Resource"))
                .iter()
                .map(|r| self.resource_prefix(r))
                .collect();
            // Listing is granted by the bucket ARN (or `*`), never by an object ARN.
            if st_actions.contains(&Action::List)
                && resources
                    .iter()
                    .any(|r| matches!(r, ResourceMatch::BucketOnly | ResourceMatch::Everything))
            {
                list = true;
            }
            let mut targets = Vec::new();
            for r in &resources {
                match r {
                    ResourceMatch::Everything | ResourceMatch::WholeBucket => {
                        targets.push(None);
                    }
                    ResourceMatch::Prefix(p) => targets.push(Some(p.clone())),
                    ResourceMatch::BucketOnly | ResourceMatch::Other => {}
                }
            }
            if on_objects.is_empty() || targets.is_empty() {
                continue;
            }
            // One set of object actions for every prefix: a policy granting different
            // actions on different prefixes cannot be expressed as one scope, and
            // pooling them would grant more than was asked for.
            match &object_actions {
                Some(existing) if *existing != on_objects => {
                    return Err(
                        "statements granting different object actions are not supported; send one statement per action set"
                            .into(),
                    );
                }
                _ => object_actions = Some(on_objects),
            }
            for t in targets {
                match t {
                    None => whole_bucket = true,
                    Some(p) => {
                        prefixes.insert(p);
                    }
                }
            }
        }
        let mut actions: BTreeSet<Action> = object_actions.unwrap_or_default();
        if list {
            actions.insert(Action::List);
        }
        let actions: BTreeSet<Action> = actions.intersection(&self.actions).copied().collect();
        let prefixes: Vec<String> = if whole_bucket || prefixes.is_empty() {
            // Only listing asked for, or objects everywhere: within the role's own
            // prefixes (an empty list here would mean the whole bucket).
            self.prefixes.clone()
        } else if self.prefixes.is_empty() {
            prefixes.into_iter().collect()
        } else {
            let mut kept = BTreeSet::new();
            for p in &prefixes {
                for r in &self.prefixes {
                    if p.starts_with(r.as_str()) {
                        kept.insert(p.clone());
                    } else if r.starts_with(p.as_str()) {
                        kept.insert(r.clone());
                    }
                }
            }
            if kept.is_empty() {
                return Err("the policy grants nothing within the role".into());
            }
            kept.into_iter().collect()
        };
        if actions.is_empty() {
            return Err("the policy grants nothing within the role".into());
        }
        Ok(Scope {
            bucket: self.bucket.clone(),
            prefixes,
            actions,
        })
    }

    fn resource_prefix(&self, resource: &str) -> ResourceMatch {
        if resource == "*" || resource == "arn:aws:s3:::*" {
            return ResourceMatch::Everything;
        }
        let Some(rest) = resource.strip_prefix("arn:aws:s3:::") else {
            return ResourceMatch::Other;
        };
        if rest == self.bucket {
            return ResourceMatch::BucketOnly;
        }
        let Some(key) = rest
            .strip_prefix(self.bucket.as_str())
            .and_then(|k| k.strip_prefix('/'))
        else {
            return ResourceMatch::Other;
        };
        let Some(prefix) = key.strip_suffix('*') else {
            return ResourceMatch::Other;
        };
        if prefix.is_empty() {
            return ResourceMatch::WholeBucket;
        }
        if prefix.contains('*') || prefix.contains('?') || prefix.split('/').any(|s| s == "..") {
            return ResourceMatch::Other;
        }
        ResourceMatch::Prefix(prefix.to_owned())
    }
}

enum ResourceMatch {
    /// `*`: the bucket and all its objects.
    Everything,
    /// `arn:aws:s3:::bucket/*`: all objects.
    WholeBucket,
    BucketOnly,
    Prefix(String),
    Other,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// Our actions that an IAM action (possibly a wildcard) covers.
fn actions_of(iam: &str) -> Vec<Action> {
    let named: &[(&str, Action)] = &[
        ("s3:GetObject", Action::Read),
        ("s3:GetObjectVersion", Action::Read),
        ("s3:PutObject", Action::Write),
        ("s3:AbortMultipartUpload", Action::Write),
        ("s3:ListMultipartUploadParts", Action::Write),
        ("s3:DeleteObject", Action::Delete),
        ("s3:ListBucket", Action::List),
    ];
    let iam_lower = iam.to_ascii_lowercase();
    let mut out: Vec<Action> = named
        .iter()
        .filter(|(name, _)| {
            artifactstore_oidc::claims::glob_match(&iam_lower, &name.to_ascii_lowercase())
        })
        .map(|(_, a)| *a)
        .collect();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(prefixes: &[&str], actions: &[Action]) -> Scope {
        Scope {
            bucket: "b".into(),
            prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
            actions: actions.iter().copied().collect(),
        }
    }

    #[test]
    fn the_session_policy_names_prefixes_and_a_list_condition() {
        let s = scope(&["ci/job-1/"], &[Action::Read, Action::List]);
        let p: Value = serde_json::from_str(&s.session_policy()).unwrap();
        assert_eq!(
            p["Statement"][0]["Resource"][0],
            "arn:aws:s3:::b/ci/job-1/*"
        );
        assert_eq!(p["Statement"][0]["Action"][0], "s3:GetObject");
        assert_eq!(p["Statement"][1]["Action"][0], "s3:ListBucket");
        assert_eq!(
            p["Statement"][1]["Condition"]["StringLike"]["s3:prefix"][0],
            "ci/job-1/*"
        );
        assert!(!s.session_policy().contains("PutObject"));
    }

    #[test]
    fn a_policy_narrows_actions_and_prefixes() {
        let role = scope(&["ci/"], &[Action::Read, Action::Write, Action::List]);
        let narrowed = role
            .narrow(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:GetObject","s3:DeleteObject"],"Resource":"arn:aws:s3:::b/ci/x/*"}]}"#)
            .unwrap();
        assert_eq!(narrowed.prefixes, vec!["ci/x/".to_string()]);
        assert_eq!(narrowed.actions, [Action::Read].into_iter().collect());
    }

    #[test]
    fn listing_alone_stays_within_the_role_prefixes() {
        let role = scope(&["ci/x/"], &[Action::Read, Action::List]);
        let n = role
            .narrow(r#"{"Statement":{"Effect":"Allow","Action":"s3:ListBucket","Resource":"arn:aws:s3:::b"}}"#)
            .unwrap();
        assert_eq!(n.prefixes, vec!["ci/x/".to_string()]);
        assert_eq!(n.actions, [Action::List].into_iter().collect());
        assert!(n.session_policy().contains("ci/x/*"));
    }

    #[test]
    fn statements_are_not_pooled() {
        let role = scope(&["ci/"], &[Action::Read, Action::Delete, Action::List]);
        assert!(role
            .narrow(r#"{"Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/ci/a/*"},{"Effect":"Allow","Action":"s3:DeleteObject","Resource":"arn:aws:s3:::b/ci/b/*"}]}"#)
            .is_err());
        // Listing everything does not widen where objects may be read.
        let n = role
            .narrow(r#"{"Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/ci/x/*"},{"Effect":"Allow","Action":"s3:ListBucket","Resource":"*"}]}"#)
            .unwrap();
        assert_eq!(n.prefixes, vec!["ci/x/".to_string()]);
        assert_eq!(
            n.actions,
            [Action::Read, Action::List].into_iter().collect()
        );
    }

    #[test]
    fn a_policy_never_widens() {
        let role = scope(&["ci/"], &[Action::Read]);
        let n = role
            .narrow(r#"{"Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*"}}"#)
            .unwrap();
        assert_eq!(n, role);
        assert!(role
            .narrow(r#"{"Statement":{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/other/*"}}"#)
            .is_err());
        assert!(role
            .narrow(r#"{"Statement":{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::other/*"}}"#)
            .is_err());
        assert!(
            role.narrow(
                r#"{"Statement":{"Effect":"Deny","Action":"s3:GetObject","Resource":"*"}}"#
            )
            .is_err()
        );
        assert!(role.narrow("not json").is_err());
        assert!(role.narrow(&"x".repeat(3000)).is_err());
    }
}
