//! Diffs as JSON Patch operations (`contexts diff`, `agents diff`): the proto3 JSON of a
//! DiffContextVersionsResponse as JSON or YAML, or one line per operation in a table,
//! coloured on a terminal (green add, red remove, yellow replace).

use serde_json::Value;

use super::{Failure, Format, output::Printer, output::write_out};

/// Prints `{"operations": [...]}`.
pub fn print(out: &Printer, diff: &Value) -> Result<(), Failure> {
    match out.format {
        Format::Json => out.json(diff),
        Format::Yaml => out.yaml(diff),
        Format::Table => {
            let empty = Vec::new();
            let ops = diff["operations"].as_array().unwrap_or(&empty);
            if ops.is_empty() {
                return write_out("no changes\n");
            }
            let text: String = ops.iter().map(|op| line(out, op) + "\n").collect();
            write_out(&text)
        }
    }
}

fn line(out: &Printer, op: &Value) -> String {
    let path = op["path"].as_str().unwrap_or("");
    let path = if path.is_empty() { "/" } else { path };
    let from = op["from"].as_str().unwrap_or("");
    let value = || match op.get("value") {
        Some(v) => format!(" = {}", short(v)),
        None => String::new(),
    };
    match op["op"].as_str().unwrap_or("") {
        "add" => out.paint("32", &format!("+ {path}{}", value())),
        "remove" => out.paint("31", &format!("- {path}")),
        "replace" => out.paint("33", &format!("~ {path}{}", value())),
        "move" => out.paint("36", &format!("> {from} -> {path}")),
        "copy" => out.paint("36", &format!("= {from} -> {path}")),
        other => format!("{other} {path}{}", value()),
    }
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}
