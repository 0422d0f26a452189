//! React Flow canvas state (`toObject()`: `{nodes, edges, viewport}`) to
//! table rows and back, losslessly. Mapped fields go to columns (node id,
//! type, data.label, data.config, position; edge id, source, target,
//! handles, condition, label); every other field, known or not, stays in
//! `ui` verbatim. `ui."$rf"` records the array position and which mapped
//! fields were absent (or had a shape the column cannot hold, in which case
//! the original stays in `ui`), so export rebuilds exactly what came in.

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use serde_json::{json, Map, Value};

use crate::error::raise;
use crate::graph::model::parse_json;

fn bad(what: String, hint: &str) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        what,
        None,
        hint,
    )
}

fn is_type_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_uppercase())
        && c.all(|x| x.is_ascii_uppercase() || x.is_ascii_digit() || x == '_')
}

fn split_node(i: usize, n: &Value) -> Value {
    let Some(obj) = n.as_object() else {
        bad(
            format!("nodes[{i}]: must be an object"),
            "Send React Flow's toObject() output.",
        )
    };
    let id = match obj.get("id") {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 200 => s.clone(),
        _ => bad(
            format!("nodes[{i}]: id must be a string of 1 to 200 characters"),
            "Every React Flow node has a string id.",
        ),
    };
    let ntype = match obj.get("type") {
        Some(Value::String(s)) if is_type_name(s) => s.clone(),
        other => bad(
            format!(
                "node \"{id}\": type {} is not a FlowTrack node type",
                other.map_or("(missing)".into(), Value::to_string)
            ),
            "Use an UPPER_SNAKE type from api.node_types, e.g. ACTION_SEND_EMAIL.",
        ),
    };
    let mut ui: Map<String, Value> = obj.clone();
    ui.remove("id");
    ui.remove("type");
    let mut absent = Vec::new();
    let position = match ui.remove("position") {
        Some(p @ Value::Object(_)) => p,
        Some(other) => {
            ui.insert("position".into(), other);
            absent.push("position");
            json!({"x": 0, "y": 0})
        }
        None => {
            absent.push("position");
            json!({"x": 0, "y": 0})
        }
    };
    let (mut label, mut config) = (Value::Null, json!({}));
    match ui.get_mut("data") {
        Some(Value::Object(d)) => {
            match d.remove("label") {
                Some(l @ (Value::String(_) | Value::Null)) => label = l,
                Some(other) => {
                    d.insert("label".into(), other);
                    absent.push("data.label");
                }
                None => absent.push("data.label"),
            }
            match d.remove("config") {
                Some(c @ Value::Object(_)) => config = c,
                Some(other) => {
                    d.insert("config".into(), other);
                    absent.push("data.config");
                }
                None => absent.push("data.config"),
            }
        }
        Some(_) => absent.extend(["data.label", "data.config"]),
        None => absent.extend(["data", "data.label", "data.config"]),
    }
    ui.insert("$rf".into(), json!({"i": i, "absent": absent}));
    json!({"node_key": id, "node_type": ntype, "label": label, "config": config, "position": position, "ui": ui})
}

fn split_edge(i: usize, e: &Value) -> Value {
    let Some(obj) = e.as_object() else {
        bad(
            format!("edges[{i}]: must be an object"),
            "Send React Flow's toObject() output.",
        )
    };
    let text = |k: &str| match obj.get(k) {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 200 => s.clone(),
        _ => bad(
            format!(
                "edges[{i}] ({}): {k} must be a string of 1 to 200 characters",
                obj.get("id").map_or("no id".into(), Value::to_string)
            ),
            "Every React Flow edge has string id, source and target.",
        ),
    };
    let (id, source, target) = (text("id"), text("source"), text("target"));
    let mut ui = obj.clone();
    for k in ["id", "source", "target"] {
        ui.remove(k);
    }
    let mut absent = Vec::new();
    let mut cols = Map::new();
    for (k, col) in [
        ("sourceHandle", "source_handle"),
        ("targetHandle", "target_handle"),
        ("label", "label"),
    ] {
        match ui.remove(k) {
            Some(v @ (Value::String(_) | Value::Null)) => {
                cols.insert(col.into(), v);
            }
            Some(other) => {
                ui.insert(k.into(), other);
                absent.push(k);
            }
            None => absent.push(k),
        }
    }
    match ui.remove("condition") {
        Some(c) => {
            cols.insert("condition".into(), c);
        }
        None => absent.push("condition"),
    }
    ui.insert("$rf".into(), json!({"i": i, "absent": absent}));
    cols.insert("edge_key".into(), Value::String(id));
    cols.insert("source_key".into(), Value::String(source));
    cols.insert("target_key".into(), Value::String(target));
    cols.insert("ui".into(), Value::Object(ui));
    Value::Object(cols)
}

/// Canvas state to rows: {nodes: [...], edges: [...], viewport}.
#[pg_extern(immutable, strict, parallel_safe)]
fn react_flow_split(flow: &str) -> pgrx::JsonB {
    let v = parse_json("flow", flow);
    let list = |k: &str| match v.get(k) {
        Some(Value::Array(a)) => a.clone(),
        None | Some(Value::Null) => Vec::new(),
        Some(_) => bad(
            format!("flow.{k}: must be an array"),
            "Send React Flow's toObject() output.",
        ),
    };
    let nodes: Vec<Value> = list("nodes")
        .iter()
        .enumerate()
        .map(|(i, n)| split_node(i, n))
        .collect();
    let edges: Vec<Value> = list("edges")
        .iter()
        .enumerate()
        .map(|(i, e)| split_edge(i, e))
        .collect();
    let viewport = v.get("viewport").cloned().unwrap_or(Value::Null);
    pgrx::JsonB(json!({"nodes": nodes, "edges": edges, "viewport": viewport}))
}

/// A stored row's `ui` object without its `$rf` bookkeeping, and the keys
/// that bookkeeping says the canvas did not have.
fn ui_of(row: &Value) -> (Map<String, Value>, Vec<String>) {
    let mut ui = row
        .get("ui")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let absent = ui
        .remove("$rf")
        .and_then(|r| r.get("absent").cloned())
        .and_then(|a| serde_json::from_value(a).ok())
        .unwrap_or_default();
    (ui, absent)
}

fn join_node(row: &Value) -> Value {
    let (mut ui, absent) = ui_of(row);
    let has = |k: &str| !absent.iter().any(|a| a == k);
    ui.insert("id".into(), row["node_key"].clone());
    ui.insert("type".into(), row["node_type"].clone());
    if has("position") {
        ui.insert("position".into(), row["position"].clone());
    }
    if has("data") || ui.contains_key("data") {
        let mut data = match ui.remove("data") {
            Some(Value::Object(d)) => d,
            Some(other) => {
                ui.insert("data".into(), other);
                return Value::Object(ui);
            }
            None => Map::new(),
        };
        if has("data.label") {
            data.insert("label".into(), row["label"].clone());
        }
        if has("data.config") {
            data.insert("config".into(), row["config"].clone());
        }
        ui.insert("data".into(), Value::Object(data));
    }
    Value::Object(ui)
}

fn join_edge(row: &Value) -> Value {
    let (mut ui, absent) = ui_of(row);
    ui.insert("id".into(), row["edge_key"].clone());
    ui.insert("source".into(), row["source_key"].clone());
    ui.insert("target".into(), row["target_key"].clone());
    for (k, col) in [
        ("sourceHandle", "source_handle"),
        ("targetHandle", "target_handle"),
        ("label", "label"),
        ("condition", "condition"),
    ] {
        if !absent.iter().any(|a| a == k) {
            ui.insert(k.into(), row.get(col).cloned().unwrap_or(Value::Null));
        }
    }
    Value::Object(ui)
}

/// Rows (as react_flow_split returns them) back to canvas state.
#[pg_extern(immutable, strict, parallel_safe)]
fn react_flow_join(rows: &str) -> pgrx::JsonB {
    let v = parse_json("rows", rows);
    let order = |x: &Value| x["ui"]["$rf"]["i"].as_u64().unwrap_or(u64::MAX);
    let mut nodes: Vec<Value> = v["nodes"].as_array().cloned().unwrap_or_default();
    let mut edges: Vec<Value> = v["edges"].as_array().cloned().unwrap_or_default();
    nodes.sort_by_key(order);
    edges.sort_by_key(order);
    let mut out = json!({
        "nodes": nodes.iter().map(join_node).collect::<Vec<_>>(),
        "edges": edges.iter().map(join_edge).collect::<Vec<_>>(),
    });
    if !v["viewport"].is_null() {
        out["viewport"] = v["viewport"].clone();
    }
    pgrx::JsonB(out)
}

extension_sql!(
    r#"
COMMENT ON FUNCTION flowtrack.react_flow_split(text) IS
  'React Flow toObject() state to workflow_nodes/workflow_edges rows (as JSON); unknown fields are kept in ui. 22023 names the node or edge that cannot be stored.';
COMMENT ON FUNCTION flowtrack.react_flow_join(text) IS
  'Rows (as react_flow_split returns them) back to React Flow state, exactly as imported.';
"#,
    name = "comments_reactflow",
    requires = [react_flow_split, react_flow_join]
);
