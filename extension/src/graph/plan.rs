//! A version graph compiled for execution: conditions parsed, executors
//! resolved from the registry, back edges and loops found. Published
//! versions are immutable, so a compiled plan is cached per backend, keyed
//! by (workflow_id, version); an execution reads its version's graph and the
//! registry once per backend, not once per step.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use pgrx::spi::SpiClient;
use pgrx::PgSqlErrorCode;
use serde_json::Value;

use crate::error::raise;
use crate::graph::analysis::{back_edges, cyclic_components};
use crate::graph::condition::{self, Cond};
use crate::graph::model::Graph;
use crate::graph::registry::{self, Executor};
use crate::graph::spi;
use crate::graph::validate::max_visits;

pub struct Plan {
    pub g: Graph,
    pub back: Vec<bool>,
    /// Loop (cyclic component) of each node; 0 = on no loop.
    pub looped: Vec<usize>,
    /// Incoming edges that are not back edges: the fan-in set.
    pub fwd_in: Vec<Vec<usize>>,
    pub edge_cond: Vec<Result<Option<Cond>, String>>,
    pub node_cond: Vec<Result<Option<Cond>, String>>,
    pub exec: Vec<Option<Executor>>,
    pub max_visits: Vec<Option<u32>>,
}

impl Plan {
    pub fn compile(g: Graph, reg: Option<&registry::Registry>) -> Plan {
        let back = back_edges(&g);
        let mut looped = vec![0; g.nodes.len()];
        for (i, comp) in cyclic_components(&g, &|_| true).into_iter().enumerate() {
            for n in comp {
                looped[n] = i + 1;
            }
        }
        let fwd_in = g
            .inc
            .iter()
            .map(|es| es.iter().copied().filter(|&e| !back[e]).collect())
            .collect();
        let edge_cond = g
            .edges
            .iter()
            .map(|e| e.condition.as_ref().map(condition::parse).transpose())
            .collect();
        let node_cond = g
            .nodes
            .iter()
            .map(|n| n.config.get("condition").map(condition::parse).transpose())
            .collect();
        let exec = g
            .nodes
            .iter()
            .map(|n| match reg.and_then(|r| r.get(&n.ntype)) {
                Some(t) => Some(t.executor.clone()),
                None if n.ntype.starts_with("TRIGGER_") => Some(Executor::Trigger),
                None if reg.is_none() => guess(&n.ntype),
                None => None,
            })
            .collect();
        let max_visits = g.nodes.iter().map(|n| max_visits(&n.config)).collect();
        Plan {
            g,
            back,
            looped,
            fwd_in,
            edge_cond,
            node_cond,
            exec,
            max_visits,
        }
    }

    /// Is edge `e` followed when its source finished with `branch` (the
    /// condition node's result, or `Err` for a failed step)?
    pub fn follows(&self, e: usize, branch: Branch, ctx: &Value) -> Result<bool, String> {
        let edge = &self.g.edges[e];
        let handle = edge.source_handle.as_deref();
        let handle_ok = match branch {
            Branch::Failed => handle == Some("error"),
            Branch::Done => handle != Some("error"),
            Branch::Cond(r) => match handle {
                Some("true") => r,
                Some("false") => !r,
                Some("error") => false,
                _ => true,
            },
        };
        if !handle_ok {
            return Ok(false);
        }
        match &self.edge_cond[e] {
            Ok(None) => Ok(true),
            Ok(Some(c)) => Ok(condition::eval(c, ctx)),
            Err(msg) => Err(format!("edge \"{}\": {msg}", edge.key)),
        }
    }
}

/// How a node finished, for routing.
#[derive(Debug, Clone, Copy)]
pub enum Branch {
    Done,
    Cond(bool),
    Failed,
}

thread_local! {
    /// Built-in type -> executor, built once per backend. `builtins()` builds
    /// every type's JSON Schema; calling it once per node made
    /// `bench.rust(1000)` (validate + topological order) take 72 ms, of
    /// which ~47 ms were this lookup; with the map it takes 25 ms.
    static BUILTIN_EXECUTORS: HashMap<&'static str, Executor> = registry::builtins()
        .into_iter()
        .filter_map(|b| Some((b.0, Executor::parse(b.2)?)))
        .collect();
}

/// Executors of the built-in types, for pure uses without a registry.
pub fn guess(t: &str) -> Option<Executor> {
    BUILTIN_EXECUTORS.with(|m| m.get(t).cloned())
}

thread_local! {
    static CACHE: RefCell<HashMap<(pgrx::Uuid, i32), Rc<Plan>>> = RefCell::new(HashMap::new());
}

const VERSION: &str =
    "SELECT graph::text FROM api.workflow_versions WHERE workflow_id = $1 AND version = $2";

/// The compiled plan of a published version (cached).
pub fn for_version(client: &mut SpiClient<'_>, workflow: pgrx::Uuid, version: i32) -> Rc<Plan> {
    if let Some(p) = CACHE.with(|c| c.borrow().get(&(workflow, version)).cloned()) {
        return p;
    }
    let text = spi::one(client, VERSION, &[workflow.into(), version.into()]).unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_NO_DATA_FOUND,
            format!("version: workflow {workflow} has no version {version}"),
            None,
            "Publish the workflow first.",
        )
    });
    let reg = registry::load(client);
    let plan = Rc::new(Plan::compile(
        Graph::parse_text("version graph", &text),
        Some(&reg),
    ));
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= 512 {
            c.clear();
        }
        c.insert((workflow, version), plan.clone());
    });
    plan
}
