//! A walk over a message's wire bytes, guided by the descriptor set: it finds text that
//! no database can store (U+0000 in any string field, at any depth, including the keys
//! and string values of a `google.protobuf.Struct`), and it says what is wrong with bytes
//! that prost refused to decode (truncated, invalid UTF-8, nested too deep, a wrong wire
//! type), naming the field by its path (`run.input[0].content`, `data/notes/0`).
//!
//! One table per message type, built once from [`crate::FILE_DESCRIPTOR_SET`], tells the
//! walk which field numbers hold strings and which hold messages, so every field of every
//! request is covered without a line of code per field: a field added to a `.proto` file
//! is checked the day it exists. The walk never allocates unless it finds something, and
//! the codec only runs it on requests that contain a zero byte at all (see
//! [`crate::codec`]).
//!
//! Other control characters are legal in every database and are not this module's
//! business: free text may carry them, and names, ids and display names have their own
//! rules in the server.

use std::{collections::HashMap, sync::LazyLock};

use prost::Message as _;

use prost_types::{
    DescriptorProto, FieldDescriptorProto, FileDescriptorSet,
    field_descriptor_proto::{Label, Type},
};

/// prost's recursion limit: a message nested deeper than this (the request itself is
/// level 0) does not decode. A JSON level of a `Struct` costs three message levels.
pub const MAX_NESTING: u32 = 100;

mod path;

pub use path::printable;
use path::{segment, shorten_path};

/// What is wrong with a message, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub problem: Problem,
    /// The field path, e.g. `run.input[0].content` or `data/notes/0`; empty for the
    /// message itself.
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// U+0000 inside a string field: valid protobuf, but not storable as text.
    Nul,
    InvalidUtf8,
    /// A length or a value runs past the end of its message.
    Truncated,
    /// Messages nested deeper than [`MAX_NESTING`].
    TooDeep,
    /// A field sent with a wire type its declared type cannot have.
    WrongWireType,
    /// A varint longer than ten bytes.
    InvalidVarint,
    /// A field key that is not one: field number 0, wire type 6 or 7, a stray end group.
    InvalidKey,
}

impl Problem {
    /// What the problem is, in words, for an error message or a field violation.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Nul => "must not contain U+0000 (NUL): no database stores it in text",
            Self::InvalidUtf8 => "is not valid UTF-8",
            Self::Truncated => "is truncated: a length or a value runs past the end of its message",
            Self::TooDeep => {
                "nests deeper than 100 messages (documents may nest at most 32 levels)"
            }
            Self::WrongWireType => "has a wire type that its declared type cannot have",
            Self::InvalidVarint => "holds a varint longer than ten bytes",
            Self::InvalidKey => {
                "holds an invalid field key (field number 0, wire type 6 or 7, or a stray end group)"
            }
        }
    }
}

/// The shape of every message of the descriptor set.
pub struct Schema {
    messages: Vec<Shape>,
    /// package → message name → index, for every message.
    by_name: HashMap<String, HashMap<String, usize>>,
}

/// How to find a message type's shape: by its `prost::Name` constants.
#[derive(Debug, Clone, Copy)]
pub struct MessageRef {
    index: usize,
    /// Whether some method takes this message as its request.
    pub is_request: bool,
}

struct Shape {
    /// Sorted by number.
    fields: Vec<Field>,
    kind: ShapeKind,
    is_request: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ShapeKind {
    Plain,
    /// A map's entry message: its key is shown by the map field's path segment.
    MapEntry,
    /// `google.protobuf.Struct`, `ListValue` and `Value`: inside them paths are JSON
    /// pointers (`data/notes/0`), as a document's own validation names them.
    Struct,
    ListValue,
    Value,
}

struct Field {
    number: u32,
    name: String,
    kind: FieldKind,
    repeated: bool,
    /// A map field (its entries' key is field 1).
    map: bool,
}

#[derive(Clone, Copy)]
enum FieldKind {
    Text,
    Bytes,
    Message(usize),
    Varint,
    Fixed64,
    Fixed32,
}

/// The schema of [`crate::FILE_DESCRIPTOR_SET`].
pub fn schema() -> &'static Schema {
    static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
        let set = FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET)
            .expect("the compiled descriptor set decodes");
        Schema::new(&set)
    });
    &SCHEMA
}

impl Schema {
    pub fn new(set: &FileDescriptorSet) -> Self {
        // Every message with its full name (".pkg.Outer.Inner"), nested ones included.
        let mut found: Vec<(String, String, &DescriptorProto)> = Vec::new();
        fn collect<'a>(
            package: &str,
            prefix: &str,
            messages: &'a [DescriptorProto],
            found: &mut Vec<(String, String, &'a DescriptorProto)>,
        ) {
            for message in messages {
                let name = format!("{prefix}{}", message.name());
                collect(package, &format!("{name}."), &message.nested_type, found);
                found.push((package.to_owned(), name, message));
            }
        }
        for file in &set.file {
            collect(file.package(), "", &file.message_type, &mut found);
        }
        let index: HashMap<String, usize> = found
            .iter()
            .enumerate()
            .map(|(i, (package, name, _))| (format!(".{package}.{name}"), i))
            .collect();
        let requests: Vec<&str> = set
            .file
            .iter()
            .flat_map(|f| &f.service)
            .flat_map(|s| &s.method)
            .map(|m| m.input_type())
            .collect();
        let messages = found
            .iter()
            .map(|(package, name, message)| {
                let full = format!(".{package}.{name}");
                let kind = match full.as_str() {
                    ".google.protobuf.Struct" => ShapeKind::Struct,
                    ".google.protobuf.ListValue" => ShapeKind::ListValue,
                    ".google.protobuf.Value" => ShapeKind::Value,
                    _ if message.options.as_ref().is_some_and(|o| o.map_entry()) => {
                        ShapeKind::MapEntry
                    }
                    _ => ShapeKind::Plain,
                };
                let mut fields: Vec<Field> = message
                    .field
                    .iter()
                    .filter_map(|f| field(f, &index, &found))
                    .collect();
                fields.sort_by_key(|f| f.number);
                Shape {
                    fields,
                    kind,
                    is_request: requests.contains(&full.as_str()),
                }
            })
            .collect();
        let mut by_name: HashMap<String, HashMap<String, usize>> = HashMap::new();
        for (i, (package, name, _)) in found.iter().enumerate() {
            by_name
                .entry(package.clone())
                .or_default()
                .insert(name.clone(), i);
        }
        Self { messages, by_name }
    }

    /// The message `package.name` (a `prost::Name`'s `PACKAGE` and `NAME`).
    pub fn message(&self, package: &str, name: &str) -> Option<MessageRef> {
        let index = *self.by_name.get(package)?.get(name)?;
        Some(MessageRef {
            index,
            is_request: self.messages[index].is_request,
        })
    }

    /// Walks `bytes` as an encoding of `message`. With `refuse_nul`, a string holding
    /// U+0000 is a fault; the walk otherwise accepts whatever prost would decode.
    pub fn check(&self, message: MessageRef, bytes: &[u8], refuse_nul: bool) -> Result<(), Fault> {
        let walk = Walk {
            schema: self,
            refuse_nul,
        };
        walk.message(message.index, bytes, 0).map_err(|trace| {
            let mut path = String::new();
            for segment in trace.segments.iter().rev() {
                path.push_str(segment);
            }
            Fault {
                problem: trace.problem,
                path: shorten_path(path.strip_prefix('.').unwrap_or(&path)),
            }
        })
    }
}

/// The walk's view of field `f`; `None` for a field it walks as unknown (a group, a
/// message outside the set).
fn field(
    f: &FieldDescriptorProto,
    index: &HashMap<String, usize>,
    found: &[(String, String, &DescriptorProto)],
) -> Option<Field> {
    let kind = match f.r#type() {
        Type::String => FieldKind::Text,
        Type::Bytes => FieldKind::Bytes,
        Type::Message => FieldKind::Message(*index.get(f.type_name())?),
        Type::Double | Type::Fixed64 | Type::Sfixed64 => FieldKind::Fixed64,
        Type::Float | Type::Fixed32 | Type::Sfixed32 => FieldKind::Fixed32,
        Type::Int64
        | Type::Uint64
        | Type::Int32
        | Type::Uint32
        | Type::Bool
        | Type::Enum
        | Type::Sint32
        | Type::Sint64 => FieldKind::Varint,
        // Proto2 groups: walked as unknown fields.
        Type::Group => return None,
    };
    let map = matches!(kind, FieldKind::Message(m)
        if found[m].2.options.as_ref().is_some_and(|o| o.map_entry()));
    Some(Field {
        number: u32::try_from(f.number()).ok()?,
        name: f.name().to_owned(),
        kind,
        repeated: f.label() == Label::Repeated,
        map,
    })
}

/// A fault on its way up: path segments are added innermost first.
struct Trace {
    problem: Problem,
    segments: Vec<String>,
}

impl From<Problem> for Box<Trace> {
    fn from(problem: Problem) -> Self {
        Box::new(Trace {
            problem,
            segments: Vec::new(),
        })
    }
}

struct Walk<'a> {
    schema: &'a Schema,
    refuse_nul: bool,
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

impl Walk<'_> {
    fn message(&self, index: usize, buf: &[u8], depth: u32) -> Result<(), Box<Trace>> {
        if depth > MAX_NESTING {
            return Err(Problem::TooDeep.into());
        }
        let shape = &self.schema.messages[index];
        let mut pos = 0;
        while pos < buf.len() {
            let start = pos;
            let (number, wire) = key(buf, &mut pos)?;
            let field = shape
                .fields
                .binary_search_by_key(&number, |f| f.number)
                .ok()
                .map(|i| &shape.fields[i]);
            let Some(field) = field else {
                skip(buf, &mut pos, number, wire, depth)?;
                continue;
            };
            if let Err(mut trace) = self.field(field, buf, &mut pos, wire, depth) {
                trace.segments.push(segment(shape, field, buf, start));
                return Err(trace);
            }
        }
        Ok(())
    }

    fn field(
        &self,
        field: &Field,
        buf: &[u8],
        pos: &mut usize,
        wire: u8,
        depth: u32,
    ) -> Result<(), Box<Trace>> {
        match (field.kind, wire) {
            (FieldKind::Varint, VARINT) => varint(buf, pos).map(drop),
            (FieldKind::Fixed64, FIXED64) => take(buf, pos, 8).map(drop),
            (FieldKind::Fixed32, FIXED32) => take(buf, pos, 4).map(drop),
            (FieldKind::Text, LEN) => {
                let body = delimited(buf, pos)?;
                let Ok(text) = std::str::from_utf8(body) else {
                    return Err(Problem::InvalidUtf8.into());
                };
                if self.refuse_nul && text.as_bytes().contains(&0) {
                    return Err(Problem::Nul.into());
                }
                Ok(())
            }
            (FieldKind::Bytes, LEN) => delimited(buf, pos).map(drop),
            (FieldKind::Message(index), LEN) => {
                let body = delimited(buf, pos)?;
                self.message(index, body, depth + 1)
            }
            // A packed repeated scalar.
            (FieldKind::Varint, LEN) if field.repeated => {
                let body = delimited(buf, pos)?;
                let mut at = 0;
                while at < body.len() {
                    varint(body, &mut at)?;
                }
                Ok(())
            }
            (FieldKind::Fixed64 | FieldKind::Fixed32, LEN) if field.repeated => {
                let width = if matches!(field.kind, FieldKind::Fixed64) {
                    8
                } else {
                    4
                };
                match delimited(buf, pos)?.len() % width {
                    0 => Ok(()),
                    _ => Err(Problem::Truncated.into()),
                }
            }
            _ => Err(Problem::WrongWireType.into()),
        }
    }
}

fn key(buf: &[u8], pos: &mut usize) -> Result<(u32, u8), Box<Trace>> {
    let key = u32::try_from(varint(buf, pos)?).map_err(|_| Problem::InvalidKey)?;
    let (number, wire) = (key >> 3, (key & 7) as u8);
    if number == 0 || wire > FIXED32 || wire == END_GROUP {
        return Err(Problem::InvalidKey.into());
    }
    Ok((number, wire))
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, Box<Trace>> {
    let mut value = 0u64;
    for shift in 0..10 {
        let Some(&byte) = buf.get(*pos) else {
            return Err(Problem::Truncated.into());
        };
        *pos += 1;
        value |= u64::from(byte & 0x7f) << (7 * shift);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(Problem::InvalidVarint.into())
}

fn take<'b>(buf: &'b [u8], pos: &mut usize, len: usize) -> Result<&'b [u8], Box<Trace>> {
    let end = pos
        .checked_add(len)
        .filter(|end| *end <= buf.len())
        .ok_or(Problem::Truncated)?;
    let body = &buf[*pos..end];
    *pos = end;
    Ok(body)
}

fn delimited<'b>(buf: &'b [u8], pos: &mut usize) -> Result<&'b [u8], Box<Trace>> {
    let len = varint(buf, pos)?;
    take(
        buf,
        pos,
        usize::try_from(len).map_err(|_| Problem::Truncated)?,
    )
}

/// Skips a field this walk has no shape for (an unknown field, as prost does).
fn skip(buf: &[u8], pos: &mut usize, number: u32, wire: u8, depth: u32) -> Result<(), Box<Trace>> {
    match wire {
        VARINT => varint(buf, pos).map(drop),
        FIXED64 => take(buf, pos, 8).map(drop),
        FIXED32 => take(buf, pos, 4).map(drop),
        LEN => delimited(buf, pos).map(drop),
        START_GROUP => {
            if depth >= MAX_NESTING {
                return Err(Problem::TooDeep.into());
            }
            loop {
                let raw = varint(buf, pos)?;
                let (inner, inner_wire) = ((raw >> 3) as u32, (raw & 7) as u8);
                if inner_wire == END_GROUP && inner == number {
                    return Ok(());
                }
                if inner_wire == END_GROUP {
                    return Err(Problem::InvalidKey.into());
                }
                if inner == 0 || inner_wire > FIXED32 {
                    return Err(Problem::InvalidKey.into());
                }
                skip(buf, pos, inner, inner_wire, depth + 1)?;
            }
        }
        _ => Err(Problem::InvalidKey.into()),
    }
}
