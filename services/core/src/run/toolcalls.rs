//! The tool-call machine of an event batch: a call is started once per run (its id is
//! never reused), completed once, by the tool it was started for; both ends join the
//! session's transcript.

use std::collections::HashMap;

use super::{EventBody, EventInput, MessageBody, MessageRole, RunChange, ToolCall};
use crate::{Error, Result};

/// A tool call of the run as stored before the batch.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownCall {
    pub tool: String,
    pub open: bool,
}

/// A call as the batch sees it.
struct Call {
    tool: String,
    open: bool,
    /// Whether it was stored, and open, before this batch; `None` for a call it starts.
    stored: Option<bool>,
}

/// The calls the batch knows, by id.
type Calls = HashMap<String, Call>;

/// The request field `what` of the batch's event `index`.
fn field(index: usize, what: &str) -> String {
    format!("events[{index}].{what}")
}

impl RunChange {
    /// AppendRunEvents: the events of `inputs`, in order, given the run's stored calls
    /// the batch names (`known`, by id). Messages and tool calls join the transcript;
    /// the call records change as [`super::CallChanges`] says.
    pub fn append_events(
        &mut self,
        inputs: &[EventInput],
        known: HashMap<String, KnownCall>,
    ) -> Result<()> {
        let mut calls: Calls = known
            .into_iter()
            .map(|(id, k)| {
                let call = Call {
                    stored: Some(k.open),
                    tool: k.tool,
                    open: k.open,
                };
                (id, call)
            })
            .collect();
        for (index, input) in inputs.iter().enumerate() {
            let body = self.event_of(index, input, &mut calls)?;
            self.event(body);
        }
        let mut inserted: Vec<_> = calls
            .iter()
            .filter(|(_, c)| c.stored.is_none())
            .map(|(id, c)| (id.clone(), c.tool.clone(), c.open))
            .collect();
        inserted.sort();
        let mut closed: Vec<String> = calls
            .iter()
            .filter(|(_, c)| c.stored == Some(true) && !c.open)
            .map(|(id, _)| id.clone())
            .collect();
        closed.sort();
        self.calls.inserted.extend(inserted);
        self.calls.closed.extend(closed);
        self.run.update_time = self.now;
        self.wake_run();
        Ok(())
    }

    fn event_of(
        &mut self,
        index: usize,
        input: &EventInput,
        calls: &mut Calls,
    ) -> Result<EventBody> {
        Ok(match input {
            EventInput::Delta { message_id, text } => EventBody::MessageDelta {
                message_id: message_id.clone(),
                text: text.clone(),
            },
            EventInput::Message(message) => EventBody::MessageCompleted {
                message: message.clone(),
                sequence: self.append(message.clone())?,
            },
            EventInput::ToolStarted(call) => self.start_call(index, call, calls)?,
            EventInput::ToolCompleted(call) => self.complete_call(index, call, calls)?,
            EventInput::Usage(usage) => {
                self.run.usage.add(usage);
                EventBody::Usage {
                    usage: usage.clone(),
                }
            }
            EventInput::Custom { name, data } => EventBody::Custom {
                name: name.clone(),
                data: data.clone(),
            },
            EventInput::Error(error) => EventBody::Error {
                error: error.clone(),
            },
        })
    }

    fn start_call(
        &mut self,
        index: usize,
        call: &ToolCall,
        calls: &mut Calls,
    ) -> Result<EventBody> {
        if calls.contains_key(&call.id) {
            return Err(Error::invalid(
                field(index, "tool_call_started.tool_call.id"),
                format!("tool call id {:?} was already used in this run", call.id),
            ));
        }
        let new = Call {
            tool: call.tool.clone(),
            open: true,
            stored: None,
        };
        calls.insert(call.id.clone(), new);
        let call = ToolCall {
            result: None,
            is_error: false,
            ..call.clone()
        };
        self.append_call(MessageRole::Assistant, &call)?;
        Ok(EventBody::ToolCallStarted { call })
    }

    fn complete_call(
        &mut self,
        index: usize,
        call: &ToolCall,
        calls: &mut Calls,
    ) -> Result<EventBody> {
        let tool = match calls.get_mut(&call.id) {
            Some(known) if known.open => {
                known.open = false;
                known.tool.clone()
            }
            _ => {
                return Err(Error::invalid(
                    field(index, "tool_call_completed.tool_call.id"),
                    format!("no open tool call {:?} in this run", call.id),
                ));
            }
        };
        if !call.tool.is_empty() && call.tool != tool {
            return Err(Error::invalid(
                field(index, "tool_call_completed.tool_call.tool"),
                format!("tool call {:?} was started for tool {tool:?}", call.id),
            ));
        }
        let call = ToolCall {
            tool,
            ..call.clone()
        };
        self.append_call(MessageRole::Tool, &call)?;
        Ok(EventBody::ToolCallCompleted {
            call,
            synthetic: false,
        })
    }

    fn append_call(&mut self, role: MessageRole, call: &ToolCall) -> Result<i64> {
        self.append(MessageBody {
            role,
            content: String::new(),
            tool_call: Some(call.clone()),
        })
    }
}
