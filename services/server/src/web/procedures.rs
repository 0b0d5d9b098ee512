//! What the HTTP/JSON front knows of each method, from the descriptor sets the server
//! serves: its request and response types, to transcode proto3 JSON to and from the
//! protobuf encoding the services speak, and the error detail types, to show a failed
//! call's details as JSON (Connect's `debug` field) beside their encoding.
//!
//! The JSON mapping is protobuf's canonical one (prost-reflect's): lowerCamelCase names
//! out, either spelling in, enums by name, 64-bit integers as strings, well-known types
//! in their JSON forms (a `Struct` is a JSON object, a `FieldMask` a comma-separated
//! string, a `Duration` `"30s"`). Unknown fields in a request are refused, so that a
//! misspelt field is an error rather than silently ignored.

use std::collections::HashMap;

use prost::Message as _;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor};
use tonic::{Code, Status};

/// One method, as `POST /{package}.{Service}/{Method}` reaches it.
pub struct Procedure {
    pub input: MessageDescriptor,
    pub output: MessageDescriptor,
    /// Server or client streams: gRPC and gRPC-Web only.
    pub streaming: bool,
}

/// Every method of the served descriptor sets, by path.
pub struct Procedures {
    pool: DescriptorPool,
    by_path: HashMap<String, Procedure>,
}

/// Connect's JSON error.
#[derive(serde::Serialize)]
struct ConnectError<'a> {
    code: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    details: Vec<ErrorDetail>,
}

#[derive(serde::Serialize)]
struct ErrorDetail {
    r#type: String,
    value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    debug: Option<serde_json::Value>,
}

/// `google.rpc.Status`, as `grpc-status-details-bin` carries it.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

impl Procedures {
    pub fn new() -> Self {
        let mut pool = DescriptorPool::new();
        for set in [
            agentry_proto::FILE_DESCRIPTOR_SET,
            tonic_types::pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ] {
            pool.decode_file_descriptor_set(set)
                .expect("the served descriptor sets are valid");
        }
        let by_path = pool
            .services()
            .flat_map(|service| service.methods().collect::<Vec<_>>())
            .map(|method| {
                let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
                let procedure = Procedure {
                    input: method.input(),
                    output: method.output(),
                    streaming: method.is_server_streaming() || method.is_client_streaming(),
                };
                (path, procedure)
            })
            .collect();
        Self { pool, by_path }
    }

    pub fn get(&self, path: &str) -> Option<&Procedure> {
        self.by_path.get(path)
    }

    /// A Connect error body: `{"code", "message", "details": [{"type", "value",
    /// "debug"}]}`, `value` the detail's encoding (base64, unpadded) and `debug` its JSON.
    pub fn error_json(&self, status: &Status) -> Vec<u8> {
        use base64::Engine as _;
        let decoded = RpcStatus::decode(status.details()).unwrap_or_default();
        let details = decoded
            .details
            .iter()
            .map(|any| {
                let name = any.type_url.rsplit('/').next().unwrap_or_default();
                ErrorDetail {
                    r#type: name.to_owned(),
                    value: base64::engine::general_purpose::STANDARD_NO_PAD.encode(&any.value),
                    debug: self.debug(name, &any.value),
                }
            })
            .collect();
        let body = ConnectError {
            code: code_name(status.code()),
            message: status.message(),
            details,
        };
        serde_json::to_vec(&body).expect("an error serializes")
    }

    fn debug(&self, type_name: &str, value: &[u8]) -> Option<serde_json::Value> {
        let descriptor = self.pool.get_message_by_name(type_name)?;
        let message = DynamicMessage::decode(descriptor, value).ok()?;
        serde_json::to_value(&message).ok()
    }
}

/// A request's JSON, as the protobuf encoding of `input`. An empty body is the empty
/// message, as Connect clients send it.
pub fn json_to_proto(input: &MessageDescriptor, json: &[u8]) -> Result<Vec<u8>, String> {
    if json.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let message = DynamicMessage::deserialize_with_options(
        input.clone(),
        &mut deserializer,
        &DeserializeOptions::new(),
    )
    .map_err(|e| e.to_string())?;
    deserializer.end().map_err(|e| e.to_string())?;
    Ok(message.encode_to_vec())
}

/// A response's encoding, as the JSON of `output`.
pub fn proto_to_json(output: &MessageDescriptor, bytes: &[u8]) -> Result<Vec<u8>, String> {
    use serde::Serialize as _;
    let message = DynamicMessage::decode(output.clone(), bytes).map_err(|e| e.to_string())?;
    let mut serializer = serde_json::Serializer::with_formatter(Vec::new(), WholeNumbers);
    message
        .serialize(&mut serializer)
        .map_err(|e| e.to_string())?;
    Ok(serializer.into_inner())
}

/// Writes whole floating-point numbers without a fraction (`1`, not serde_json's `1.0`),
/// as protobuf's JSON printers do: a document's `{"a": 1}` (a `Value`, a double) reads
/// back as it was written.
struct WholeNumbers;

impl serde_json::ser::Formatter for WholeNumbers {
    fn write_f64<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        value: f64,
    ) -> std::io::Result<()> {
        // Exact integers only (|value| < 2^53), and not -0.
        if value.fract() == 0.0 && value.abs() < 9_007_199_254_740_992.0 && value != 0.0
            || value == 0.0 && value.is_sign_positive()
        {
            write!(writer, "{}", value as i64)
        } else {
            serde_json::ser::CompactFormatter.write_f64(writer, value)
        }
    }

    fn write_f32<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        value: f32,
    ) -> std::io::Result<()> {
        self.write_f64(writer, f64::from(value))
    }
}

/// Connect's name of a code.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The HTTP status of a failed call, as Connect maps codes.
pub fn http_status(code: Code) -> http::StatusCode {
    use http::StatusCode as S;
    match code {
        Code::Ok => S::OK,
        Code::Cancelled => S::from_u16(499).expect("499 is a status code"),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => S::BAD_REQUEST,
        Code::DeadlineExceeded => S::GATEWAY_TIMEOUT,
        Code::NotFound => S::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => S::CONFLICT,
        Code::PermissionDenied => S::FORBIDDEN,
        Code::ResourceExhausted => S::TOO_MANY_REQUESTS,
        Code::Unimplemented => S::NOT_IMPLEMENTED,
        Code::Unknown | Code::Internal | Code::DataLoss => S::INTERNAL_SERVER_ERROR,
        Code::Unavailable => S::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => S::UNAUTHORIZED,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tonic_types::{ErrorDetails, StatusExt as _};

    use super::*;

    #[test]
    fn every_agentry_method_is_known() {
        let procedures = Procedures::new();
        let create = procedures
            .get("/agentry.v1.RegistryService/CreateWorkspace")
            .expect("CreateWorkspace is served");
        assert!(!create.streaming);
        assert_eq!(create.output.full_name(), "agentry.v1.Workspace");
        assert!(
            procedures
                .get("/agentry.v1.ExecutionService/StreamRunEvents")
                .expect("StreamRunEvents is served")
                .streaming
        );
        assert!(procedures.get("/grpc.health.v1.Health/Check").is_some());
    }

    /// The input of the method at `path`.
    fn input(path: &str) -> MessageDescriptor {
        Procedures::new().get(path).expect("served").input.clone()
    }

    #[test]
    fn json_requests_round_trip_and_unknown_fields_are_refused() {
        let create = input("/agentry.v1.RegistryService/CreateWorkspace");
        let proto = json_to_proto(
            &create,
            br#"{"workspaceId":"acme","workspace":{"display_name":"Acme"}}"#,
        )
        .expect("valid JSON");
        let request = agentry_proto::v1::CreateWorkspaceRequest::decode(proto.as_slice()).unwrap();
        assert_eq!(request.workspace_id, "acme");
        assert_eq!(request.workspace.unwrap().display_name, "Acme");
        let error = json_to_proto(&create, br#"{"workspaceIdd":"acme"}"#).unwrap_err();
        assert!(error.contains("workspaceIdd"), "{error}");
        assert!(json_to_proto(&create, b"{").is_err());
        assert_eq!(json_to_proto(&create, b" ").unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn whole_numbers_print_without_a_fraction() {
        // A CreateContextRequest's `data` is a Value; any message with one will do.
        let version = input("/agentry.v1.ContextService/CreateContext");
        let proto = json_to_proto(
            &version,
            br#"{"data": {"one": 1, "half": 0.5, "zero": 0, "minus": -0.0, "big": 1e300}}"#,
        )
        .unwrap();
        let json = proto_to_json(&version, &proto).unwrap();
        let text = String::from_utf8(json).unwrap();
        assert!(text.contains(r#""one":1,"#), "{text}");
        assert!(text.contains(r#""half":0.5"#), "{text}");
        assert!(text.contains(r#""zero":0"#), "{text}");
        assert!(text.contains(r#""minus":-0.0"#), "{text}");
        assert!(text.contains(r#""big":1e+300"#), "{text}");
    }

    #[test]
    fn errors_carry_their_details_encoded_and_as_json() {
        let mut details = ErrorDetails::new();
        details.set_error_info("INVALID_NAME", "agentry.dev", HashMap::new());
        details.add_bad_request_violation("name", "must be a slug");
        let status = Status::with_error_details(Code::InvalidArgument, "bad name", details);
        let body: serde_json::Value =
            serde_json::from_slice(&Procedures::new().error_json(&status)).unwrap();
        assert_eq!(body["code"], "invalid_argument");
        assert_eq!(body["message"], "bad name");
        assert_eq!(body["details"][0]["type"], "google.rpc.ErrorInfo");
        assert_eq!(body["details"][0]["debug"]["reason"], "INVALID_NAME");
        assert!(body["details"][0]["value"].as_str().is_some());
        assert_eq!(
            body["details"][1]["debug"]["fieldViolations"][0]["field"],
            "name"
        );
    }
}
