//! proptest strategies for the graph code's pure property tests: any JSON
//! value, biased towards the keys and values the importers look at, so that
//! random documents reach deep into their paths instead of failing at the
//! first lookup.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Keys the React Flow and n8n readers look up.
const KEYS: &[&str] = &[
    "nodes",
    "edges",
    "connections",
    "viewport",
    "id",
    "name",
    "type",
    "data",
    "label",
    "config",
    "position",
    "source",
    "target",
    "sourceHandle",
    "targetHandle",
    "condition",
    "parameters",
    "onError",
    "typeVersion",
    "main",
    "node",
    "index",
    "ai_tool",
    "$rf",
];

/// Strings the readers compare against, names likely to collide, and the
/// lengths around the 200-character limit (in bytes and in characters).
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "A", "B", "Step", "Step #2", "Step #3", "", "(empty name)", "main", "error",
            "n8n-nodes-base.if", "n8n-nodes-base.httpRequest", "n8n-nodes-base.manualTrigger",
            "n8n-nodes-base.switch", "n8n-nodes-base.splitInBatches", "continueErrorOutput",
            "TRIGGER_MANUAL", "LOGIC_CONDITION", "ACTION_UPDATE_LEAD", "true", "false",
        ])
        .prop_map(str::to_string),
        2 => "[a-zA-Z #:>-]{0,12}",
        1 => "\\PC{0,12}",
        1 => (195usize..206, prop::bool::ANY).prop_map(|(n, wide)| if wide {
            "語".repeat(n / 3 + 60)
        } else {
            "x".repeat(n)
        }),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-3i64..5).prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
    ]
}

/// Any JSON value up to 5 levels deep.
pub fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![3 => prop::sample::select(KEYS).prop_map(str::to_string), 1 => text()],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// An n8n export whose shape is mostly right: nodes with colliding names,
/// ids, types and error outputs, and connections between them (by name, by
/// id, to nowhere, malformed), so the converter's semantics are exercised.
pub fn n8n_workflow() -> impl Strategy<Value = Value> {
    let node = (
        text(),
        text(),
        text(),
        prop::option::of(Just("continueErrorOutput")),
        json(),
    )
        .prop_map(|(name, id, t, on_error, params)| {
            let mut n = json!({"name": name, "id": id, "type": t, "parameters": params});
            if let Some(e) = on_error {
                n["onError"] = json!(e);
            }
            n
        });
    let target = prop_oneof![
        4 => (text(), 0u64..3).prop_map(|(n, i)| json!({"node": n, "type": "main", "index": i})),
        1 => json(),
    ];
    let outputs = prop::collection::vec(
        prop_oneof![4 => prop::collection::vec(target, 0..4).prop_map(Value::Array), 1 => json()],
        0..4,
    );
    let by_type = prop::collection::vec(
        (
            prop_oneof![3 => Just("main".to_string()), 1 => text()],
            prop_oneof![4 => outputs.prop_map(Value::Array), 1 => json()],
        ),
        0..3,
    )
    .prop_map(|kv| Value::Object(kv.into_iter().collect()));
    let connections = prop_oneof![
        4 => prop::collection::vec((text(), prop_oneof![4 => by_type, 1 => json()]), 0..6)
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        1 => json(),
    ];
    (prop::collection::vec(node, 0..8), connections)
        .prop_map(|(nodes, connections)| json!({"nodes": nodes, "connections": connections}))
}
