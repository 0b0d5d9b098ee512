//! Proto ↔ domain conversions of contexts, versions and patches.

use agentry_core::{
    Error, FieldViolation, Reason, Result,
    document::{PatchOp, PatchOpKind},
    model::{Context, ContextOp, ContextVersion},
    names::ContextName,
};
use agentry_proto::v1 as pb;

use crate::convert::{json_to_value, timestamp, value_to_json};

pub fn context_to_proto(c: Context) -> pb::Context {
    let prefix = format!("workspaces/{}/projects/{}", c.workspace, c.project);
    pb::Context {
        name: format!("{prefix}/contexts/{}", c.id),
        owner: crate::convert::child_name(&prefix, "instances", c.owner.as_deref()),
        description: c.description,
        keep_last: c.keep_last,
        head_version: c.head_version,
        first_version: if c.head_version == 0 {
            0
        } else {
            c.floor_version
        },
        labels: c.labels,
        create_time: timestamp(c.create_time),
        update_time: timestamp(c.update_time),
    }
}

fn op_to_proto(op: ContextOp) -> pb::ContextOp {
    match op {
        ContextOp::Create => pb::ContextOp::Create,
        ContextOp::Replace => pb::ContextOp::Replace,
        ContextOp::MergePatch => pb::ContextOp::MergePatch,
        ContextOp::JsonPatch => pb::ContextOp::JsonPatch,
        ContextOp::Rollback => pb::ContextOp::Rollback,
    }
}

pub fn op_from_name(name: &str) -> Option<ContextOp> {
    ContextOp::parse(name.trim_start_matches("CONTEXT_OP_"))
}

pub fn version_to_proto(name: &ContextName, v: ContextVersion) -> pb::ContextVersion {
    pb::ContextVersion {
        name: format!("{name}/versions/{}", v.version),
        version: v.version,
        op: op_to_proto(v.op) as i32,
        rollback_of: v.rollback_of,
        data: v.data.as_ref().map(json_to_value),
        sha256: v.sha256,
        size_bytes: v.size_bytes,
        author: v.author,
        description: v.description,
        request_id: v.request_id.unwrap_or_default(),
        create_time: timestamp(v.create_time),
    }
}

pub fn patch_from_proto(patch: pb::JsonPatch) -> Result<Vec<PatchOp>> {
    if patch.operations.len() > 10_000 {
        return Err(Error::invalid("json_patch", "at most 10000 operations"));
    }
    patch
        .operations
        .into_iter()
        .enumerate()
        .map(|(i, op)| {
            let field = format!("json_patch.operations[{i}]");
            let kind = match op.op.as_str() {
                "add" => PatchOpKind::Add,
                "remove" => PatchOpKind::Remove,
                "replace" => PatchOpKind::Replace,
                "move" => PatchOpKind::Move,
                "copy" => PatchOpKind::Copy,
                "test" => PatchOpKind::Test,
                _ => {
                    let field = format!("{field}.op");
                    let description = "one of add, remove, replace, move, copy, test";
                    return Err(Error::invalid_many(
                        Reason::InvalidPatch,
                        format!("{field}: {description}"),
                        vec![FieldViolation::new(field, description)],
                    ));
                }
            };
            Ok(PatchOp {
                op: kind,
                path: op.path,
                from: matches!(kind, PatchOpKind::Move | PatchOpKind::Copy).then_some(op.from),
                value: op
                    .value
                    .map(|v| value_to_json(&format!("{field}.value"), v, 0))
                    .transpose()?,
            })
        })
        .collect()
}

pub fn patch_to_proto(ops: Vec<PatchOp>) -> Vec<pb::JsonPatchOperation> {
    ops.into_iter()
        .map(|op| pb::JsonPatchOperation {
            op: op.op.as_str().to_owned(),
            path: op.path,
            from: op.from.unwrap_or_default(),
            value: op.value.as_ref().map(json_to_value),
        })
        .collect()
}
