//! Validation: every problem of a graph at once, as rows of (code, node,
//! edge, message, hint). Codes:
//!
//! | code | what |
//! | --- | --- |
//! | `invalid_graph`, `invalid_node`, `duplicate_node`, `duplicate_edge` | shape |
//! | `dangling_edge` | an edge's source or target is not a node |
//! | `missing_trigger` | no trigger node |
//! | `unreachable_node` | no path from any trigger |
//! | `unbounded_cycle` | a cycle none of whose nodes sets `max_visits` |
//! | `unknown_node_type` | type not in `api.node_types` |
//! | `invalid_config` | config does not match the type's JSON Schema, or a schedule's cron or timezone is invalid |
//! | `invalid_condition` | an edge or LOGIC_CONDITION condition does not parse |

use pgrx::prelude::*;
use serde_json::Value;

use crate::graph::analysis::{cyclic_components, reachable};
use crate::graph::condition;
use crate::graph::model::{Graph, Problem};
use crate::graph::registry::{self, Registry};

/// The handles a LOGIC_CONDITION routes by its own condition.
pub fn is_branch_handle(h: Option<&str>) -> bool {
    matches!(h, Some("true" | "false"))
}

pub fn max_visits(config: &Value) -> Option<u32> {
    config
        .get("max_visits")
        .and_then(Value::as_u64)
        .filter(|&n| (1..=1000).contains(&n))
        .map(|n| n as u32)
}

pub fn validate(g: &Graph, reg: &Registry) -> Vec<Problem> {
    let mut out = g.problems.clone();
    for e in &g.edges {
        crate::interrupts::check();
        for (end, key, resolved) in [("source", &e.source, e.from), ("target", &e.target, e.to)] {
            if resolved.is_none() {
                out.push(Problem {
                    code: "dangling_edge",
                    node: (end == "target" && e.from.is_some()).then(|| e.source.clone()),
                    edge: Some(e.key.clone()),
                    message: format!(
                        "edge \"{}\": {end} \"{key}\" is not a node of this workflow",
                        e.key
                    ),
                    hint: "Connect the edge to an existing node, or delete it.".into(),
                });
            }
        }
        if let Some(c) = &e.condition {
            if let Err(msg) = condition::parse(c) {
                out.push(Problem {
                    code: "invalid_condition",
                    node: e.from.map(|_| e.source.clone()),
                    edge: Some(e.key.clone()),
                    message: format!("edge \"{}\": {msg}", e.key),
                    hint: condition::HINT.into(),
                });
            }
        }
    }
    for (i, n) in g.nodes.iter().enumerate() {
        crate::interrupts::check();
        if n.ntype.is_empty() {
            continue;
        }
        let Some(t) = reg.get(&n.ntype) else {
            out.push(Problem::node(
                "unknown_node_type",
                &n.key,
                format!("node \"{}\": unknown node type \"{}\"", n.key, n.ntype),
                "Use a type listed in api.node_types, or register the type there.",
            ));
            continue;
        };
        for (pointer, msg) in crate::graph::schema::check(&t.schema, &n.config) {
            out.push(Problem::node(
                "invalid_config",
                &n.key,
                format!("node \"{}\" ({}): config{pointer} {msg}", n.key, n.ntype),
                "See the type's config_schema in api.node_types.",
            ));
        }
        if n.ntype == "TRIGGER_SCHEDULE" {
            if let Some((msg, hint)) = crate::schedule::config_problem(&n.config) {
                out.push(Problem::node(
                    "invalid_config",
                    &n.key,
                    format!("node \"{}\" ({}): {msg}", n.key, n.ntype),
                    hint,
                ));
            }
        }
        if t.executor == registry::Executor::Condition {
            match n.config.get("condition") {
                Some(c) => {
                    if let Err(msg) = condition::parse(c) {
                        out.push(Problem::node(
                            "invalid_condition",
                            &n.key,
                            format!("node \"{}\": config.{msg}", n.key),
                            condition::HINT,
                        ));
                    }
                }
                None => {
                    if let Some(&e) = g.out[i]
                        .iter()
                        .find(|&&e| is_branch_handle(g.edges[e].source_handle.as_deref()))
                    {
                        out.push(Problem {
                            code: "invalid_condition",
                            node: Some(n.key.clone()),
                            edge: Some(g.edges[e].key.clone()),
                            message: format!(
                                "node \"{}\": edge \"{}\" leaves the {} handle but the node has no config.condition",
                                n.key,
                                g.edges[e].key,
                                g.edges[e].source_handle.as_deref().unwrap_or_default()
                            ),
                            hint: "Set config.condition, or put the condition on the edge instead.".into(),
                        });
                    }
                }
            }
        }
    }
    let triggers: Vec<usize> = (0..g.nodes.len()).filter(|&i| g.is_trigger(i)).collect();
    if triggers.is_empty() {
        out.push(Problem::graph(
            "missing_trigger",
            "workflow: has no trigger node, so nothing can start it".into(),
            "Add a TRIGGER_* node (e.g. TRIGGER_FORM or TRIGGER_MANUAL) and connect it.",
        ));
    } else {
        let seen = reachable(g, &triggers, &|_| true);
        for (i, n) in g.nodes.iter().enumerate() {
            if !seen[i] {
                out.push(Problem::node(
                    "unreachable_node",
                    &n.key,
                    format!("node \"{}\": no path leads to it from a trigger", n.key),
                    "Connect it to the graph, or delete it.",
                ));
            }
        }
    }
    let bounded: Vec<bool> = g
        .nodes
        .iter()
        .map(|n| max_visits(&n.config).is_some())
        .collect();
    for comp in cyclic_components(g, &|i| !bounded[i]) {
        let names: Vec<&str> = comp
            .iter()
            .take(10)
            .map(|&i| g.nodes[i].key.as_str())
            .collect();
        let more = if comp.len() > 10 {
            format!(" and {} more", comp.len() - 10)
        } else {
            String::new()
        };
        out.push(Problem::node(
            "unbounded_cycle",
            &g.nodes[comp[0]].key,
            format!(
                "node \"{}\": on a cycle through {}{more} that nothing bounds",
                g.nodes[comp[0]].key,
                names.join(" -> ")
            ),
            "Set config.max_visits (1-1000) on a node of the loop, e.g. the delay.",
        ));
    }
    out
}

type ProblemRow = (String, Option<String>, Option<String>, String, String);

pub fn rows(problems: Vec<Problem>) -> TableIterator<'static, ProblemRow> {
    TableIterator::new(
        problems
            .into_iter()
            .map(|p| (p.code.to_string(), p.node, p.edge, p.message, p.hint)),
    )
}

/// Every problem of a graph (canonical graph JSON as text), checked against
/// the registry in api.node_types. No rows means valid. STABLE truthfully:
/// the registry is read with a read-only SPI query (no transaction id, the
/// caller's snapshot), and nothing is written.
#[allow(clippy::type_complexity)]
#[pg_extern(stable, strict, parallel_safe)]
fn validate_graph(
    graph: &str,
) -> TableIterator<
    'static,
    (
        name!(code, String),
        name!(node, Option<String>),
        name!(edge, Option<String>),
        name!(message, String),
        name!(hint, String),
    ),
> {
    let g = Graph::parse_text("graph", graph);
    let reg = Spi::connect(registry::load);
    rows(validate(&g, &reg))
}

extension_sql!(
    r#"
COMMENT ON FUNCTION flowtrack.validate_graph(text) IS
  'Every problem of a workflow graph at once, as (code, node, edge, message, hint): dangling_edge, unreachable_node, missing_trigger, unbounded_cycle, unknown_node_type, invalid_config, invalid_condition, and shape codes. No rows = valid.';
"#,
    name = "comments_validate",
    requires = [validate_graph]
);
