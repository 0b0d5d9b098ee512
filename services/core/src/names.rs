//! Resource names (AIP-122): parsing with strict validation and formatting. Every name
//! starts with `workspaces/{workspace}`, which is what the auth layer checks against the
//! caller's key before anything is looked up.

use std::fmt;

use crate::{Error, Result};

/// A user-chosen id: `[a-z][a-z0-9-]{0,62}`.
pub fn validate_slug(field: &str, slug: &str) -> Result<()> {
    if is_slug(slug) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!(
                "{:?} is not a valid id: it must match [a-z][a-z0-9-]{{0,62}}",
                truncate(slug)
            ),
        ))
    }
}

pub fn is_slug(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// Server-assigned ids are UUIDs in their hyphenated lowercase form.
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::try_parse(s).is_ok_and(|u| u.hyphenated().to_string() == s)
}

/// Keeps error messages small when the input is hostile.
pub(crate) fn truncate(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn segments<'a>(
    field: &str,
    name: &'a str,
    collections: &[&str],
    kind: &str,
) -> Result<Vec<&'a str>> {
    let parts: Vec<&str> = name.split('/').collect();
    let expected = collections
        .iter()
        .map(|c| format!("{c}/{{id}}"))
        .collect::<Vec<_>>()
        .join("/");
    let bad = || {
        Error::invalid(
            field,
            format!(
                "{:?} is not a {kind} name: expected {expected}",
                truncate(name)
            ),
        )
    };
    if parts.len() != collections.len() * 2 {
        return Err(bad());
    }
    let mut ids = Vec::with_capacity(collections.len());
    for (pair, collection) in parts.chunks(2).zip(collections) {
        if pair[0] != *collection {
            return Err(bad());
        }
        ids.push(pair[1]);
    }
    Ok(ids)
}

/// A user-chosen slug or a server-assigned UUID (sessions may have either).
pub fn is_slug_or_uuid(s: &str) -> bool {
    is_slug(s) || is_uuid(s)
}

macro_rules! check_slug {
    ($field:expr, $name:expr, $id:expr) => {
        check_slug!($field, $name, $id, is_slug)
    };
    ($field:expr, $name:expr, $id:expr, $valid:expr) => {
        if !$valid($id) {
            return Err(Error::invalid(
                $field,
                format!(
                    "{:?} has an invalid id {:?}: ids match [a-z][a-z0-9-]{{0,62}}",
                    truncate($name),
                    truncate($id)
                ),
            ));
        }
    };
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkspaceName {
    pub workspace: String,
}

impl WorkspaceName {
    pub fn parse(field: &str, name: &str) -> Result<Self> {
        let ids = segments(field, name, &["workspaces"], "workspace")?;
        check_slug!(field, name, ids[0]);
        Ok(Self {
            workspace: ids[0].to_owned(),
        })
    }
}

impl fmt::Display for WorkspaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "workspaces/{}", self.workspace)
    }
}

/// Names of resources that live in a workspace: `workspaces/{w}/{collection}/{id}`.
macro_rules! workspace_scoped_name {
    ($name:ident, $field:ident, $collection:literal, $kind:literal) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name {
            pub workspace: String,
            pub $field: String,
        }

        impl $name {
            pub fn parse(field: &str, name: &str) -> Result<Self> {
                let ids = segments(field, name, &["workspaces", $collection], $kind)?;
                for id in &ids {
                    check_slug!(field, name, id);
                }
                Ok(Self {
                    workspace: ids[0].to_owned(),
                    $field: ids[1].to_owned(),
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    concat!("workspaces/{}/", $collection, "/{}"),
                    self.workspace, self.$field
                )
            }
        }
    };
}

workspace_scoped_name!(ProjectName, project, "projects", "project");
workspace_scoped_name!(AgentName, agent, "agents", "agent");

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApiKeyName {
    pub workspace: String,
    pub key: String,
}

impl ApiKeyName {
    pub fn parse(field: &str, name: &str) -> Result<Self> {
        let ids = segments(field, name, &["workspaces", "apiKeys"], "API key")?;
        check_slug!(field, name, ids[0]);
        if !is_uuid(ids[1]) {
            return Err(Error::invalid(
                field,
                format!(
                    "{:?} has an invalid key id: key ids are UUIDs",
                    truncate(name)
                ),
            ));
        }
        Ok(Self {
            workspace: ids[0].to_owned(),
            key: ids[1].to_owned(),
        })
    }
}

impl fmt::Display for ApiKeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "workspaces/{}/apiKeys/{}", self.workspace, self.key)
    }
}

/// Names of resources that live in a project: `workspaces/{w}/projects/{p}/{collection}/{id}`.
macro_rules! project_scoped_name {
    ($name:ident, $field:ident, $collection:literal, $kind:literal) => {
        project_scoped_name!($name, $field, $collection, $kind, is_slug);
    };
    ($name:ident, $field:ident, $collection:literal, $kind:literal, $valid:expr) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name {
            pub workspace: String,
            pub project: String,
            pub $field: String,
        }

        impl $name {
            /// The name of `id` in `project` of `workspace`.
            pub fn new(workspace: &str, project: &str, id: &str) -> Self {
                Self {
                    workspace: workspace.to_owned(),
                    project: project.to_owned(),
                    $field: id.to_owned(),
                }
            }

            pub fn parse(field: &str, name: &str) -> Result<Self> {
                let ids = segments(field, name, &["workspaces", "projects", $collection], $kind)?;
                for id in &ids[..2] {
                    check_slug!(field, name, id);
                }
                check_slug!(field, name, ids[2], $valid);
                Ok(Self {
                    workspace: ids[0].to_owned(),
                    project: ids[1].to_owned(),
                    $field: ids[2].to_owned(),
                })
            }

            pub fn project(&self) -> ProjectName {
                ProjectName {
                    workspace: self.workspace.clone(),
                    project: self.project.clone(),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    concat!("workspaces/{}/projects/{}/", $collection, "/{}"),
                    self.workspace, self.project, self.$field
                )
            }
        }
    };
}

project_scoped_name!(InstanceName, instance, "instances", "instance");
project_scoped_name!(ContextName, context, "contexts", "context");
project_scoped_name!(SessionName, session, "sessions", "session", is_slug_or_uuid);

/// `workspaces/{w}/projects/{p}/sessions/{s}/runs/{run}`; run ids are UUIDs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RunName {
    pub workspace: String,
    pub project: String,
    pub session: String,
    pub run: String,
}

impl RunName {
    pub fn parse(field: &str, name: &str) -> Result<Self> {
        let ids = segments(
            field,
            name,
            &["workspaces", "projects", "sessions", "runs"],
            "run",
        )?;
        check_slug!(field, name, ids[0]);
        check_slug!(field, name, ids[1]);
        check_slug!(field, name, ids[2], is_slug_or_uuid);
        check_slug!(field, name, ids[3], is_uuid);
        Ok(Self {
            workspace: ids[0].to_owned(),
            project: ids[1].to_owned(),
            session: ids[2].to_owned(),
            run: ids[3].to_owned(),
        })
    }

    pub fn session(&self) -> SessionName {
        SessionName {
            workspace: self.workspace.clone(),
            project: self.project.clone(),
            session: self.session.clone(),
        }
    }
}

impl fmt::Display for RunName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "workspaces/{}/projects/{}/sessions/{}/runs/{}",
            self.workspace, self.project, self.session, self.run
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_the_documented_pattern() {
        assert!(is_slug("a"));
        assert!(is_slug("acme-prod-2"));
        assert!(!is_slug(""));
        assert!(!is_slug("2acme"));
        assert!(!is_slug("Acme"));
        assert!(!is_slug("acme_prod"));
        assert!(!is_slug(&"a".repeat(64)));
        assert!(is_slug(&"a".repeat(63)));
        assert!(!is_slug("acmé"));
    }

    #[test]
    fn names_parse_and_round_trip() {
        let n = InstanceName::parse("name", "workspaces/w/projects/p/instances/i").unwrap();
        assert_eq!(n.to_string(), "workspaces/w/projects/p/instances/i");
        assert_eq!(n.project().to_string(), "workspaces/w/projects/p");
        let k = ApiKeyName::parse(
            "name",
            "workspaces/w/apiKeys/0190c5a4-6e3e-7b7a-9c1e-2f4d5e6a7b8c",
        )
        .unwrap();
        assert_eq!(k.workspace, "w");
    }

    #[test]
    fn malformed_names_are_rejected() {
        for bad in [
            "",
            "workspaces",
            "workspaces/",
            "workspaces/W",
            "projects/p",
            "workspaces/w/",
            "workspaces/w/x",
        ] {
            assert!(
                WorkspaceName::parse("name", bad).is_err(),
                "{bad:?} accepted"
            );
        }
        assert!(ProjectName::parse("name", "workspaces/w/agents/p").is_err());
        assert!(InstanceName::parse("name", "workspaces/w/projects/p/instances/../x").is_err());
        assert!(ApiKeyName::parse("name", "workspaces/w/apiKeys/not-a-uuid").is_err());
    }
}
