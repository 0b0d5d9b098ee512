//! Unary ContextService handlers. READER reads; ADMIN, DEVELOPER and WORKER write;
//! deleting a context (its whole history) takes ADMIN or DEVELOPER.

use agentry_core::{
    Error, Result, document,
    model::ContextOp,
    names::{ContextName, InstanceName, ProjectName},
    port::{ContextChange, ContextWrite, Mutation, NewContext, VersionFilter},
};
use agentry_proto::v1::{self as pb, write_context_request::Change};

use super::convert::{
    context_to_proto, op_from_name, patch_from_proto, patch_to_proto, version_to_proto,
};
use crate::{
    auth::Action,
    call::Call,
    convert::{self, filter_error, value_to_json},
    paging::TimeBounds,
    request::RequestCtx,
};

fn keep_last(value: i32) -> Result<i32> {
    if !(0..=1_000_000).contains(&value) {
        return Err(Error::invalid(
            "context.keep_last",
            "between 1 and 1000000 (0: the workspace default)",
        ));
    }
    Ok(value)
}

/// The owner instance's id, which must be in the context's project; none when empty.
fn owner(project: &ProjectName, owner: &str) -> Result<Option<String>> {
    if owner.is_empty() {
        return Ok(None);
    }
    let instance = InstanceName::parse("context.owner", owner)?;
    if instance.project() != *project {
        return Err(Error::invalid(
            "context.owner",
            "the owner must be an instance of the context's project",
        ));
    }
    Ok(Some(instance.instance))
}

fn document_value(field: &str, value: prost_types::Value) -> Result<serde_json::Value> {
    let value = value_to_json(field, value, 0)?;
    if !value.is_object() {
        return Err(Error::invalid(
            field,
            "a context document must be a JSON object",
        ));
    }
    Ok(value)
}

fn expected_version(value: Option<i64>) -> Result<Option<i64>> {
    match value {
        Some(v) if v < 0 => Err(Error::invalid("expected_version", "must not be negative")),
        other => Ok(other),
    }
}

pub async fn create_context(ctx: &Call<'_>, req: pb::CreateContextRequest) -> Result<pb::Context> {
    let (parent, name, m) = ctx.create(&req, Action::WriteContext)?;
    let c = req.context.unwrap_or_default();
    let new = NewContext {
        owner: owner(&parent, &c.owner)?,
        description: convert::text("context.description", c.description)?,
        keep_last: keep_last(c.keep_last)?,
        labels: convert::labels("context.labels", c.labels)?,
        data: req.data.map(|d| document_value("data", d)).transpose()?,
        name: name.clone(),
    };
    let (context, _) = ctx.store.create_context(&m, new).await?;
    crate::metrics::context_written("create");
    Ok(context_to_proto(context))
}

/// ListContexts' filter: `owner = "…/instances/…"`, an instance of the project, or none
/// (`owner = ""` picks the contexts without an owner).
pub fn owner_filter(parent: &ProjectName, text: &str) -> Result<Option<String>> {
    convert::only_term(text, "owner", "workspaces/w/projects/p/instances/i")?
        .map(|value| {
            owner(parent, value)
                .map(Option::unwrap_or_default)
                .map_err(|_| Error::invalid("filter", "owner must be an instance of this project"))
        })
        .transpose()
}

async fn write(
    ctx: &RequestCtx,
    m: Mutation,
    name: &ContextName,
    write: ContextWrite,
) -> Result<pb::WriteContextResponse> {
    let outcome = ctx.store.write_context(&m, name, write).await?;
    crate::metrics::context_written(match (outcome.noop, outcome.version.op) {
        (true, _) => "noop",
        (false, ContextOp::Create) => "create",
        (false, ContextOp::Replace) => "replace",
        (false, ContextOp::MergePatch) => "merge_patch",
        (false, ContextOp::JsonPatch) => "json_patch",
        (false, ContextOp::Rollback) => "rollback",
    });
    Ok(pb::WriteContextResponse {
        version: Some(version_to_proto(name, outcome.version)),
        noop: outcome.noop,
    })
}

pub async fn write_context(
    ctx: &Call<'_>,
    req: pb::WriteContextRequest,
) -> Result<pb::WriteContextResponse> {
    let name: ContextName = ctx.authorize("name", &req.name, Action::WriteContext)?;
    let m = ctx.mutation_of(&name, &req)?;
    let change = match req.change {
        None => {
            return Err(Error::invalid(
                "change",
                "set exactly one of data, merge_patch, json_patch",
            ));
        }
        Some(Change::Data(data)) => ContextChange::Replace(document_value("data", data)?),
        Some(Change::MergePatch(patch)) => {
            ContextChange::MergePatch(value_to_json("merge_patch", patch, 0)?)
        }
        Some(Change::JsonPatch(patch)) => ContextChange::JsonPatch(patch_from_proto(patch)?),
    };
    let update = ContextWrite {
        change,
        expected_version: expected_version(req.expected_version)?,
        description: convert::text("description", req.description)?,
    };
    write(ctx, m, &name, update).await
}

pub async fn rollback_context(
    ctx: &Call<'_>,
    req: pb::RollbackContextRequest,
) -> Result<pb::WriteContextResponse> {
    let name: ContextName = ctx.authorize("name", &req.name, Action::WriteContext)?;
    if req.target_version < 1 {
        return Err(Error::invalid(
            "target_version",
            "must be a version (1 or more)",
        ));
    }
    let m = ctx.mutation_of(&name, &req)?;
    let update = ContextWrite {
        change: ContextChange::Rollback(req.target_version),
        expected_version: expected_version(req.expected_version)?,
        description: convert::text("description", req.description)?,
    };
    write(ctx, m, &name, update).await
}

pub(super) fn version_number(field: &str, value: i64) -> Result<Option<i64>> {
    match value {
        0 => Ok(None),
        v if v < 0 => Err(Error::invalid(field, "must not be negative")),
        v => Ok(Some(v)),
    }
}

/// `author = "…" AND op = MERGE_PATCH AND create_time > "RFC 3339"`.
fn version_filter(text: &str) -> Result<VersionFilter> {
    const SUPPORTED: &str =
        "author = \"…\", op = MERGE_PATCH, create_time > \"RFC 3339\", create_time < \"…\"";
    let mut filter = VersionFilter::default();
    let times = TimeBounds::filter(text, SUPPORTED, |key, operator, value| {
        match (key, operator) {
            ("author", "=") => filter.author = Some(value.to_owned()),
            ("op", "=") => {
                let op = op_from_name(value);
                filter.op = Some(op.ok_or_else(|| filter_error("unknown op", SUPPORTED))?)
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    filter.created = times.into();
    Ok(filter)
}

pub async fn list_context_versions(
    ctx: &Call<'_>,
    req: pb::ListContextVersionsRequest,
) -> Result<pb::ListContextVersionsResponse> {
    let name: ContextName = ctx.authorize("name", &req.name, Action::Read)?;
    let full = match pb::ContextVersionView::try_from(req.view) {
        Ok(pb::ContextVersionView::Full) => true,
        Ok(_) => false,
        Err(_) => return Err(Error::invalid("view", "BASIC or FULL")),
    };
    let filter = VersionFilter {
        full,
        ..version_filter(&req.filter)?
    };
    let scope = format!("ListContextVersions {name} {full} {}", req.filter);
    let page = ctx.page_of(&scope, &req)?;
    let listed = ctx
        .store
        .list_context_versions(&name, &filter, &page)
        .await?;
    Ok(ctx.respond(&scope, listed, |v| version_to_proto(&name, v)))
}

pub async fn diff_context_versions(
    ctx: &Call<'_>,
    req: pb::DiffContextVersionsRequest,
) -> Result<pb::DiffContextVersionsResponse> {
    let name: ContextName = ctx.authorize("name", &req.name, Action::Read)?;
    let from = version_number("from_version", req.from_version)?
        .ok_or_else(|| Error::invalid("from_version", "required"))?;
    let to = version_number("to_version", req.to_version)?
        .ok_or_else(|| Error::invalid("to_version", "required"))?;
    let (from, to) = tokio::try_join!(
        ctx.store.read_context(&name, from),
        ctx.store.read_context(&name, to)
    )?;
    let operations = document::diff(&from.data.unwrap_or_default(), &to.data.unwrap_or_default());
    Ok(pb::DiffContextVersionsResponse {
        operations: patch_to_proto(operations),
    })
}
