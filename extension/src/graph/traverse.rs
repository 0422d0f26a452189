//! Traversal for clients: topological order, the successors of a node given
//! an execution context, the reachable set, and an explanation of why each
//! node would or would not run.

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use serde_json::Value;

use crate::error::raise;
use crate::graph::analysis::{reachable as reach, topo_order};
use crate::graph::condition;
use crate::graph::model::{parse_json, Graph};
use crate::graph::plan::{Branch, Plan};
use crate::graph::registry::Executor;

fn plan_of(graph: &str) -> Plan {
    Plan::compile(Graph::parse_text("graph", graph), None)
}

/// How a node routes when reached in `ctx`: conditions evaluate their own
/// condition, everything else finishes normally.
fn branch_of(plan: &Plan, n: usize, ctx: &Value) -> Branch {
    match (&plan.exec[n], &plan.node_cond[n]) {
        (Some(Executor::Condition), Ok(Some(c))) => Branch::Cond(condition::eval(c, ctx)),
        (Some(Executor::Condition), _) => Branch::Cond(true),
        _ => Branch::Done,
    }
}

fn edge_reason(plan: &Plan, e: usize, ctx: &Value, taken: bool) -> String {
    let edge = &plan.g.edges[e];
    match &plan.edge_cond[e] {
        Ok(Some(c)) => format!("edge \"{}\": {}", edge.key, condition::explain(c, ctx)),
        Err(msg) => format!("edge \"{}\": {msg}", edge.key),
        Ok(None) => match edge.source_handle.as_deref() {
            Some(h @ ("true" | "false" | "error")) => {
                format!("edge \"{}\" leaves the {h} handle: {taken}", edge.key)
            }
            _ => format!("edge \"{}\": unconditional", edge.key),
        },
    }
}

/// Nodes in topological order (back edges of bounded loops left out).
#[pg_extern(immutable, strict, parallel_safe)]
fn topological_order(
    graph: &str,
) -> TableIterator<'static, (name!(position, i32), name!(node, String))> {
    let plan = plan_of(graph);
    let order = topo_order(&plan.g, &plan.back);
    let keys: Vec<(i32, String)> = order
        .into_iter()
        .enumerate()
        .map(|(i, n)| (i as i32 + 1, plan.g.nodes[n].key.clone()))
        .collect();
    TableIterator::new(keys)
}

/// The edges leaving `node`, whether each is taken in `context`, and why.
#[allow(clippy::type_complexity)]
#[pg_extern(immutable, parallel_safe)]
fn successors(
    graph: &str,
    node: &str,
    context: default!(Option<&str>, "'{}'"),
) -> TableIterator<
    'static,
    (
        name!(edge, String),
        name!(target, String),
        name!(taken, bool),
        name!(reason, String),
    ),
> {
    let plan = plan_of(graph);
    let ctx = context.map_or(Value::Null, |c| parse_json("context", c));
    let Some(&n) = plan.g.index.get(node) else {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("node: \"{node}\" is not a node of this graph"),
            None,
            "Pass a node id from graph.nodes.",
        )
    };
    let branch = branch_of(&plan, n, &ctx);
    let rows: Vec<_> = plan.g.out[n]
        .iter()
        .map(|&e| {
            let taken = plan.follows(e, branch, &ctx).unwrap_or(false);
            (
                plan.g.edges[e].key.clone(),
                plan.g.edges[e].target.clone(),
                taken,
                edge_reason(&plan, e, &ctx, taken),
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// Nodes reachable from the triggers; with a context, only along edges
/// whose conditions hold in it.
#[pg_extern(immutable, parallel_safe)]
fn reachable(
    graph: &str,
    context: default!(Option<&str>, "NULL"),
) -> TableIterator<'static, (name!(node, String),)> {
    let plan = plan_of(graph);
    let g = &plan.g;
    let triggers: Vec<usize> = (0..g.nodes.len()).filter(|&i| g.is_trigger(i)).collect();
    let seen = match context {
        None => reach(g, &triggers, &|_| true),
        Some(c) => {
            let ctx = parse_json("context", c);
            let branches: Vec<Branch> = (0..g.nodes.len())
                .map(|n| branch_of(&plan, n, &ctx))
                .collect();
            reach(g, &triggers, &|e| {
                let from = g.edges[e].from.expect("resolved");
                plan.follows(e, branches[from], &ctx).unwrap_or(false)
            })
        }
    };
    let rows: Vec<(String,)> = (0..g.nodes.len())
        .filter(|&i| seen[i])
        .map(|i| (g.nodes[i].key.clone(),))
        .collect();
    TableIterator::new(rows)
}

/// For each node in topological order: would it run for this context, and
/// why (which incoming edges were taken or not, with each condition's
/// values). Delays and jobs are assumed to complete.
#[allow(clippy::type_complexity)]
#[pg_extern(immutable, parallel_safe)]
fn explain(
    graph: &str,
    context: default!(Option<&str>, "'{}'"),
) -> TableIterator<
    'static,
    (
        name!(node, String),
        name!(node_type, String),
        name!(runs, bool),
        name!(reason, String),
    ),
> {
    let plan = plan_of(graph);
    let g = &plan.g;
    let ctx = context.map_or(Value::Null, |c| parse_json("context", c));
    let mut runs = vec![false; g.nodes.len()];
    let mut taken = vec![false; g.edges.len()];
    let mut rows = Vec::with_capacity(g.nodes.len());
    for n in topo_order(g, &plan.back) {
        let reason = if g.is_trigger(n) {
            runs[n] = true;
            "trigger: starts the execution".to_string()
        } else if plan.fwd_in[n].is_empty() {
            "no incoming edge".to_string()
        } else {
            let mut parts = Vec::new();
            for &e in &plan.fwd_in[n] {
                let from = g.edges[e].from.expect("resolved");
                if !runs[from] {
                    parts.push(format!(
                        "edge \"{}\": source \"{}\" does not run",
                        g.edges[e].key, g.nodes[from].key
                    ));
                } else {
                    parts.push(edge_reason(&plan, e, &ctx, taken[e]));
                }
            }
            runs[n] = plan.fwd_in[n].iter().any(|&e| taken[e]);
            parts.join("; ")
        };
        if runs[n] {
            let b = branch_of(&plan, n, &ctx);
            for &e in &g.out[n] {
                taken[e] = plan.follows(e, b, &ctx).unwrap_or(false);
            }
        }
        rows.push((
            g.nodes[n].key.clone(),
            g.nodes[n].ntype.clone(),
            runs[n],
            reason,
        ));
    }
    TableIterator::new(rows)
}

extension_sql!(
    r#"
COMMENT ON FUNCTION flowtrack.topological_order(text) IS
  'Nodes of a graph (JSON text) in topological order; back edges of bounded loops are left out.';
COMMENT ON FUNCTION flowtrack.successors(text, text, text) IS
  'Edges leaving a node: target, whether taken in the given JSON context, and why.';
COMMENT ON FUNCTION flowtrack.reachable(text, text) IS
  'Nodes reachable from the triggers; with a context, only along edges whose conditions hold.';
COMMENT ON FUNCTION flowtrack.explain(text, text) IS
  'Per node in topological order: would it run for this context, and why (edge conditions with their values).';
"#,
    name = "comments_traverse",
    requires = [topological_order, successors, reachable, explain]
);
