//! Instance configs: the agent revision's `default_config` with the instance's `config`
//! merged over it (RFC 7396), validated against the revision's `config_schema`.
//! Schemas never fetch remote `$ref`s: the validator is built without a retriever, so an
//! external reference makes the schema invalid rather than making the server call out.

use serde_json::Value;

use crate::{Error, FieldViolation, Reason, Result, json::merge_patch};

/// Checks that `schema` is a usable JSON Schema.
pub fn check_schema(field: &str, schema: &Value) -> Result<()> {
    compile(field, schema).map(|_| ())
}

fn compile(field: &str, schema: &Value) -> Result<jsonschema::Validator> {
    if !schema.is_object() {
        return Err(Error::invalid(field, "a JSON Schema must be an object"));
    }
    if let Err(error) = jsonschema::meta::validate(schema) {
        return Err(schema_error(
            field,
            &error.instance_path().to_string(),
            &error.to_string(),
        ));
    }
    jsonschema::validator_for(schema).map_err(|error| {
        schema_error(
            field,
            &error.instance_path().to_string(),
            &error.to_string(),
        )
    })
}

fn schema_error(field: &str, pointer: &str, description: &str) -> Error {
    Error::invalid_many(
        Reason::InvalidSchema,
        format!("{field}{pointer}: not a valid JSON Schema: {description}"),
        vec![FieldViolation::new(
            format!("{field}{pointer}"),
            description,
        )],
    )
}

/// `config` merged over `default_config`.
pub fn effective_config(default_config: Option<&Value>, config: &Value) -> Value {
    let mut effective = default_config
        .cloned()
        .unwrap_or_else(|| Value::Object(Default::default()));
    merge_patch(&mut effective, config);
    effective
}

/// Validates an effective config; each violation names the JSON pointer of the offending
/// value under `field` (e.g. `instance.config/temperature`).
pub fn validate_config(field: &str, schema: Option<&Value>, config: &Value) -> Result<()> {
    let Some(schema) = schema else { return Ok(()) };
    let validator = compile("agent.config_schema", schema)
        .map_err(|_| Error::internal("stored config_schema does not compile"))?;
    let violations: Vec<FieldViolation> = validator
        .iter_errors(config)
        .take(32)
        .map(|error| {
            FieldViolation::new(
                format!("{field}{}", error.instance_path()),
                error.to_string(),
            )
        })
        .collect();
    if violations.is_empty() {
        Ok(())
    } else {
        // The message names the field itself (`instance.config/model: 5 is not of type
        // "string"`), for clients that show only the message.
        let more = match violations.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        Err(Error::invalid_many(
            Reason::InvalidConfig,
            format!(
                "{}: {}{more}",
                violations[0].field, violations[0].description
            ),
            violations,
        ))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn config_violations_carry_the_json_pointer() {
        let schema = json!({"type": "object", "properties": {"temperature": {"type": "number", "maximum": 2}}});
        let err = validate_config("instance.config", Some(&schema), &json!({"temperature": 5}))
            .unwrap_err();
        let Error::InvalidArgument {
            reason, violations, ..
        } = err
        else {
            panic!()
        };
        assert_eq!(reason, "INVALID_CONFIG");
        assert_eq!(violations[0].field, "instance.config/temperature");
    }

    #[test]
    fn config_messages_name_the_field() {
        let schema = json!({"type": "object", "properties": {"model": {"type": "string"}}});
        let err =
            validate_config("instance.config", Some(&schema), &json!({"model": 5})).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"instance.config/model: 5 is not of type "string""#
        );
    }

    #[test]
    fn invalid_schemas_are_rejected() {
        assert_eq!(
            check_schema("s", &json!({"type": "no-such-type"}))
                .unwrap_err()
                .reason(),
            "INVALID_SCHEMA"
        );
        assert_eq!(
            check_schema("s", &json!({"$ref": "https://example.com/s.json"}))
                .unwrap_err()
                .reason(),
            "INVALID_SCHEMA"
        );
        assert!(check_schema("s", &json!({"type": "object"})).is_ok());
    }

    #[test]
    fn defaults_are_merged_under_the_config() {
        let effective = effective_config(
            Some(&json!({"model": "small", "temperature": 1})),
            &json!({"temperature": 0.5}),
        );
        assert_eq!(effective, json!({"model": "small", "temperature": 0.5}));
    }
}
