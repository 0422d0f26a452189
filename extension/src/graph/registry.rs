//! The node-type registry: what each node type does when an execution
//! reaches it (its executor) and the JSON Schema its config must match.
//!
//! The built-in types are defined here and copied into `api.node_types` by
//! migration 0030; the table is the registry the engine reads, so a
//! deployment extends it with an INSERT. An action the worker performs is a
//! row with executor `job:<kind>`, where kind is one the job queue accepts
//! ([`JOB_KINDS`], the same list as `internal.jobs.kind`'s CHECK and
//! `api.node_types.executor`'s): a new kind of outside action needs a worker
//! handler and all three lists, not just a registry row.

use std::collections::HashMap;

use pgrx::prelude::*;
use serde_json::{json, Value};

use pgrx::spi::SpiClient;

use crate::graph::spi;

/// What the engine does on reaching a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Executor {
    /// Where an execution starts; completes with the trigger payload.
    Trigger,
    /// Evaluated at once: routes along `true`/`false` handles and conditions.
    Condition,
    /// Schedules the step `config` days/hours/minutes/seconds ahead.
    Delay,
    /// Done inside the database, in the same transaction.
    UpdateLead,
    AddLeadEvent,
    /// Needs the outside world: one `internal.jobs` row of this kind.
    Job(String),
}

/// The kinds of `internal.jobs` rows the worker performs (its CHECK).
pub const JOB_KINDS: &[&str] = &["email", "http_request", "webhook"];

impl Executor {
    pub fn parse(s: &str) -> Option<Executor> {
        Some(match s {
            "trigger" => Executor::Trigger,
            "condition" => Executor::Condition,
            "delay" => Executor::Delay,
            "update_lead" => Executor::UpdateLead,
            "add_lead_event" => Executor::AddLeadEvent,
            _ => {
                let kind = s.strip_prefix("job:")?;
                Executor::Job(JOB_KINDS.contains(&kind).then(|| kind.to_string())?)
            }
        })
    }
}

#[derive(Debug, Clone)]
pub struct NodeType {
    pub executor: Executor,
    pub schema: Value,
}

pub type Registry = HashMap<String, NodeType>;

/// Every node may bound how often one execution enters it; that is what
/// makes a cycle through it legal.
fn common() -> Value {
    json!({"max_visits": {"type": "integer", "minimum": 1, "maximum": 1000}})
}

fn object(required: &[&str], props: Value) -> Value {
    let mut p = common();
    p.as_object_mut()
        .unwrap()
        .extend(props.as_object().cloned().unwrap_or_default());
    json!({"type": "object", "required": required, "additionalProperties": false, "properties": p})
}

/// (type, category, executor, description, config schema)
pub fn builtins() -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Value,
)> {
    let text = json!({"type": "string", "minLength": 1, "maxLength": 10000});
    let url = json!({"type": "string", "minLength": 8, "maxLength": 2000});
    let headers = json!({"type": "object", "additionalProperties": {"type": "string"}});
    // A method from the context ("{{trigger.method}}") is checked by the
    // worker once rendered.
    let method = json!({"anyOf": [{"enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]},
                                  {"type": "string", "minLength": 5, "maxLength": 200}]});
    let connection = json!({"type": "string", "minLength": 32, "maxLength": 36});
    let amount = json!({"type": "number", "minimum": 0, "maximum": 3650});
    vec![
        ("TRIGGER_FORM", "trigger", "trigger", "A public form was submitted (config.form_id is the form slug).",
         object(&["form_id"], json!({"form_id": {"type": "string", "minLength": 1, "maxLength": 200}}))),
        ("TRIGGER_WEBHOOK", "trigger", "trigger", "An inbound webhook was called.",
         object(&[], json!({"path": {"type": "string"}, "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE"]}}))),
        ("TRIGGER_SCHEDULE", "trigger", "trigger", "A schedule fired: config.cron (five fields) in config.timezone (IANA name; default the workspace's); config.missed says what a tick after downtime does: run_once (default, the latest missed fire) or skip.",
         object(&["cron"], json!({"cron": {"type": "string", "minLength": 9, "maxLength": 100},
                                  "timezone": {"type": "string", "minLength": 1, "maxLength": 100},
                                  "missed": {"enum": ["run_once", "skip"]}}))),
        ("TRIGGER_DEMO_BOOKED", "trigger", "trigger", "A demo was booked (Calendly, Cal.com).",
         object(&[], json!({"provider": {"enum": ["calendly", "cal_com", "any"]}, "event_type": {"type": "string"}}))),
        ("TRIGGER_MANUAL", "trigger", "trigger", "Started by hand or through the API.", object(&[], json!({}))),
        ("ACTION_SEND_EMAIL", "action", "job:email", "Sends an email through the workspace's SMTP connection (config.connection_id, or its only one), else the operator's transport; {{path}} placeholders are filled from the execution context.",
         object(&["to", "subject"], json!({"to": text, "subject": text, "body": {"type": "string", "maxLength": 100000},
                                           "html": {"type": "string", "maxLength": 500000},
                                           "from": {"type": "string"}, "reply_to": {"type": "string"},
                                           "connection_id": connection}))),
        ("ACTION_HTTP_REQUEST", "action", "job:http_request", "Calls an HTTP endpoint, optionally authenticated by a connection (config.connection_id); url, method, headers and body take {{path}} placeholders.",
         object(&["url"], json!({"url": url, "method": method, "headers": headers, "body": {},
                                  "timeout_ms": {"type": "integer", "minimum": 100, "maximum": 60000},
                                  "connection_id": connection}))),
        ("ACTION_WEBHOOK", "action", "job:webhook", "Posts the execution context to a webhook URL.",
         object(&["url"], json!({"url": url, "headers": headers, "body": {}}))),
        ("ACTION_UPDATE_LEAD", "action", "update_lead", "Sets the lead's pipeline status and/or merges custom fields (inside the database).",
         json!({"type": "object", "additionalProperties": false, "minProperties": 1, "properties": {
             "max_visits": common()["max_visits"],
             "status": {"enum": ["NEW", "CONTACTED", "QUALIFIED", "BOOKED", "WON", "LOST", "ARCHIVED"]},
             "fields": {"type": "object"}, "tags": {"type": "array", "items": {"type": "string"}}}})),
        ("ACTION_ADD_LEAD_EVENT", "action", "add_lead_event", "Adds a WORKFLOW_ACTION (or given) event to the lead's activity log.",
         object(&[], json!({"event_type": {"enum": ["WORKFLOW_ACTION", "NOTE_ADDED", "EMAIL_SENT", "DEMO_BOOKED"]},
                            "note": {"type": "string", "maxLength": 10000}, "payload": {"type": "object"}}))),
        ("LOGIC_DELAY", "logic", "delay", "Waits, then carries on (days, hours, minutes, seconds add up).",
         json!({"type": "object", "additionalProperties": false, "minProperties": 1, "properties": {
             "max_visits": common()["max_visits"], "days": amount, "hours": amount, "minutes": amount, "seconds": amount}})),
        ("LOGIC_CONDITION", "logic", "condition", "Branches: config.condition picks the true/false handle; edge conditions gate each edge.",
         object(&[], json!({"condition": {"type": ["object", "boolean"]}}))),
    ]
}

const LOAD: &str = "SELECT node_type, executor, config_schema::text FROM api.node_types";

/// The registry as stored in `api.node_types` (a read-only query: STABLE
/// callers such as validation may load it).
pub fn load(client: &SpiClient<'_>) -> Registry {
    let rows = spi::read(client, LOAD, &[], 3);
    rows.into_iter()
        .filter_map(|r| {
            let mut it = r.into_iter();
            let name = it.next()??;
            let executor = Executor::parse(&it.next()??)?;
            let schema = serde_json::from_str(&it.next()??).ok()?;
            Some((name, NodeType { executor, schema }))
        })
        .collect()
}

/// The built-in types as rows, for migration 0030 to seed `api.node_types`.
#[pg_extern(immutable, parallel_safe)]
fn builtin_node_types() -> TableIterator<
    'static,
    (
        name!(node_type, String),
        name!(category, String),
        name!(executor, String),
        name!(description, String),
        name!(config_schema, pgrx::JsonB),
    ),
> {
    TableIterator::new(builtins().into_iter().map(|(t, c, e, d, s)| {
        (
            t.to_string(),
            c.to_string(),
            e.to_string(),
            d.to_string(),
            pgrx::JsonB(s),
        )
    }))
}

extension_sql!(
    r#"
COMMENT ON FUNCTION flowtrack.builtin_node_types() IS
  'The built-in node types (type, category, executor, description, JSON Schema of config); migration 0030 copies them into api.node_types.';
"#,
    name = "comments_registry",
    requires = [builtin_node_types]
);
