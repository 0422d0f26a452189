//! n8n workflow JSON (`{nodes, connections}`) to a FlowTrack canvas through
//! a node-type mapping. Nothing is dropped: a node whose type has no
//! FlowTrack equivalent is imported as `N8N_<TYPE>` (which validation then
//! reports as an unknown type), every original node is kept verbatim under
//! the canvas node's `n8n` field, and each thing that could not be mapped is
//! returned as a problem (code, node, edge, message, hint).

use std::collections::{HashMap, HashSet};

use pgrx::prelude::*;
use serde_json::{json, Map, Value};

use crate::graph::model::{parse_json, Problem};

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

pub fn convert(v: &Value) -> (Value, Vec<Problem>) {
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
    let mut nodes = Vec::with_capacity(nodes_in.len());
    let mut names: HashSet<String> = HashSet::new();
    let mut types: HashMap<String, String> = HashMap::new();
    // Some exports key connections by node id instead of name.
    let mut by_id: HashMap<String, String> = HashMap::new();
    for (i, n) in nodes_in.iter().enumerate() {
        let t = s(n, "type").unwrap_or("").to_string();
        let mut name = s(n, "name").map(str::to_string).unwrap_or_default();
        if name.is_empty() || name.chars().count() > 200 {
            let fixed = format!("node-{}", i + 1);
            problems.push(Problem::node(
                "renamed_node",
                &fixed,
                format!("nodes[{i}]: name missing or over 200 characters; imported as \"{fixed}\""),
                "Give the node a short unique name.",
            ));
            name = fixed;
        }
        if names.contains(&name) {
            let fixed = format!("{name} #{}", i + 1);
            problems.push(Problem::node(
                "duplicate_node",
                &fixed,
                format!(
                    "node \"{name}\": the name is used twice; this one imported as \"{fixed}\""
                ),
                "n8n connects nodes by name; rename one of them.",
            ));
            name = fixed;
        }
        names.insert(name.clone());
        if let Some(id) = s(n, "id").filter(|id| !id.is_empty()) {
            by_id.entry(id.to_string()).or_insert_with(|| name.clone());
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
                    format!("node \"{name}\": n8n type \"{t}\" has no FlowTrack equivalent; imported as {ft}"),
                    "Replace it with a FlowTrack node, or register the type in api.node_types."));
                (ft, json!({}))
            }
        };
        types.insert(name.clone(), t.clone());
        let position = match n.get("position") {
            Some(Value::Array(p)) if p.len() == 2 => json!({"x": p[0], "y": p[1]}),
            _ => json!({"x": 0, "y": 0}),
        };
        nodes.push(json!({
            "id": name, "type": ntype, "position": position,
            "data": {"label": name, "config": config}, "n8n": n,
        }));
    }
    let mut edges = Vec::new();
    let mut edge_ids = HashSet::new();
    if let Some(Value::Object(conns)) = v.get("connections") {
        let resolve = |k: &str| -> String {
            if names.contains(k) {
                k.to_string()
            } else if let Some(n) = by_id.get(k) {
                n.clone()
            } else if k.is_empty() {
                "(empty name)".to_string()
            } else {
                k.to_string()
            }
        };
        for (raw_source, by_type) in conns {
            let source = &resolve(raw_source);
            if !names.contains(source) {
                problems.push(Problem::node(
                    "dangling_connection",
                    source,
                    format!("connections: source \"{source}\" is not a node"),
                    "Remove the connection or add the node.",
                ));
            }
            let Some(by_type) = by_type.as_object() else {
                continue;
            };
            for (ctype, outputs) in by_type {
                let Some(outputs) = outputs.as_array() else {
                    continue;
                };
                for (out, targets) in outputs.iter().enumerate() {
                    for c in targets.as_array().into_iter().flatten() {
                        let Some(raw_target) = s(c, "node") else {
                            problems.push(Problem::node("invalid_connection", source,
                                format!("connections.{source}.{ctype}[{out}]: an entry has no target node"), "Remove it."));
                            continue;
                        };
                        let target = &resolve(raw_target);
                        let idx = c.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let source_handle = match (ctype.as_str(), out) {
                            ("main", 0)
                                if is_branching(types.get(source).map_or("", String::as_str)) =>
                            {
                                json!("true")
                            }
                            ("main", 1)
                                if is_branching(types.get(source).map_or("", String::as_str)) =>
                            {
                                json!("false")
                            }
                            ("main", 0) => Value::Null,
                            (t, k) => json!(format!("{t}:{k}")),
                        };
                        let target_handle = match (ctype.as_str(), idx) {
                            ("main", 0) => Value::Null,
                            (t, k) => json!(format!("{t}:{k}")),
                        };
                        let mut id = format!("{source}:{ctype}:{out}->{target}:{idx}");
                        while !edge_ids.insert(id.clone()) {
                            id.push('\'');
                        }
                        if !names.contains(target) {
                            problems.push(Problem {
                                code: "dangling_connection",
                                node: Some(source.clone()),
                                edge: Some(id.clone()),
                                message: format!(
                                    "edge \"{id}\": target \"{target}\" is not a node"
                                ),
                                hint: "Remove the connection or add the node.".into(),
                            });
                        }
                        if id.chars().count() > 200 {
                            id = format!("e{}", edges.len() + 1);
                        }
                        let mut e = json!({"id": id, "source": source, "target": target,
                                           "sourceHandle": source_handle, "targetHandle": target_handle});
                        if raw_source != source || raw_target != target {
                            e["n8n"] = json!({"source": raw_source, "target": raw_target});
                        }
                        edges.push(e);
                    }
                }
            }
        }
    }
    let mut flow = json!({"nodes": nodes, "edges": edges});
    if let Some(name) = v.get("name") {
        flow["name"] = name.clone();
    }
    (flow, problems)
}

/// n8n JSON to {flow (React Flow state), problems}.
#[pg_extern(immutable, strict, parallel_safe)]
fn n8n_to_flow(workflow: &str) -> pgrx::JsonB {
    let (flow, problems) = convert(&parse_json("workflow", workflow));
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
