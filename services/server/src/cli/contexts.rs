//! `agentry contexts …`: versioned JSON documents of a project.

use std::path::PathBuf;

use agentry_proto::v1 as pb;
use clap::{Args, Subcommand};
use serde_json::Value;

use super::named::{Create, Named};
use super::{
    Failure, Format,
    conn::Client,
    diff,
    follow::follow,
    listing::{Paging, print_all},
    output::{cell, from_json, to_json, write_out},
    parse_document, read_document,
    registry::label,
    status::fail,
};

#[derive(Subcommand, Debug)]
pub enum ContextsCmd {
    /// Creates a context in --project with its first version.
    Create(CreateArgs),
    /// Gets a context (its metadata).
    Get { name: String },
    /// Lists the contexts of --project.
    List {
        /// Only those owned by this instance
        #[arg(long)]
        owner: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
    /// Deletes a context and its history.
    Delete { name: String },
    /// Prints the document at the head, or at --version N.
    Read {
        name: String,
        #[arg(long, default_value_t = 0)]
        version: i64,
    },
    /// Appends a version: a whole document, a merge patch or a JSON patch.
    Write(WriteArgs),
    /// The versions, newest first.
    Log {
        name: String,
        #[command(flatten)]
        paging: Paging,
    },
    /// What changed from version A to version B, as JSON Patch operations.
    Diff { name: String, a: i64, b: i64 },
    /// Appends a version with the document of TARGET.
    Rollback {
        name: String,
        target: i64,
        /// Refuse unless the head is still this version
        #[arg(long)]
        expected_version: Option<i64>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Prints new versions as they are written, until interrupted.
    Watch {
        name: String,
        /// Start after this version (0: every retained one) [default: only new ones]
        #[arg(long)]
        after: Option<i64>,
    },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    id: String,
    /// The first document, from a JSON or YAML file (`-` for stdin) [default: {}]
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// The instance that owns it
    #[arg(long)]
    owner: Option<String>,
    #[arg(long, default_value = "")]
    description: String,
    /// Versions to keep (0: the server's default)
    #[arg(long, default_value_t = 0)]
    keep_last: i32,
    /// A label KEY=VALUE (repeatable)
    #[arg(long = "label", value_parser = label)]
    labels: Vec<(String, String)>,
}

#[derive(Args, Debug)]
pub struct WriteArgs {
    name: String,
    /// The new document, from a JSON or YAML file (`-` for stdin)
    #[arg(
        short = 'f',
        long = "file",
        required_unless_present_any = ["merge_patch", "json_patch"],
        conflicts_with_all = ["merge_patch", "json_patch"]
    )]
    file: Option<PathBuf>,
    /// An RFC 7396 merge patch, as JSON
    #[arg(long, conflicts_with = "json_patch")]
    merge_patch: Option<String>,
    /// An RFC 6902 JSON patch (an array of operations), as JSON
    #[arg(long)]
    json_patch: Option<String>,
    /// Refuse unless the head is still this version
    #[arg(long)]
    expected_version: Option<i64>,
    #[arg(long, default_value = "")]
    description: String,
}

fn json_arg(flag: &str, text: &str) -> Result<Value, Failure> {
    parse_document(text).map_err(|e| fail!("{flag}: {e}"))
}

fn change(args: &WriteArgs) -> Result<pb::write_context_request::Change, Failure> {
    use pb::write_context_request::Change;
    if let Some(path) = &args.file {
        return Ok(Change::Data(crate::convert::json_to_value(&read_document(
            path,
        )?)));
    }
    if let Some(text) = &args.merge_patch {
        let patch = json_arg("--merge-patch", text)?;
        return Ok(Change::MergePatch(crate::convert::json_to_value(&patch)));
    }
    let text = args.json_patch.as_deref().unwrap_or("[]");
    let operations = json_arg("--json-patch", text)?;
    let patch: pb::JsonPatch = from_json(
        serde_json::json!({ "operations": operations }),
        "--json-patch",
    )?;
    Ok(Change::JsonPatch(patch))
}

pub async fn run(c: Client, command: ContextsCmd) -> Result<(), Failure> {
    let mut contexts = c.contexts();
    let name_of = |arg: &str| c.names.in_project("contexts", arg);
    match command {
        ContextsCmd::Create(args) => create(&c, args).await,
        ContextsCmd::Get { name } => c.send(pb::GetContextRequest::named(name_of(&name)?)).await,
        ContextsCmd::List { owner, paging } => list(&c, owner, &paging).await,
        ContextsCmd::Delete { name } => {
            c.delete(pb::DeleteContextRequest::named(name_of(&name)?))
                .await
        }
        ContextsCmd::Read { name, version } => {
            let request = pb::ReadContextRequest {
                name: name_of(&name)?,
                version,
            };
            let read = contexts.read_context(request).await?.into_inner();
            if c.out.format == Format::Table {
                // On a terminal, the document is what one reads a context for.
                let data = to_json(&read).get("data").cloned().unwrap_or(Value::Null);
                c.out.json(&data)
            } else {
                c.out.print(&read)
            }
        }
        ContextsCmd::Write(args) => {
            let request = pb::WriteContextRequest {
                name: name_of(&args.name)?,
                change: Some(change(&args)?),
                expected_version: args.expected_version,
                description: args.description.clone(),
                ..Default::default()
            };
            c.show(contexts.write_context(request)).await
        }
        ContextsCmd::Log { name, paging } => log(&c, name_of(&name)?, &paging).await,
        ContextsCmd::Diff { name, a, b } => {
            let request = pb::DiffContextVersionsRequest {
                name: name_of(&name)?,
                from_version: a,
                to_version: b,
            };
            let answer = contexts.diff_context_versions(request).await?.into_inner();
            print_diff(&c, &answer)
        }
        ContextsCmd::Rollback {
            name,
            target,
            expected_version,
            description,
        } => {
            let request = pb::RollbackContextRequest {
                name: name_of(&name)?,
                target_version: target,
                expected_version,
                description,
                ..Default::default()
            };
            c.show(contexts.rollback_context(request)).await
        }
        ContextsCmd::Watch { name, after } => watch(&c, name_of(&name)?, after).await,
    }
}

/// Lists the contexts of --project, of one owner if asked.
async fn list(c: &Client, owner: Option<String>, paging: &Paging) -> Result<(), Failure> {
    let request = pb::ListContextsRequest {
        parent: c.names.project()?,
        filter: c.names.instance_filter("owner", owner)?,
        ..Default::default()
    };
    print_all(c, paging, request).await
}

/// Lists the versions of a context, newest first.
async fn log(c: &Client, name: String, paging: &Paging) -> Result<(), Failure> {
    let request = pb::ListContextVersionsRequest {
        name,
        view: pb::ContextVersionView::Basic as i32,
        ..Default::default()
    };
    print_all(c, paging, request).await
}

/// A diff as `diff::print` shows it (no operations at all is an empty list).
fn print_diff(c: &Client, answer: &pb::DiffContextVersionsResponse) -> Result<(), Failure> {
    let mut value = to_json(answer);
    if value.get("operations").is_none() {
        value["operations"] = Value::Array(Vec::new());
    }
    diff::print(&c.out, &value)
}

async fn create(c: &Client, args: CreateArgs) -> Result<(), Failure> {
    let data = match args.file {
        Some(path) => read_document(&path)?,
        None => serde_json::json!({}),
    };
    let context = pb::Context {
        owner: args
            .owner
            .map(|o| c.names.in_project("instances", &o))
            .transpose()?
            .unwrap_or_default(),
        description: args.description,
        keep_last: args.keep_last,
        labels: args.labels.into_iter().collect(),
        ..Default::default()
    };
    let request = pb::CreateContextRequest {
        data: Some(crate::convert::json_to_value(&data)),
        ..Create::create(c.names.project()?, args.id, context)
    };
    c.show(c.contexts().create_context(request)).await
}

async fn watch(c: &Client, name: String, after: Option<i64>) -> Result<(), Failure> {
    // "Only new ones" starts after the head as it is now, so that a resume after a
    // dropped connection misses nothing written in between.
    let start = match after {
        Some(after) => after,
        None => {
            let request = pb::GetContextRequest { name: name.clone() };
            c.contexts()
                .get_context(request)
                .await?
                .into_inner()
                .head_version
        }
    };
    if c.out.format == Format::Table {
        write_out("VERSION   OP   AUTHOR   CREATED\n")?;
    }
    let open = |cursor: i64| {
        let mut contexts = c.contexts();
        let request = pb::WatchContextRequest {
            name: name.clone(),
            after_version: cursor,
            view: pb::ContextVersionView::Full as i32,
        };
        async move { contexts.watch_context(request).await }
    };
    let out = c.out;
    let on_item = |item: pb::WatchContextResponse| {
        let version = item.version.unwrap_or_default();
        let value = to_json(&version);
        out.stream_item(&value, || {
            format!(
                "{}   {}   {}   {}",
                cell(&value, "version"),
                cell(&value, "op"),
                cell(&value, "author"),
                cell(&value, "createTime")
            )
        })?;
        Ok(version.version)
    };
    follow(start, open, on_item).await
}
