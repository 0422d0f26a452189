//! The graph as the engine sees it: nodes and edges parsed from the canonical
//! graph JSON (`{nodes: [{id, type, data: {label, config}}], edges: [{id,
//! source, target, sourceHandle, targetHandle, condition}]}`, the shape of
//! `api.workflow_versions.graph` and of React Flow's `toObject()`), with
//! adjacency lists. Parsing never fails: shape defects become [`Problem`]s so
//! validation can report every one of them at once.

use std::collections::HashMap;

use pgrx::PgSqlErrorCode;
use serde_json::Value;

use crate::error::raise;

/// Largest graph the engine accepts (nodes + edges). Bigger input is refused
/// with 54000 instead of being worked on for seconds.
pub const MAX_ELEMENTS: usize = 100_000;

/// Deepest JSON nesting accepted (serde_json's own limit is 128).
pub const MAX_DEPTH_HINT: &str = "JSON may nest at most 128 levels.";

/// One finding of validation or import: a machine-readable code, the node
/// and/or edge it concerns, a message naming them, and a hint.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub code: &'static str,
    pub node: Option<String>,
    pub edge: Option<String>,
    pub message: String,
    pub hint: String,
}

impl Problem {
    pub fn node(code: &'static str, node: &str, message: String, hint: &str) -> Self {
        Self {
            code,
            node: Some(node.to_string()),
            edge: None,
            message,
            hint: hint.to_string(),
        }
    }

    pub fn edge(code: &'static str, edge: &str, message: String, hint: &str) -> Self {
        Self {
            code,
            node: None,
            edge: Some(edge.to_string()),
            message,
            hint: hint.to_string(),
        }
    }

    pub fn graph(code: &'static str, message: String, hint: &str) -> Self {
        Self {
            code,
            node: None,
            edge: None,
            message,
            hint: hint.to_string(),
        }
    }

    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "code": self.code, "node": self.node, "edge": self.edge,
            "message": self.message, "hint": self.hint,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub key: String,
    pub ntype: String,
    pub config: Value,
}

#[derive(Debug, Clone)]
pub struct Edge {
    pub key: String,
    pub source: String,
    pub target: String,
    pub source_handle: Option<String>,
    pub condition: Option<Value>,
    /// Resolved node indices; `None` when the edge dangles.
    pub from: Option<usize>,
    pub to: Option<usize>,
}

#[derive(Debug, Clone, Default)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    pub index: HashMap<String, usize>,
    /// Outgoing / incoming edge indices per node (resolved edges only).
    pub out: Vec<Vec<usize>>,
    pub inc: Vec<Vec<usize>>,
    /// Shape problems found while parsing.
    pub problems: Vec<Problem>,
}

/// Parse JSON text, refusing what is not JSON with 22P02 and what nests too
/// deeply with 54001, both naming `field`.
pub fn parse_json(field: &str, text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| {
        let (code, hint) = if e.to_string().contains("recursion limit") {
            (
                PgSqlErrorCode::ERRCODE_STATEMENT_TOO_COMPLEX,
                MAX_DEPTH_HINT,
            )
        } else {
            (
                PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION,
                "Send a JSON object.",
            )
        };
        raise(code, format!("{field}: {e}"), None, hint)
    })
}

fn str_field<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

/// A node's key, given as a string or (n8n, older canvases) a number.
fn key_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Graph {
    pub fn parse_text(field: &str, text: &str) -> Graph {
        Graph::from_value(&parse_json(field, text))
    }

    pub fn from_value(v: &Value) -> Graph {
        let mut g = Graph::default();
        let empty = Vec::new();
        let nodes = match v.get("nodes") {
            Some(Value::Array(a)) => a,
            None | Some(Value::Null) => &empty,
            Some(_) => {
                g.problems.push(Problem::graph(
                    "invalid_graph",
                    "nodes: must be an array".into(),
                    "Send {\"nodes\": [...], \"edges\": [...]}.",
                ));
                &empty
            }
        };
        let edges = match v.get("edges") {
            Some(Value::Array(a)) => a,
            None | Some(Value::Null) => &empty,
            Some(_) => {
                g.problems.push(Problem::graph(
                    "invalid_graph",
                    "edges: must be an array".into(),
                    "Send {\"nodes\": [...], \"edges\": [...]}.",
                ));
                &empty
            }
        };
        if nodes.len() + edges.len() > MAX_ELEMENTS {
            raise(
                PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                format!(
                    "graph: {} nodes and {} edges exceed the limit of {MAX_ELEMENTS} elements",
                    nodes.len(),
                    edges.len()
                ),
                None,
                "Split the workflow into smaller ones.",
            );
        }
        for (i, n) in nodes.iter().enumerate() {
            crate::interrupts::check();
            let Some(key) = key_of(n.get("id")) else {
                g.problems.push(Problem::graph(
                    "invalid_node",
                    format!("nodes[{i}]: has no id"),
                    "Every node needs a non-empty string id.",
                ));
                continue;
            };
            let ntype = str_field(n, "type").unwrap_or("").to_string();
            if ntype.is_empty() {
                g.problems.push(Problem::node(
                    "invalid_node",
                    &key,
                    format!("node \"{key}\": has no type"),
                    "Set type to a registered node type, e.g. ACTION_SEND_EMAIL.",
                ));
            }
            let data = n.get("data");
            let config = data
                .and_then(|d| d.get("config"))
                .cloned()
                .unwrap_or_else(|| Value::Object(Default::default()));
            if g.index.contains_key(&key) {
                g.problems.push(Problem::node(
                    "duplicate_node",
                    &key,
                    format!("node \"{key}\": the id is used by more than one node"),
                    "Give every node a unique id.",
                ));
                continue;
            }
            g.index.insert(key.clone(), g.nodes.len());
            g.nodes.push(Node { key, ntype, config });
        }
        g.out = vec![Vec::new(); g.nodes.len()];
        g.inc = vec![Vec::new(); g.nodes.len()];
        let mut seen = HashMap::new();
        for (i, e) in edges.iter().enumerate() {
            crate::interrupts::check();
            let key = key_of(e.get("id")).unwrap_or_else(|| format!("edges[{i}]"));
            if seen.insert(key.clone(), ()).is_some() {
                g.problems.push(Problem::edge(
                    "duplicate_edge",
                    &key,
                    format!("edge \"{key}\": the id is used by more than one edge"),
                    "Give every edge a unique id.",
                ));
                continue;
            }
            let source = key_of(e.get("source")).unwrap_or_default();
            let target = key_of(e.get("target")).unwrap_or_default();
            let from = g.index.get(&source).copied();
            let to = g.index.get(&target).copied();
            let condition = e.get("condition").filter(|c| !c.is_null()).cloned();
            let idx = g.edges.len();
            if let (Some(f), Some(t)) = (from, to) {
                g.out[f].push(idx);
                g.inc[t].push(idx);
            }
            g.edges.push(Edge {
                key,
                source,
                target,
                source_handle: str_field(e, "sourceHandle").map(str::to_string),
                condition,
                from,
                to,
            });
        }
        g
    }

    pub fn is_trigger(&self, i: usize) -> bool {
        self.nodes[i].ntype.starts_with("TRIGGER_")
    }
}
