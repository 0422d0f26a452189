//! n8n workflow JSON (`{nodes, connections}`) to a FlowTrack canvas through
//! a node-type mapping. Nothing is dropped: a node whose type has no
//! FlowTrack equivalent is imported as `N8N_<TYPE>` (which validation then
//! reports as an unknown type), every original node is kept verbatim under
//! the canvas node's `n8n` field, and each thing that could not be mapped is
//! returned as a problem (code, node, edge, message, hint).

use std::collections::{HashMap, HashSet};

use pgrx::prelude::*;
use serde_json::{json, Map, Value};

use pgrx::PgSqlErrorCode;

use crate::error::raise;
use crate::graph::model::{parse_json, Problem, MAX_ELEMENTS};

fn upper_snake(s: &str) -> String {
    let mut out = String::from("N8N_");
    let mut prev_lower = false;
    for c in s.chars() {
        if c.is_ascii_uppercase() && prev_lower {
            out.push('_');
        }
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_uppercase());
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        } else {
            if !out.ends_with('_') {
                out.push('_');
            }
            prev_lower = false;
        }
    }
    out.trim_end_matches('_').to_string()
}

fn s<'a>(p: &'a Value, k: &str) -> Option<&'a str> {
    p.get(k).and_then(Value::as_str)
}

/// `={{ $json.a.b }}` / `={{$json["a"]}}` -> `trigger.a.b`.
fn expr_path(v: &Value) -> Option<String> {
    let t = v.as_str()?.trim();
    let inner = t.strip_prefix("={{")?.strip_suffix("}}")?.trim();
    let rest = inner.strip_prefix("$json")?;
    let mut path = vec!["trigger".to_string()];
    let mut r = rest;
    while !r.is_empty() {
        if let Some(x) = r.strip_prefix('.') {
            let end = x.find(['.', '[']).unwrap_or(x.len());
            if end == 0 {
                return None;
            }
            path.push(x[..end].to_string());
            r = &x[end..];
        } else if let Some(x) = r.strip_prefix("[\"").or_else(|| r.strip_prefix("['")) {
            let end = x.find(['"', '\''])?;
            path.push(x[..end].to_string());
            r = x[end + 1..].strip_prefix(']')?;
        } else {
            return None;
        }
    }
    (path.len() > 1 && path.iter().all(|p| !p.is_empty() && !p.contains(' ')))
        .then(|| path.join("."))
}

fn literal(v: Option<&Value>) -> Option<Value> {
    match v {
        Some(Value::String(x)) if x.starts_with('=') => None,
        Some(x) => Some(x.clone()),
        None => Some(Value::Null),
    }
}

fn op_of(o: &str) -> Option<&'static str> {
    Some(match o {
        "equal" | "equals" => "eq",
        "notEqual" | "notEquals" => "ne",
        "larger" | "gt" | "after" => "gt",
        "largerEqual" | "gte" | "afterOrEquals" => "gte",
        "smaller" | "lt" | "before" => "lt",
        "smallerEqual" | "lte" | "beforeOrEquals" => "lte",
        "contains" => "contains",
        "isNotEmpty" | "exists" | "notEmpty" => "exists",
        "isEmpty" | "notExists" | "empty" => "not_exists",
        _ => return None,
    })
}

/// The IF / Filter node's conditions in FlowTrack's condition language.
fn condition_of(p: &Value) -> Option<Value> {
    let conds = p.get("conditions")?;
    let mut parts = Vec::new();
    let combinator;
    if let Some(list) = conds.get("conditions").and_then(Value::as_array) {
        combinator = if s(conds, "combinator") == Some("or") {
            "or"
        } else {
            "and"
        };
        for c in list {
            let path = expr_path(c.get("leftValue")?)?;
            let opn = c.get("operator").and_then(|o| s(o, "operation"))?;
            let c2 = match opn {
                "true" => json!({"op": "eq", "path": path, "value": true}),
                "false" => json!({"op": "eq", "path": path, "value": false}),
                _ => {
                    let op = op_of(opn)?;
                    if matches!(op, "exists" | "not_exists") {
                        json!({"op": op, "path": path})
                    } else {
                        json!({"op": op, "path": path, "value": literal(c.get("rightValue"))?})
                    }
                }
            };
            parts.push(c2);
        }
    } else {
        combinator = if s(p, "combineOperation") == Some("any") {
            "or"
        } else {
            "and"
        };
        for kind in ["boolean", "number", "string", "dateTime"] {
            for c in conds
                .get(kind)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let path = expr_path(c.get("value1")?)?;
                let op = op_of(s(c, "operation").unwrap_or("equal"))?;
                if matches!(op, "exists" | "not_exists") {
                    parts.push(json!({"op": op, "path": path}));
                } else {
                    let mut v = literal(c.get("value2"))?;
                    if kind == "boolean" && v.is_null() {
                        v = Value::Bool(false);
                    }
                    parts.push(json!({"op": op, "path": path, "value": v}));
                }
            }
        }
    }
    match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(json!({ combinator: parts })),
    }
}

fn email_config(to: Option<&Value>, subject: Option<&Value>, body: Option<&Value>) -> Value {
    let mut c = Map::new();
    for (k, v) in [("to", to), ("subject", subject), ("body", body)] {
        if let Some(v) = v.filter(|v| v.is_string()) {
            c.insert(k.into(), v.clone());
        }
    }
    Value::Object(c)
}

/// (FlowTrack type, config) for an n8n node, or None when unmapped.
fn map_node(
    t: &str,
    p: &Value,
    name: &str,
    problems: &mut Vec<Problem>,
) -> Option<(&'static str, Value)> {
    let short = t.rsplit('.').next().unwrap_or(t);
    let op = s(p, "operation");
    Some(match short {
        "manualTrigger" | "start" => ("TRIGGER_MANUAL", json!({})),
        "formTrigger" => {
            let id = s(p, "path").or(s(p, "formTitle")).unwrap_or(name);
            ("TRIGGER_FORM", json!({"form_id": id}))
        }
        "webhook" => {
            let mut c = Map::new();
            if let Some(path) = s(p, "path") {
                c.insert("path".into(), json!(path));
            }
            if let Some(m) =
                s(p, "httpMethod").filter(|m| ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(m))
            {
                c.insert("method".into(), json!(m));
            }
            ("TRIGGER_WEBHOOK", Value::Object(c))
        }
        "scheduleTrigger" | "cron" | "interval" => {
            let cron = p
                .pointer("/rule/interval/0/expression")
                .or_else(|| p.pointer("/rule/interval/0/cronExpression"))
                .or_else(|| p.pointer("/triggerTimes/item/0/cronExpression"))
                .and_then(Value::as_str);
            match cron {
                Some(c) => ("TRIGGER_SCHEDULE", json!({"cron": c})),
                None => {
                    problems.push(Problem::node("unmapped_setting", name,
                        format!("node \"{name}\": the n8n schedule has no cron expression FlowTrack can use"),
                        "Set config.cron (five fields) on the TRIGGER_SCHEDULE node."));
                    ("TRIGGER_SCHEDULE", json!({}))
                }
            }
        }
        "calendlyTrigger" => ("TRIGGER_DEMO_BOOKED", json!({"provider": "calendly"})),
        "calTrigger" => ("TRIGGER_DEMO_BOOKED", json!({"provider": "cal_com"})),
        "emailSend" => (
            "ACTION_SEND_EMAIL",
            email_config(
                p.get("toEmail"),
                p.get("subject"),
                p.get("text").or(p.get("html")),
            ),
        ),
        "gmail" | "microsoftOutlook" if op.is_none_or(|o| o == "send") => (
            "ACTION_SEND_EMAIL",
            email_config(
                p.get("sendTo").or(p.get("toRecipients")),
                p.get("subject"),
                p.get("message").or(p.get("bodyContent")),
            ),
        ),
        "httpRequest" => {
            let mut c = Map::new();
            if let Some(u) = p.get("url").filter(|u| u.is_string()) {
                c.insert("url".into(), u.clone());
            }
            if let Some(m) = s(p, "method").or(s(p, "requestMethod")) {
                c.insert("method".into(), json!(m));
            }
            ("ACTION_HTTP_REQUEST", Value::Object(c))
        }
        "if" | "filter" => match condition_of(p) {
            Some(c) => ("LOGIC_CONDITION", json!({"condition": c})),
            None => {
                problems.push(Problem::node("unmapped_condition", name,
                    format!("node \"{name}\": its n8n conditions use expressions or operators FlowTrack's condition language cannot express"),
                    "Write config.condition by hand, e.g. {\"op\":\"eq\",\"path\":\"trigger.status\",\"value\":\"paid\"}."));
                ("LOGIC_CONDITION", json!({}))
            }
        },
        "wait" => {
            let unit = s(p, "unit").unwrap_or("hours");
            match (p.get("amount").and_then(Value::as_f64), unit) {
                (Some(a), "seconds" | "minutes" | "hours" | "days") => {
                    ("LOGIC_DELAY", json!({ unit: a }))
                }
                _ => {
                    problems.push(Problem::node(
                        "unmapped_setting",
                        name,
                        format!("node \"{name}\": the n8n wait is not a fixed time interval"),
                        "Set days, hours, minutes or seconds on the LOGIC_DELAY node.",
                    ));
                    ("LOGIC_DELAY", json!({}))
                }
            }
        }
        _ => return None,
    })
}

/// Branching n8n nodes whose outputs 0/1 are true/false.
fn is_branching(t: &str) -> bool {
    matches!(t.rsplit('.').next(), Some("if" | "filter"))
}

/// Where n8n put a node's error output: with `onError:
/// continueErrorOutput` it appends one output after the regular ones, so its
/// index is the number of regular outputs. `Err` when that number cannot be
/// read from the node (a Switch without the rules FlowTrack knows).
fn error_output(n: &Value, t: &str) -> Option<Result<usize, ()>> {
    if s(n, "onError") != Some("continueErrorOutput") {
        return None;
    }
    let p = n.get("parameters").unwrap_or(&Value::Null);
    let version = n.get("typeVersion").and_then(Value::as_f64).unwrap_or(1.0);
    Some(Ok(match t.rsplit('.').next().unwrap_or(t) {
        "if" => 2,
        "splitInBatches" if version >= 3.0 => 2,
        "compareDatasets" => 4,
        "switch" => {
            let extra = usize::from(p.pointer("/options/fallbackOutput") == Some(&json!("extra")));
            match (
                p.pointer("/rules/values").and_then(Value::as_array),
                p.get("numberOutputs").and_then(Value::as_u64),
            ) {
                (_, Some(k)) if s(p, "mode") == Some("expression") => k as usize,
                (Some(rules), _) => rules.len() + extra,
                _ => return Some(Err(())),
            }
        }
        _ => 1,
    }))
}

/// Longest node name and edge id the canvas columns hold, in characters (as
/// Postgres' length() counts them).
pub const MAX_NAME: usize = 200;

/// Longest connection type kept (n8n's are `main` and `ai_*` names).
const MAX_CONNECTION_TYPE: usize = 100;

/// Longest original key kept beside a connection whose endpoint was renamed.
const MAX_KEPT_KEY: usize = 1000;

/// Is `s` at most `n` characters? Looks at no more than n + 1 of them.
fn within(s: &str, n: usize) -> bool {
    s.chars().nth(n).is_none()
}

/// The first `n` characters of `s`.
fn clip(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}

/// `s` for a message: clipped to 100 characters, with an ellipsis.
fn shown(s: &str) -> String {
    if within(s, 100) {
        s.to_string()
    } else {
        format!("{}…", clip(s, 100))
    }
}

/// Hands out unique names of at most [`MAX_NAME`] characters: the wanted one
/// when it is free, else `{wanted}{sep}{k}` (wanted clipped to fit) for the
/// first free k. Each base remembers where its count stopped, so n requests
/// for one base try O(n) candidates in all, not O(n²): a loop over user
/// input must stay linear.
#[derive(Default)]
struct Fresh {
    taken: HashSet<String>,
    next: HashMap<String, usize>,
}

impl Fresh {
    /// `wanted` itself when free and storable; otherwise a generated name
    /// that is neither taken nor in `avoid`, counting from `from`.
    fn claim(&mut self, wanted: &str, sep: &str, from: usize, avoid: &HashSet<String>) -> String {
        if !wanted.is_empty() && within(wanted, MAX_NAME) && !self.taken.contains(wanted) {
            self.taken.insert(wanted.to_string());
            return wanted.to_string();
        }
        let mut k = self.next.get(wanted).map_or(from, |&k| k.max(from));
        loop {
            crate::interrupts::check();
            let suffix = format!("{sep}{k}");
            let base = clip(wanted, MAX_NAME - suffix.chars().count());
            let candidate = format!("{base}{suffix}");
            k += 1;
            if !self.taken.contains(&candidate) && !avoid.contains(&candidate) {
                self.next.insert(wanted.to_string(), k);
                self.taken.insert(candidate.clone());
                return candidate;
            }
        }
    }
}

/// What convert needs to know about a canvas node while it maps connections.
struct Imported {
    n8n_type: String,
    /// Index of the `main` output n8n routes errors to, if any.
    error_output: Option<usize>,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An n8n export that is too big to convert; refused with 54000.
#[derive(Debug, PartialEq)]
pub struct TooBig(pub String);

/// n8n JSON to a React Flow canvas plus every problem met on the way. Linear
/// in the input; every name and edge id fits the canvas columns, and no
/// edge ends on a node n8n would not have connected it to.
pub fn convert<'v>(v: &'v Value) -> Result<(Value, Vec<Problem>), TooBig> {
    let mut problems = Vec::new();
    let empty = Vec::new();
    let nodes_in = match v.get("nodes") {
        Some(Value::Array(a)) => a,
        _ => {
            problems.push(Problem::graph(
                "invalid_graph",
                "n8n: nodes must be an array".into(),
                "Export the workflow from n8n as JSON.",
            ));
            &empty
        }
    };
    let mut elements = nodes_in.len();
    if elements > MAX_ELEMENTS {
        return Err(TooBig(format!(
            "workflow: {elements} nodes exceed the limit of {MAX_ELEMENTS} nodes and connections"
        )));
    }
    // Names n8n itself uses: a generated name never takes one of them, so a
    // connection keyed by it can only mean the node that really bears it.
    let originals: HashSet<String> = nodes_in
        .iter()
        .filter_map(|n| s(n, "name"))
        .filter(|n| !n.is_empty() && within(n, MAX_NAME))
        .map(str::to_string)
        .collect();
    let mut fresh = Fresh::default();
    let mut nodes = Vec::with_capacity(nodes_in.len());
    // n8n name -> canvas id of the first node bearing it.
    let mut by_name: HashMap<&str, String> = HashMap::new();
    // n8n id -> canvas id, only to say what a connection keyed by id meant.
    let mut by_id: HashMap<&str, String> = HashMap::new();
    let mut imported: HashMap<String, Imported> = HashMap::new();
    for (i, n) in nodes_in.iter().enumerate() {
        crate::interrupts::check();
        let t = s(n, "type").unwrap_or("").to_string();
        let raw = s(n, "name").unwrap_or_default();
        let name = if raw.is_empty() {
            fresh.claim("node", " #", i + 1, &originals)
        } else {
            fresh.claim(raw, " #", i + 1, &originals)
        };
        if raw.is_empty() || !within(raw, MAX_NAME) {
            problems.push(Problem::node(
                "renamed_node",
                &name,
                format!("nodes[{i}]: name missing or over {MAX_NAME} characters; imported as \"{name}\""),
                "Give the node a short unique name.",
            ));
        } else if name != raw {
            problems.push(Problem::node(
                "duplicate_node",
                &name,
                format!("node \"{raw}\": the name is used twice; this one imported as \"{name}\""),
                "n8n connects nodes by name; rename one of them.",
            ));
        }
        if !raw.is_empty() {
            by_name.entry(raw).or_insert_with(|| name.clone());
        }
        if let Some(id) = s(n, "id").filter(|id| !id.is_empty()) {
            by_id.entry(id).or_insert_with(|| name.clone());
        }
        let params = n.get("parameters").cloned().unwrap_or_else(|| json!({}));
        let (ntype, config) = match map_node(&t, &params, &name, &mut problems) {
            Some((ft, c)) => (ft.to_string(), c),
            None => {
                let ft = upper_snake(t.rsplit('.').next().unwrap_or(&t));
                let ft = if ft == "N8N" {
                    "N8N_UNTYPED".to_string()
                } else {
                    ft
                };
                problems.push(Problem::node("unmapped_node_type", &name,
                    format!("node \"{name}\": n8n type \"{}\" has no FlowTrack equivalent; imported as {ft}", shown(&t)),
                    "Replace it with a FlowTrack node, or register the type in api.node_types."));
                (ft, json!({}))
            }
        };
        let error_output = match error_output(n, &t) {
            Some(Ok(k)) => Some(k),
            Some(Err(())) => {
                problems.push(Problem::node(
                    "unmapped_setting",
                    &name,
                    format!("node \"{name}\": routes errors to an extra output, but which of its outputs that is cannot be told"),
                    "Connect the failure path from the node's error handle by hand.",
                ));
                None
            }
            None => None,
        };
        imported.insert(
            name.clone(),
            Imported {
                n8n_type: t,
                error_output,
            },
        );
        let position = match n.get("position") {
            Some(Value::Array(p)) if p.len() == 2 => json!({"x": p[0], "y": p[1]}),
            _ => json!({"x": 0, "y": 0}),
        };
        nodes.push(json!({
            "id": name, "type": ntype, "position": position,
            "data": {"label": name, "config": config}, "n8n": n,
        }));
    }
    // A connection end that names no node gets a canvas id that is no
    // node's either (so it stays a dangling edge), the same one for every
    // connection naming it.
    let mut missing: HashMap<&'v str, String> = HashMap::new();
    let mut edges = Vec::new();
    let mut edge_ids = Fresh::default();
    let no_avoid = HashSet::new();
    let conns = match v.get("connections") {
        None | Some(Value::Null) => None,
        Some(Value::Object(c)) => Some(c),
        Some(other) => {
            problems.push(Problem::graph(
                "invalid_graph",
                format!(
                    "n8n: connections must be an object keyed by node name, not {}",
                    type_name(other)
                ),
                "Export the workflow from n8n as JSON.",
            ));
            None
        }
    };
    let mut placeholder = |raw: &'v str, fresh: &mut Fresh| -> String {
        if let Some(p) = missing.get(raw) {
            return p.clone();
        }
        let base = if raw.is_empty() { "(empty name)" } else { raw };
        let p = fresh.claim(base, " #", 1, &originals);
        missing.insert(raw, p.clone());
        p
    };
    for (raw_source, by_type) in conns.into_iter().flatten() {
        crate::interrupts::check();
        let source = match by_name.get(raw_source.as_str()) {
            Some(name) => name.clone(),
            None => {
                let source = placeholder(raw_source, &mut fresh);
                let (message, hint) = match by_id.get(raw_source.as_str()) {
                    Some(named) => (
                        format!("connections: source \"{}\" is the id of node \"{named}\", not a node name", shown(raw_source)),
                        "n8n connects nodes by name: key the connection by the node's name.",
                    ),
                    None => (
                        format!("connections: source \"{}\" is not a node", shown(raw_source)),
                        "Remove the connection or add the node.",
                    ),
                };
                problems.push(Problem::node("dangling_connection", &source, message, hint));
                source
            }
        };
        let Some(by_type) = by_type.as_object() else {
            if !by_type.is_null() {
                problems.push(Problem::node(
                    "invalid_connection",
                    &source,
                    format!(
                        "connections.{source}: must be an object of connection types, not {}",
                        type_name(by_type)
                    ),
                    "Export the workflow from n8n as JSON.",
                ));
            }
            continue;
        };
        let info = imported.get(&source);
        let branching = info.is_some_and(|i| is_branching(&i.n8n_type));
        let error_at = info.and_then(|i| i.error_output);
        for (ctype, outputs) in by_type {
            crate::interrupts::check();
            if ctype.is_empty() || !within(ctype, MAX_CONNECTION_TYPE) {
                problems.push(Problem::node(
                    "invalid_connection",
                    &source,
                    format!("connections.{source}: connection type \"{}\" is empty or over {MAX_CONNECTION_TYPE} characters", shown(ctype)),
                    "Use n8n's connection types, e.g. main.",
                ));
                continue;
            }
            let outputs = match outputs {
                Value::Array(a) => a,
                Value::Null => continue,
                other => {
                    problems.push(Problem::node(
                        "invalid_connection",
                        &source,
                        format!(
                            "connections.{source}.{ctype}: must be an array of outputs, not {}",
                            type_name(other)
                        ),
                        "Export the workflow from n8n as JSON.",
                    ));
                    continue;
                }
            };
            for (out, targets) in outputs.iter().enumerate() {
                crate::interrupts::check();
                let targets = match targets {
                    Value::Array(a) => a,
                    Value::Null => continue,
                    other => {
                        problems.push(Problem::node(
                            "invalid_connection",
                            &source,
                            format!("connections.{source}.{ctype}[{out}]: must be an array of connections, not {}", type_name(other)),
                            "Export the workflow from n8n as JSON.",
                        ));
                        continue;
                    }
                };
                elements += targets.len();
                if elements > MAX_ELEMENTS {
                    return Err(TooBig(format!(
                        "workflow: nodes and connections exceed the limit of {MAX_ELEMENTS}"
                    )));
                }
                for c in targets {
                    crate::interrupts::check();
                    let Some(raw_target) = s(c, "node") else {
                        problems.push(Problem::node(
                            "invalid_connection",
                            &source,
                            format!(
                                "connections.{source}.{ctype}[{out}]: an entry has no target node"
                            ),
                            "Remove it.",
                        ));
                        continue;
                    };
                    let resolved = by_name.get(raw_target).cloned();
                    let target = match &resolved {
                        Some(t) => t.clone(),
                        None => placeholder(raw_target, &mut fresh),
                    };
                    let idx = c.get("index").and_then(Value::as_u64).unwrap_or(0);
                    let source_handle = match (ctype.as_str(), out) {
                        ("main", k) if error_at == Some(k) => json!("error"),
                        ("main", 0) if branching => json!("true"),
                        ("main", 1) if branching => json!("false"),
                        ("main", 0) => Value::Null,
                        (t, k) => json!(format!("{t}:{k}")),
                    };
                    let target_handle = match (ctype.as_str(), idx) {
                        ("main", 0) => Value::Null,
                        (t, k) => json!(format!("{t}:{k}")),
                    };
                    let id = edge_ids.claim(
                        &format!("{source}:{ctype}:{out}->{target}:{idx}"),
                        "#",
                        2,
                        &no_avoid,
                    );
                    if resolved.is_none() {
                        let (message, hint) = match by_id.get(raw_target) {
                            Some(named) => (
                                format!("edge \"{id}\": target \"{}\" is the id of node \"{named}\", not a node name", shown(raw_target)),
                                "n8n connects nodes by name: key the connection by the node's name.",
                            ),
                            None => (
                                format!("edge \"{id}\": target \"{}\" is not a node", shown(raw_target)),
                                "Remove the connection or add the node.",
                            ),
                        };
                        problems.push(Problem {
                            code: "dangling_connection",
                            node: Some(source.clone()),
                            edge: Some(id.clone()),
                            message,
                            hint: hint.into(),
                        });
                    }
                    let mut e = json!({"id": id, "source": source, "target": target,
                                       "sourceHandle": source_handle, "targetHandle": target_handle});
                    if raw_source != &source || raw_target != target {
                        e["n8n"] = json!({"source": clip(raw_source, MAX_KEPT_KEY),
                                          "target": clip(raw_target, MAX_KEPT_KEY)});
                    }
                    edges.push(e);
                }
            }
        }
    }
    let mut flow = json!({"nodes": nodes, "edges": edges});
    if let Some(name) = v.get("name") {
        flow["name"] = name.clone();
    }
    Ok((flow, problems))
}

/// n8n JSON to {flow (React Flow state), problems}.
#[pg_extern(immutable, strict, parallel_safe)]
fn n8n_to_flow(workflow: &str) -> pgrx::JsonB {
    let (flow, problems) =
        convert(&parse_json("workflow", workflow)).unwrap_or_else(|TooBig(msg)| {
            raise(
                PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                msg,
                None,
                "Split the workflow into smaller ones.",
            )
        });
    let problems: Vec<Value> = problems.iter().map(Problem::to_json).collect();
    pgrx::JsonB(json!({"flow": flow, "problems": problems}))
}

extension_sql!(
    r#"
COMMENT ON FUNCTION flowtrack.n8n_to_flow(text) IS
  'n8n workflow JSON to React Flow state through the node-type mapping, with every unmapped node, setting, condition and connection reported as a problem; nothing is dropped.';
"#,
    name = "comments_n8n",
    requires = [n8n_to_flow]
);

#[cfg(test)]
mod unit_tests {
    use std::collections::HashSet;
    use std::time::{Duration, Instant};

    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::{convert, MAX_NAME};
    use crate::graph::arbitrary;
    use crate::graph::reactflow::split;

    fn node(name: &str, t: &str) -> Value {
        json!({"name": name, "id": format!("id-{name}"), "type": format!("n8n-nodes-base.{t}"), "parameters": {}})
    }

    fn to(name: &str) -> Value {
        json!({"node": name, "type": "main", "index": 0})
    }

    fn names(flow: &Value) -> Vec<String> {
        flow["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_string())
            .collect()
    }

    fn edge<'a>(flow: &'a Value, source: &str, target: &str) -> &'a Value {
        flow["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["source"] == source && e["target"] == target)
            .unwrap_or_else(|| panic!("no edge {source} -> {target} in {flow:#}"))
    }

    fn codes(problems: &[super::Problem]) -> Vec<&str> {
        problems.iter().map(|p| p.code).collect()
    }

    #[test]
    fn repeated_identical_connections_get_unique_ids_in_linear_time() {
        // 6,000 copies of one connection took 12-15 s (release build) when
        // each copy appended a quote to the previous id until it was free.
        let copies = 6000;
        let wf = json!({"nodes": [node("A", "manualTrigger"), node("B", "noOp")],
                        "connections": {"A": {"main": [vec![to("B"); copies]]}}});
        let started = Instant::now();
        let (flow, _) = convert(&wf).unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
        let ids: HashSet<&str> = flow["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), copies);
        assert!(ids.iter().all(|id| id.chars().count() <= MAX_NAME));
        split(&flow).expect("storable");
    }

    #[test]
    fn duplicate_names_are_renamed_to_unused_names_within_200_characters() {
        let wf = json!({"nodes": [node("Step", "noOp"), node("Step #3", "noOp"), node("Step", "noOp")],
                        "connections": {"Step #3": {"main": [[to("Step")]]}}});
        let (flow, problems) = convert(&wf).unwrap();
        let got = names(&flow);
        assert_eq!(got[..2], ["Step", "Step #3"]);
        assert!(!["Step", "Step #3"].contains(&got[2].as_str()), "{got:?}");
        assert!(codes(&problems).contains(&"duplicate_node"));
        // The connection keyed "Step #3" means the node n8n calls that.
        assert_eq!(edge(&flow, "Step #3", "Step")["sourceHandle"], Value::Null);
        split(&flow).expect("storable");

        let long = "n".repeat(199);
        let wf = json!({"nodes": [node(&long, "noOp"), node(&long, "noOp")]});
        let (flow, _) = convert(&wf).unwrap();
        let got = names(&flow);
        assert_ne!(got[0], got[1]);
        assert!(got.iter().all(|n| n.chars().count() <= MAX_NAME), "{got:?}");
        split(&flow).expect("storable");
    }

    #[test]
    fn a_renamed_name_never_takes_a_name_a_later_node_bears() {
        let wf = json!({"nodes": [node("Step", "noOp"), node("Step", "noOp"), node("Step #2", "noOp")],
                        "connections": {"Step #2": {"main": [[to("Step")]]}}});
        let (flow, _) = convert(&wf).unwrap();
        let got = names(&flow);
        assert_eq!(got[2], "Step #2");
        assert_ne!(got[1], "Step #2");
        // The edge leaves the third node, the one n8n names "Step #2".
        let e = edge(&flow, "Step #2", "Step");
        assert!(e.get("n8n").is_none(), "{e}");
    }

    #[test]
    fn cjk_names_count_characters_not_bytes() {
        let name = "語".repeat(67); // 201 bytes, 67 characters
        let wf = json!({"nodes": [node(&name, "manualTrigger"), node("B", "noOp")],
                        "connections": {name.clone(): {"main": [[to("B")]]}}});
        let (flow, problems) = convert(&wf).unwrap();
        assert_eq!(names(&flow)[0], name);
        assert_eq!(codes(&problems), ["unmapped_node_type"], "{problems:?}");
        split(&flow).expect("a 67-character id is storable");
    }

    #[test]
    fn error_outputs_become_error_handles() {
        let mut http = node("Fetch", "httpRequest");
        http["onError"] = json!("continueErrorOutput");
        let mut check = node("Check", "if");
        check["onError"] = json!("continueErrorOutput");
        let wf = json!({"nodes": [http, check, node("Plain", "httpRequest"), node("Ok", "noOp"), node("Oops", "noOp"), node("No", "noOp")],
                        "connections": {
                            "Fetch": {"main": [[to("Ok")], [to("Oops")]]},
                            "Check": {"main": [[to("Ok")], [to("No")], [to("Oops")]]},
                            "Plain": {"main": [[to("Ok")], [to("Oops")]]}}});
        let (flow, _) = convert(&wf).unwrap();
        assert_eq!(edge(&flow, "Fetch", "Ok")["sourceHandle"], Value::Null);
        assert_eq!(edge(&flow, "Fetch", "Oops")["sourceHandle"], "error");
        assert_eq!(edge(&flow, "Check", "Ok")["sourceHandle"], "true");
        assert_eq!(edge(&flow, "Check", "No")["sourceHandle"], "false");
        assert_eq!(edge(&flow, "Check", "Oops")["sourceHandle"], "error");
        // Without onError n8n has no error output: the second output stays one.
        assert_eq!(edge(&flow, "Plain", "Oops")["sourceHandle"], "main:1");
    }

    #[test]
    fn connections_keyed_by_node_id_are_reported_not_resolved() {
        let wf = json!({"nodes": [node("A", "manualTrigger"), node("B", "noOp")],
                        "connections": {"id-A": {"main": [[to("id-B")]]}}});
        let (flow, problems) = convert(&wf).unwrap();
        let e = &flow["edges"][0];
        assert!(
            !names(&flow).contains(&e["source"].as_str().unwrap().to_string()),
            "{e}"
        );
        assert!(
            !names(&flow).contains(&e["target"].as_str().unwrap().to_string()),
            "{e}"
        );
        let ids: Vec<&super::Problem> = problems
            .iter()
            .filter(|p| p.code == "dangling_connection")
            .collect();
        assert_eq!(ids.len(), 2, "{problems:?}");
        assert!(
            ids.iter().all(|p| p.message.contains("is the id of node")),
            "{ids:?}"
        );
    }

    #[test]
    fn malformed_connections_are_reported() {
        for (connections, code) in [
            (json!([1, 2]), "invalid_graph"),
            (json!(7), "invalid_graph"),
            (json!({"A": 5}), "invalid_connection"),
            (json!({"A": {"main": 3}}), "invalid_connection"),
            (json!({"A": {"main": [5]}}), "invalid_connection"),
            (json!({"A": {"main": [[5]]}}), "invalid_connection"),
        ] {
            let wf = json!({"nodes": [node("A", "manualTrigger")], "connections": connections});
            let (_, problems) = convert(&wf).unwrap();
            assert!(
                codes(&problems).contains(&code),
                "{connections}: {problems:?}"
            );
        }
        // Absent, null and empty outputs are fine.
        for connections in [json!(null), json!({"A": {"main": [null, []]}})] {
            let wf = json!({"nodes": [node("A", "manualTrigger")], "connections": connections});
            assert!(convert(&wf).unwrap().1.is_empty());
        }
    }

    #[test]
    fn a_dangling_target_longer_than_200_characters_keeps_the_import() {
        let far = "z".repeat(300);
        let wf = json!({"nodes": [node("A", "manualTrigger")], "connections": {"A": {"main": [[to(&far)]]}}});
        let (flow, problems) = convert(&wf).unwrap();
        assert!(codes(&problems).contains(&"dangling_connection"));
        let target = flow["edges"][0]["target"].as_str().unwrap();
        assert!(
            target.chars().count() <= MAX_NAME && target != "A",
            "{target}"
        );
        split(&flow).expect("storable");
    }

    #[test]
    fn a_missing_node_gets_an_id_no_node_has() {
        // A connection to "Step #2", where only a renamed duplicate could
        // have been called that: it must stay dangling.
        let wf = json!({"nodes": [node("Step", "manualTrigger"), node("Step", "noOp")],
                        "connections": {"Step": {"main": [[to("Step #2"), to("")]]}}});
        let (flow, problems) = convert(&wf).unwrap();
        let nodes = names(&flow);
        for e in flow["edges"].as_array().unwrap() {
            assert!(
                !nodes.contains(&e["target"].as_str().unwrap().to_string()),
                "{e} / {nodes:?}"
            );
        }
        assert_eq!(
            codes(&problems)
                .iter()
                .filter(|c| **c == "dangling_connection")
                .count(),
            2
        );
    }

    /// An edge ends on a canvas node only if n8n names that node there.
    fn connects_by_name_only(flow: &Value) {
        let by_id: std::collections::HashMap<&str, &Value> = flow["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["id"].as_str().unwrap(), n))
            .collect();
        for e in flow["edges"].as_array().unwrap() {
            for end in ["source", "target"] {
                let id = e[end].as_str().unwrap();
                let raw = e.get("n8n").map_or(id, |r| r[end].as_str().unwrap());
                if let Some(n) = by_id.get(id) {
                    assert_eq!(n["n8n"]["name"].as_str(), Some(raw), "edge {e} ends on {n}");
                }
            }
            if e["sourceHandle"] == "error" {
                let n = by_id[e["source"].as_str().unwrap()];
                assert_eq!(n["n8n"]["onError"], "continueErrorOutput", "{e}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever the JSON, the converter answers (no panic) with a canvas
        /// the tables can hold.
        #[test]
        fn any_json_converts_to_a_storable_canvas(v in arbitrary::json()) {
            let (flow, _) = convert(&v).unwrap();
            prop_assert!(split(&flow).is_ok(), "{:?}", split(&flow));
            connects_by_name_only(&flow);
        }

        #[test]
        fn any_n8n_like_workflow_converts_faithfully(v in arbitrary::n8n_workflow()) {
            let (flow, problems) = convert(&v).unwrap();
            prop_assert!(split(&flow).is_ok(), "{:?}", split(&flow));
            connects_by_name_only(&flow);
            for p in &problems {
                prop_assert!(p.node.is_some() || p.edge.is_some() || p.code == "invalid_graph", "{:?}", p);
            }
        }
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;
    use serde_json::json;

    /// A 2 MiB export can hold 160,000 connections: the converter refuses
    /// more than a graph may have instead of producing what validation
    /// refuses later.
    #[pg_test(error = "workflow: nodes and connections exceed the limit of 100000")]
    fn n8n_to_flow_refuses_more_connections_than_a_graph_may_have() {
        let targets = vec![json!({"node": "B"}); 100_000];
        let wf = json!({"nodes": [{"name": "A"}, {"name": "B"}], "connections": {"A": {"main": [targets]}}});
        super::n8n_to_flow(&wf.to_string());
    }

    #[pg_test]
    fn n8n_to_flow_reports_an_id_keyed_connection() {
        let wf = json!({"nodes": [{"name": "A", "id": "a1"}, {"name": "B", "id": "b1"}],
                        "connections": {"a1": {"main": [[{"node": "B"}]]}}});
        let out = Spi::get_one_with_args::<pgrx::JsonB>(
            "SELECT flowtrack.n8n_to_flow($1)",
            &[wf.to_string().into()],
        )
        .unwrap()
        .unwrap()
        .0;
        assert_ne!(out["flow"]["edges"][0]["source"], "A", "{out}");
        let problems = out["problems"].as_array().unwrap();
        assert!(
            problems.iter().any(|p| p["code"] == "dangling_connection"),
            "{out}"
        );
    }
}
