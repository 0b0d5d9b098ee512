//! Resource names given in full (`workspaces/acme/projects/web`) or relative to the
//! `--workspace` / `--project` defaults (`web`, `instances/bot`, `bot`). A name that
//! starts with `workspaces/` is always taken as it is.

use super::{Failure, status::fail};

const ROOT: &str = "workspaces/";

/// The defaults relative names are resolved against.
#[derive(Debug, Clone, Default)]
pub struct Names {
    pub workspace: Option<String>,
    pub project: Option<String>,
}

impl Names {
    /// `workspaces/{w}` from `--workspace` (an id or a full name).
    pub fn workspace(&self) -> Result<String, Failure> {
        match self.workspace.as_deref() {
            Some(w) if w.starts_with(ROOT) => Ok(w.trim_end_matches('/').to_owned()),
            Some(w) if !w.is_empty() => Ok(format!("{ROOT}{w}")),
            _ => Err(fail!(
                "no workspace: give a full name or --workspace (or AGENTRY_WORKSPACE, or a profile's workspace)"
            )),
        }
    }

    /// `workspaces/{w}/projects/{p}` from `--project` (an id, or a full name).
    pub fn project(&self) -> Result<String, Failure> {
        match self.project.as_deref() {
            Some(p) if p.starts_with(ROOT) => Ok(p.trim_end_matches('/').to_owned()),
            Some(p) if !p.is_empty() => Ok(format!("{}/projects/{p}", self.workspace()?)),
            _ => Err(fail!(
                "no project: give a full name or --project (or AGENTRY_PROJECT, or a profile's project)"
            )),
        }
    }

    /// A workspace given as an argument, or the default one.
    pub fn workspace_arg(&self, arg: Option<&str>) -> Result<String, Failure> {
        match arg {
            Some(name) if name.starts_with(ROOT) => Ok(name.to_owned()),
            Some(id) => Ok(format!("{ROOT}{id}")),
            None => self.workspace(),
        }
    }

    /// A project given as an argument (full, or an id in the default workspace), or the
    /// default project.
    pub fn project_arg(&self, arg: Option<&str>) -> Result<String, Failure> {
        match arg {
            Some(name) if name.starts_with(ROOT) => Ok(name.to_owned()),
            Some(id) => Ok(format!(
                "{}/projects/{}",
                self.workspace()?,
                strip(id, "projects")
            )),
            None => self.project(),
        }
    }

    /// A resource of the default workspace: `agents/x` or `x` → `workspaces/w/agents/x`.
    pub fn in_workspace(&self, collection: &str, arg: &str) -> Result<String, Failure> {
        in_parent(|| self.workspace(), collection, arg)
    }

    /// A resource of the default project: `instances/x` or `x` →
    /// `workspaces/w/projects/p/instances/x`.
    pub fn in_project(&self, collection: &str, arg: &str) -> Result<String, Failure> {
        in_parent(|| self.project(), collection, arg)
    }

    /// The filter `key = "…/instances/…"` of the instance `arg` names in the default
    /// project; empty without one.
    pub fn instance_filter(&self, key: &str, arg: Option<String>) -> Result<String, Failure> {
        let Some(arg) = arg else {
            return Ok(String::new());
        };
        Ok(format!(
            "{key} = \"{}\"",
            self.in_project("instances", &arg)?
        ))
    }

    /// A run: its full name, `sessions/{s}/runs/{r}`, or `{s}/{r}` in the default
    /// project.
    pub fn run_name(&self, arg: &str) -> Result<String, Failure> {
        if arg.starts_with(ROOT) {
            return Ok(arg.to_owned());
        }
        let relative = arg.strip_prefix("sessions/").unwrap_or(arg);
        let (session, run) = match relative.split_once('/') {
            Some((session, rest)) => (session, rest.strip_prefix("runs/").unwrap_or(rest)),
            None => {
                return Err(fail!(
                    "run {arg:?}: give a full name, or SESSION/RUN in the default project"
                ));
            }
        };
        Ok(format!("{}/sessions/{session}/runs/{run}", self.project()?))
    }
}

/// A resource of `collection` in the default `parent`; a full name as it is.
fn in_parent(
    parent: impl FnOnce() -> Result<String, Failure>,
    collection: &str,
    arg: &str,
) -> Result<String, Failure> {
    if arg.starts_with(ROOT) {
        return Ok(arg.to_owned());
    }
    Ok(format!(
        "{}/{collection}/{}",
        parent()?,
        strip(arg, collection)
    ))
}

/// `agents/x` → `x` for the collection `agents`; anything else unchanged.
fn strip<'a>(arg: &'a str, collection: &str) -> &'a str {
    arg.strip_prefix(collection)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(arg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(workspace: Option<&str>, project: Option<&str>) -> Names {
        Names {
            workspace: workspace.map(str::to_owned),
            project: project.map(str::to_owned),
        }
    }

    #[test]
    fn relative_names_resolve_against_the_defaults() {
        let c = client(Some("acme"), Some("web"));
        assert_eq!(c.project().unwrap(), "workspaces/acme/projects/web");
        assert_eq!(
            c.in_project("instances", "bot").unwrap(),
            "workspaces/acme/projects/web/instances/bot"
        );
        assert_eq!(
            c.in_project("instances", "instances/bot").unwrap(),
            "workspaces/acme/projects/web/instances/bot"
        );
        assert_eq!(
            c.in_workspace("agents", "workspaces/x/agents/y").unwrap(),
            "workspaces/x/agents/y"
        );
        assert_eq!(
            c.run_name("s1/r1").unwrap(),
            "workspaces/acme/projects/web/sessions/s1/runs/r1"
        );
        assert_eq!(
            c.run_name("sessions/s1/runs/r1").unwrap(),
            "workspaces/acme/projects/web/sessions/s1/runs/r1"
        );
        assert!(c.run_name("r1").is_err());
        let full = client(None, Some("workspaces/globex/projects/api"));
        assert_eq!(
            full.in_project("contexts", "notes").unwrap(),
            "workspaces/globex/projects/api/contexts/notes"
        );
        assert!(client(None, None).in_workspace("agents", "a").is_err());
    }
}
