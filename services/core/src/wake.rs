//! Wake keys: what a committed write changed, in the terms its waiters wait on. A
//! WatchContext stream waits on its context, a StreamRunEvents stream and a held
//! HeartbeatTask on their run, a PollTask on the queue of each agent it serves. The store
//! collects the keys a transaction produces and publishes them once it commits; the
//! change feed wakes the waiters of exactly those keys.
//!
//! [`WakeKey::encode`] and [`WakeKey::decode`] are the one text form (Postgres NOTIFY
//! payloads carry it between replicas). Ids never hold `/` or whitespace (see
//! [`crate::names`]), so `/` separates the fields and a newline separates keys.

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WakeKey {
    /// A context's versions or its existence.
    Context {
        workspace: String,
        project: String,
        context: String,
    },
    /// A run's events, status or cancel flag.
    Run {
        workspace: String,
        project: String,
        run: String,
    },
    /// Runs of `agent` may have become claimable in `workspace`; `None`: of any agent
    /// (a slot under `max_concurrent_runs` was freed).
    Queue {
        workspace: String,
        agent: Option<String>,
    },
    /// Everything in a workspace (or one project of it) was deleted: every context and
    /// run waiter under it must look again.
    Under {
        workspace: String,
        project: Option<String>,
    },
}

impl WakeKey {
    pub fn context(workspace: &str, project: &str, context: &str) -> Self {
        Self::Context {
            workspace: workspace.to_owned(),
            project: project.to_owned(),
            context: context.to_owned(),
        }
    }

    pub fn run(workspace: &str, project: &str, run: &str) -> Self {
        Self::Run {
            workspace: workspace.to_owned(),
            project: project.to_owned(),
            run: run.to_owned(),
        }
    }

    /// The queue of `agent`'s runs in `workspace`.
    pub fn queue(workspace: &str, agent: &str) -> Self {
        Self::Queue {
            workspace: workspace.to_owned(),
            agent: Some(agent.to_owned()),
        }
    }

    /// The queues of every agent in `workspace`.
    pub fn any_queue(workspace: &str) -> Self {
        Self::Queue {
            workspace: workspace.to_owned(),
            agent: None,
        }
    }

    pub fn under(workspace: &str, project: Option<&str>) -> Self {
        Self::Under {
            workspace: workspace.to_owned(),
            project: project.map(str::to_owned),
        }
    }

    pub fn workspace(&self) -> &str {
        match self {
            Self::Context { workspace, .. }
            | Self::Run { workspace, .. }
            | Self::Queue { workspace, .. }
            | Self::Under { workspace, .. } => workspace,
        }
    }

    /// Whether a waiter on `self` must look again after `deleted` (an [`WakeKey::Under`]).
    pub fn is_under(&self, workspace: &str, project: Option<&str>) -> bool {
        let own_project = match self {
            Self::Context { project, .. } | Self::Run { project, .. } => project,
            Self::Queue { .. } | Self::Under { .. } => return false,
        };
        self.workspace() == workspace && project.is_none_or(|p| p == own_project)
    }

    /// The text form: `c/{w}/{p}/{context}`, `r/{w}/{p}/{run}`, `q/{w}/{agent}` (`q/{w}`
    /// for any agent), `u/{w}/{p}` (`u/{w}` for the whole workspace).
    pub fn encode(&self) -> String {
        // The optional last field, when present.
        let then = |head: String, last: &Option<String>| match last {
            Some(last) => format!("{head}/{last}"),
            None => head,
        };
        match self {
            Self::Context {
                workspace,
                project,
                context,
            } => format!("c/{workspace}/{project}/{context}"),
            Self::Run {
                workspace,
                project,
                run,
            } => format!("r/{workspace}/{project}/{run}"),
            Self::Queue { workspace, agent } => then(format!("q/{workspace}"), agent),
            Self::Under { workspace, project } => then(format!("u/{workspace}"), project),
        }
    }

    /// The key [`WakeKey::encode`] wrote; `None` for anything else.
    pub fn decode(text: &str) -> Option<Self> {
        let fields: Vec<&str> = text.split('/').collect();
        if fields
            .iter()
            .any(|f| f.is_empty() || f.contains(char::is_whitespace))
        {
            return None;
        }
        let owned = |i: usize| fields[i].to_owned();
        Some(match (fields[0], fields.len()) {
            ("c", 4) => Self::Context {
                workspace: owned(1),
                project: owned(2),
                context: owned(3),
            },
            ("r", 4) => Self::Run {
                workspace: owned(1),
                project: owned(2),
                run: owned(3),
            },
            ("q", 3) => Self::queue(fields[1], fields[2]),
            ("q", 2) => Self::any_queue(fields[1]),
            ("u", 3) => Self::under(fields[1], Some(fields[2])),
            ("u", 2) => Self::under(fields[1], None),
            _ => return None,
        })
    }

    /// Keys joined by newlines (one NOTIFY payload).
    pub fn encode_all<'a>(keys: impl IntoIterator<Item = &'a WakeKey>) -> String {
        let encoded: Vec<String> = keys.into_iter().map(WakeKey::encode).collect();
        encoded.join("\n")
    }

    /// The keys of [`WakeKey::encode_all`]'s text; lines that are not keys are skipped.
    pub fn decode_all(text: &str) -> impl Iterator<Item = WakeKey> + '_ {
        text.lines().filter_map(WakeKey::decode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<WakeKey> {
        vec![
            WakeKey::context("w", "p", "c"),
            WakeKey::run("w", "p", "0190f3a2-run"),
            WakeKey::queue("w", "echo"),
            WakeKey::any_queue("w"),
            WakeKey::under("w", Some("p")),
            WakeKey::under("w", None),
        ]
    }

    #[test]
    fn every_key_round_trips_through_its_text() {
        for key in all() {
            assert_eq!(WakeKey::decode(&key.encode()), Some(key.clone()), "{key:?}");
        }
        let text = WakeKey::encode_all(&all());
        assert_eq!(WakeKey::decode_all(&text).collect::<Vec<_>>(), all());
    }

    #[test]
    fn distinct_keys_have_distinct_texts() {
        let texts: std::collections::BTreeSet<String> = all().iter().map(WakeKey::encode).collect();
        assert_eq!(texts.len(), all().len());
    }

    #[test]
    fn anything_else_is_not_a_key() {
        for text in [
            "",
            "c/w/p",
            "c/w/p/c/x",
            "r/w//r",
            "x/w/p/c",
            "q",
            "u/w/p/q",
            "c/w/p/c d",
            "w/p/c",
            "run:w:r",
        ] {
            assert_eq!(WakeKey::decode(text), None, "{text:?}");
        }
        let mixed = "c/w/p/c\nping\nq/w";
        assert_eq!(
            WakeKey::decode_all(mixed).collect::<Vec<_>>(),
            [WakeKey::context("w", "p", "c"), WakeKey::any_queue("w")]
        );
    }

    #[test]
    fn deletes_reach_the_contexts_and_runs_under_them_only() {
        let context = WakeKey::context("w", "p", "c");
        let run = WakeKey::run("w", "p", "r");
        assert!(context.is_under("w", None) && context.is_under("w", Some("p")));
        assert!(run.is_under("w", None) && run.is_under("w", Some("p")));
        assert!(!context.is_under("w", Some("q")) && !run.is_under("v", None));
        assert!(!WakeKey::queue("w", "a").is_under("w", None));
    }
}
