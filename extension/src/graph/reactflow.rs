//! React Flow canvas state (`toObject()`: `{nodes, edges, viewport}`) to
//! table rows and back, losslessly. Mapped fields go to columns (node id,
//! type, data.label, data.config, position; edge id, source, target,
//! handles, condition, label); every other field, known or not, stays in
//! `ui` verbatim. `ui."$rf"` records the array position and which mapped
//! fields were absent (or had a shape the column cannot hold, in which case
//! the original stays in `ui`), so export rebuilds exactly what came in.

use std::collections::HashSet;

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use serde_json::{json, Map, Value};

use crate::error::raise;
use crate::graph::model::parse_json;

/// Canvas state the table cannot hold: 22023 with this message and hint.
#[derive(Debug, PartialEq)]
pub struct Refusal {
    pub message: String,
    pub hint: &'static str,
}

fn bad<T>(message: String, hint: &'static str) -> Result<T, Refusal> {
    Err(Refusal { message, hint })
}

/// Longest node id / edge id / endpoint, in characters: what the columns'
/// `length(...) BETWEEN 1 AND 200` checks count (not bytes: 67 CJK
/// characters are 201 bytes and still a valid id).
const MAX_KEY: usize = 200;

/// A non-empty string of at most [`MAX_KEY`] characters.
fn key(v: Option<&Value>) -> Option<&str> {
    match v {
        Some(Value::String(s)) if !s.is_empty() && s.chars().nth(MAX_KEY).is_none() => Some(s),
        _ => None,
    }
}

fn is_type_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_uppercase())
        && c.all(|x| x.is_ascii_uppercase() || x.is_ascii_digit() || x == '_')
}

fn split_node(i: usize, n: &Value) -> Result<Value, Refusal> {
    let Some(obj) = n.as_object() else {
        return bad(
            format!("nodes[{i}]: must be an object"),
            "Send React Flow's toObject() output.",
        );
    };
    let Some(id) = key(obj.get("id")).map(str::to_string) else {
        return bad(
            format!("nodes[{i}]: id must be a string of 1 to {MAX_KEY} characters"),
            "Every React Flow node has a string id.",
        );
    };
    let ntype = match obj.get("type") {
        Some(Value::String(s)) if is_type_name(s) => s.clone(),
        other => {
            let shown = other.map_or("(missing)".into(), Value::to_string);
            let shown: String = shown.chars().take(100).collect();
            return bad(
                format!("node \"{id}\": type {shown} is not a FlowTrack node type"),
                "Use an UPPER_SNAKE type from api.node_types, e.g. ACTION_SEND_EMAIL.",
            );
        }
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
    Ok(
        json!({"node_key": id, "node_type": ntype, "label": label, "config": config, "position": position, "ui": ui}),
    )
}

fn split_edge(i: usize, e: &Value) -> Result<Value, Refusal> {
    let Some(obj) = e.as_object() else {
        return bad(
            format!("edges[{i}]: must be an object"),
            "Send React Flow's toObject() output.",
        );
    };
    let text = |k: &str| match key(obj.get(k)) {
        Some(s) => Ok(s.to_string()),
        None => {
            let id = obj.get("id").map_or("no id".into(), Value::to_string);
            let id: String = id.chars().take(100).collect();
            bad(
                format!("edges[{i}] ({id}): {k} must be a string of 1 to {MAX_KEY} characters"),
                "Every React Flow edge has string id, source and target.",
            )
        }
    };
    let (id, source, target) = (text("id")?, text("source")?, text("target")?);
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
    Ok(Value::Object(cols))
}

/// Canvas state to rows: {nodes: [...], edges: [...], viewport}, or why
/// the tables cannot hold it (naming the node or edge). Ids must be unique,
/// as the tables' keys are: a duplicate is refused here rather than by a
/// unique index whose error would name the constraint.
pub fn split(v: &Value) -> Result<Value, Refusal> {
    let empty = Vec::new();
    let list = |k: &str| match v.get(k) {
        Some(Value::Array(a)) => Ok(a),
        None | Some(Value::Null) => Ok(&empty),
        Some(_) => bad(
            format!("flow.{k}: must be an array"),
            "Send React Flow's toObject() output.",
        ),
    };
    let (nodes_in, edges_in) = (list("nodes")?, list("edges")?);
    let mut seen = HashSet::new();
    let mut nodes = Vec::with_capacity(nodes_in.len());
    for (i, n) in nodes_in.iter().enumerate() {
        crate::interrupts::check();
        let row = split_node(i, n)?;
        if !seen.insert(row["node_key"].as_str().unwrap_or_default().to_string()) {
            return bad(
                format!(
                    "node {}: the id is used by more than one node",
                    row["node_key"]
                ),
                "Give every node a unique id.",
            );
        }
        nodes.push(row);
    }
    seen.clear();
    let mut edges = Vec::with_capacity(edges_in.len());
    for (i, e) in edges_in.iter().enumerate() {
        crate::interrupts::check();
        let row = split_edge(i, e)?;
        if !seen.insert(row["edge_key"].as_str().unwrap_or_default().to_string()) {
            return bad(
                format!(
                    "edge {}: the id is used by more than one edge",
                    row["edge_key"]
                ),
                "Give every edge a unique id.",
            );
        }
        edges.push(row);
    }
    let viewport = v.get("viewport").cloned().unwrap_or(Value::Null);
    Ok(json!({"nodes": nodes, "edges": edges, "viewport": viewport}))
}

/// Canvas state to rows; 22023 naming the node or edge the tables cannot hold.
#[pg_extern(immutable, strict, parallel_safe)]
fn react_flow_split(flow: &str) -> pgrx::JsonB {
    match split(&parse_json("flow", flow)) {
        Ok(rows) => pgrx::JsonB(rows),
        Err(Refusal { message, hint }) => raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            message,
            None,
            hint,
        ),
    }
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

#[cfg(test)]
mod unit_tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::split;
    use crate::graph::arbitrary;

    fn flow(id: &str) -> serde_json::Value {
        json!({"nodes": [{"id": id, "type": "TRIGGER_MANUAL", "position": {"x": 0, "y": 0}}],
               "edges": [{"id": id, "source": id, "target": id}]})
    }

    #[test]
    fn ids_are_counted_in_characters() {
        let cjk = "語".repeat(67); // 201 bytes
        split(&flow(&cjk)).expect("67 characters fit");
        split(&flow(&"語".repeat(200))).expect("200 characters fit");
        let err = split(&flow(&"語".repeat(201))).unwrap_err();
        assert!(err.message.contains("1 to 200 characters"), "{err:?}");
    }

    #[test]
    fn duplicate_ids_are_refused_naming_the_id() {
        let dup = json!({"nodes": [{"id": "a", "type": "TRIGGER_MANUAL"}, {"id": "a", "type": "LOGIC_CONDITION"}]});
        let err = split(&dup).unwrap_err();
        assert!(err.message.starts_with("node \"a\""), "{err:?}");
        let dup = json!({"edges": [{"id": "e", "source": "a", "target": "b"}, {"id": "e", "source": "b", "target": "a"}]});
        let err = split(&dup).unwrap_err();
        assert!(err.message.starts_with("edge \"e\""), "{err:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any JSON is split into rows or refused with a message; rows have
        /// unique keys of 1 to 200 characters, as the tables require.
        #[test]
        fn any_json_splits_or_is_refused(v in arbitrary::json()) {
            if let Ok(rows) = split(&v) {
                for (list, k) in [("nodes", "node_key"), ("edges", "edge_key")] {
                    let keys: Vec<&str> = rows[list].as_array().unwrap().iter().map(|r| r[k].as_str().unwrap()).collect();
                    let unique: std::collections::HashSet<&&str> = keys.iter().collect();
                    prop_assert_eq!(unique.len(), keys.len());
                    prop_assert!(keys.iter().all(|k| (1..=200).contains(&k.chars().count())));
                }
            }
        }
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;
    use serde_json::json;

    #[pg_test(error = "node \"a\": the id is used by more than one node")]
    fn react_flow_split_refuses_a_repeated_node_id() {
        let flow = json!({"nodes": [{"id": "a", "type": "TRIGGER_MANUAL"}, {"id": "a", "type": "LOGIC_DELAY"}]});
        super::react_flow_split(&flow.to_string());
    }

    #[pg_test]
    fn react_flow_split_counts_characters() {
        let id = "語".repeat(67);
        let flow = json!({"nodes": [{"id": id, "type": "TRIGGER_MANUAL"}]});
        let rows = Spi::get_one_with_args::<pgrx::JsonB>(
            "SELECT flowtrack.react_flow_split($1)",
            &[flow.to_string().into()],
        )
        .unwrap()
        .unwrap()
        .0;
        assert_eq!(rows["nodes"][0]["node_key"], id);
    }
}
