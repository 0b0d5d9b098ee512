//! Agent rules: the commands that create and patch an agent, what a valid spec is, and
//! what config an instance of a revision gets.

use serde_json::Value;

use crate::{
    Error, Result,
    model::{AgentSpec, Labels, Tool},
    names::AgentName,
    schema,
};

/// CreateAgent.
#[derive(Debug, Clone)]
pub struct NewAgent {
    pub workspace: String,
    pub id: String,
    pub spec: AgentSpec,
}

/// UpdateAgent: the fields its mask names.
#[derive(Debug, Clone, Default)]
pub struct AgentPatch {
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub agent_type: Option<String>,
    pub capabilities: Option<Vec<String>>,
    pub tools: Option<Vec<Tool>>,
    pub config_schema: Option<Option<Value>>,
    pub default_config: Option<Option<Value>>,
    pub labels: Option<Labels>,
    pub enabled: Option<bool>,
    /// The etag the caller expects, if it sent one (none: unconditional).
    pub etag: Option<String>,
}

fn set<T: Clone>(field: &mut T, value: &Option<T>) {
    if let Some(v) = value {
        *field = v.clone();
    }
}

impl AgentPatch {
    /// The next revision's spec: `spec` with the patch applied, checked.
    pub fn apply(&self, spec: &mut AgentSpec) -> Result<()> {
        set(&mut spec.display_name, &self.display_name);
        set(&mut spec.description, &self.description);
        set(&mut spec.agent_type, &self.agent_type);
        set(&mut spec.capabilities, &self.capabilities);
        set(&mut spec.tools, &self.tools);
        set(&mut spec.config_schema, &self.config_schema);
        set(&mut spec.default_config, &self.default_config);
        set(&mut spec.labels, &self.labels);
        set(&mut spec.enabled, &self.enabled);
        spec.check()
    }
}

impl AgentSpec {
    /// A spec is valid when its config schema (if any) compiles.
    pub fn check(&self) -> Result<()> {
        if let Some(s) = &self.config_schema {
            schema::check_schema("agent.config_schema", s)?;
        }
        Ok(())
    }

    /// The effective config of an instance of this revision of `agent` given `config`:
    /// the defaults merged under it, validated against the schema. A disabled agent
    /// gets no instance.
    pub fn instance_config(&self, agent: &AgentName, config: &Value) -> Result<Value> {
        if !self.enabled {
            return Err(Error::precondition(
                "AGENT_DISABLED",
                format!("{agent} is disabled"),
            ));
        }
        let effective = schema::effective_config(self.default_config.as_ref(), config);
        schema::validate_config("instance.config", self.config_schema.as_ref(), &effective)?;
        Ok(effective)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec() -> AgentSpec {
        AgentSpec {
            display_name: "A".into(),
            description: String::new(),
            agent_type: String::new(),
            capabilities: Vec::new(),
            tools: Vec::new(),
            config_schema: Some(json!({"type": "object", "required": ["k"]})),
            default_config: Some(json!({"k": 1})),
            labels: Labels::new(),
            enabled: true,
        }
    }

    fn name() -> AgentName {
        AgentName {
            workspace: "w".into(),
            agent: "a".into(),
        }
    }

    #[test]
    fn a_patch_sets_only_the_fields_it_names() {
        let mut s = spec();
        let patch = AgentPatch {
            description: Some("d".into()),
            default_config: Some(None),
            enabled: Some(false),
            ..Default::default()
        };
        patch.apply(&mut s).unwrap();
        assert_eq!(s.display_name, "A");
        assert_eq!(s.description, "d");
        assert_eq!(s.default_config, None);
        assert!(!s.enabled);
        assert!(s.config_schema.is_some());
    }

    #[test]
    fn a_patch_with_a_broken_schema_is_refused() {
        let mut s = spec();
        let patch = AgentPatch {
            config_schema: Some(Some(json!({"type": 12}))),
            ..Default::default()
        };
        let err = patch.apply(&mut s).unwrap_err();
        assert_eq!(err.reason(), "INVALID_SCHEMA");
    }

    #[test]
    fn an_instance_config_is_merged_with_the_defaults_and_validated() {
        let s = spec();
        assert_eq!(
            s.instance_config(&name(), &json!({"x": 2})).unwrap(),
            json!({"k": 1, "x": 2})
        );
        let strict = AgentSpec {
            default_config: None,
            ..spec()
        };
        assert!(strict.instance_config(&name(), &json!({})).is_err());
    }

    #[test]
    fn a_disabled_agent_gets_no_instance() {
        let s = AgentSpec {
            enabled: false,
            ..spec()
        };
        let err = s.instance_config(&name(), &json!({})).unwrap_err();
        assert_eq!(err.reason(), "AGENT_DISABLED");
    }
}
