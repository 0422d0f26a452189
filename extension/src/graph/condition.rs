//! The edge-condition language, parsed once and evaluated in Rust against the
//! execution's JSON context.
//!
//! ```text
//! cond := {"op": OP, "path": "a.b.0.c", "value": JSON}   comparison on a dotted path
//!       | {"op": "exists" | "not_exists", "path": "..."}
//!       | {"and": [cond, ...]} | {"or": [cond, ...]} | {"not": cond}
//!       | true | false
//! OP   := eq ne gt gte lt lte in contains   (aliases == != > >= < <=)
//! ```
//!
//! A path segment that is a number indexes an array. A missing path makes
//! every comparison false (and `ne` true). Numbers compare numerically, and
//! a string that parses as a number compares as one when the other side is a
//! number (form answers arrive as text); strings compare by code point.
//! `in`: the value at path is an element of the array `value`. `contains`:
//! the string at path contains the string `value`, or the array at path has
//! `value` as an element, or the object at path has the key `value`.

use std::cmp::Ordering;

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    Contains,
    Exists,
    NotExists,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "eq" | "==" => Op::Eq,
            "ne" | "!=" => Op::Ne,
            "gt" | ">" => Op::Gt,
            "gte" | ">=" => Op::Gte,
            "lt" | "<" => Op::Lt,
            "lte" | "<=" => Op::Lte,
            "in" => Op::In,
            "contains" => Op::Contains,
            "exists" => Op::Exists,
            "not_exists" => Op::NotExists,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Op::Eq => "eq",
            Op::Ne => "ne",
            Op::Gt => "gt",
            Op::Gte => "gte",
            Op::Lt => "lt",
            Op::Lte => "lte",
            Op::In => "in",
            Op::Contains => "contains",
            Op::Exists => "exists",
            Op::NotExists => "not_exists",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    Const(bool),
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
    Cmp {
        op: Op,
        path: Vec<String>,
        raw_path: String,
        value: Value,
    },
}

pub const HINT: &str = "Write conditions as {\"op\":\"gt\",\"path\":\"lead.fields.budget\",\"value\":1000}, combined with {\"and\":[...]}, {\"or\":[...]} or {\"not\":{...}}; ops: eq ne gt gte lt lte in contains exists not_exists.";

/// Parse a condition; the error names the JSON location (`at`) that is wrong.
pub fn parse(v: &Value) -> Result<Cond, String> {
    parse_at(v, "condition")
}

fn parse_at(v: &Value, at: &str) -> Result<Cond, String> {
    match v {
        Value::Bool(b) => Ok(Cond::Const(*b)),
        Value::Object(o) => {
            if let Some(list) = o.get("and").or_else(|| o.get("or")) {
                let key = if o.contains_key("and") { "and" } else { "or" };
                if o.len() != 1 {
                    return Err(format!("{at}: \"{key}\" must be the only key"));
                }
                let Value::Array(items) = list else {
                    return Err(format!("{at}.{key}: must be an array of conditions"));
                };
                if items.is_empty() {
                    return Err(format!("{at}.{key}: must not be empty"));
                }
                let parts = items
                    .iter()
                    .enumerate()
                    .map(|(i, c)| parse_at(c, &format!("{at}.{key}[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?;
                return Ok(if key == "and" {
                    Cond::And(parts)
                } else {
                    Cond::Or(parts)
                });
            }
            if let Some(inner) = o.get("not") {
                if o.len() != 1 {
                    return Err(format!("{at}: \"not\" must be the only key"));
                }
                return Ok(Cond::Not(Box::new(parse_at(inner, &format!("{at}.not"))?)));
            }
            let op_name = match o.get("op") {
                Some(Value::String(s)) => s,
                Some(_) => return Err(format!("{at}.op: must be a string")),
                None => {
                    return Err(format!(
                        "{at}: needs \"op\" and \"path\", or one of \"and\", \"or\", \"not\""
                    ))
                }
            };
            let op = Op::parse(op_name)
                .ok_or_else(|| format!("{at}.op: unknown operator \"{op_name}\""))?;
            let raw_path = match o.get("path") {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                _ => return Err(format!("{at}.path: must be a non-empty dotted path")),
            };
            let path: Vec<String> = raw_path.split('.').map(str::to_string).collect();
            if path.iter().any(String::is_empty) {
                return Err(format!("{at}.path: \"{raw_path}\" has an empty segment"));
            }
            for k in o.keys() {
                if !matches!(k.as_str(), "op" | "path" | "value") {
                    return Err(format!("{at}: unknown key \"{k}\""));
                }
            }
            let value = o.get("value").cloned();
            let value = match (op, value) {
                (Op::Exists | Op::NotExists, _) => Value::Null,
                (_, None) => {
                    return Err(format!("{at}.value: operator \"{op_name}\" needs a value"))
                }
                (Op::In, Some(v)) if !v.is_array() => {
                    return Err(format!("{at}.value: operator \"in\" needs an array"))
                }
                (_, Some(v)) => v,
            };
            Ok(Cond::Cmp {
                op,
                path,
                raw_path,
                value,
            })
        }
        _ => Err(format!("{at}: must be an object or a boolean")),
    }
}

/// The value at a dotted path, if any.
pub fn lookup<'a>(ctx: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = ctx;
    for seg in path {
        cur = match cur {
            Value::Object(o) => o.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(_), _) | (_, Value::Number(_)) => as_number(a)?.partial_cmp(&as_number(b)?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), _) | (_, Value::Number(_)) => compare(a, b) == Some(Ordering::Equal),
        _ => a == b,
    }
}

fn cmp_holds(op: Op, actual: Option<&Value>, value: &Value) -> bool {
    match op {
        Op::Exists => actual.is_some_and(|v| !v.is_null()),
        Op::NotExists => actual.is_none_or(Value::is_null),
        Op::Ne => actual.is_none_or(|a| !equal(a, value)),
        _ => {
            let Some(a) = actual else { return false };
            match op {
                Op::Eq => equal(a, value),
                Op::Gt => compare(a, value) == Some(Ordering::Greater),
                Op::Gte => matches!(compare(a, value), Some(Ordering::Greater | Ordering::Equal)),
                Op::Lt => compare(a, value) == Some(Ordering::Less),
                Op::Lte => matches!(compare(a, value), Some(Ordering::Less | Ordering::Equal)),
                Op::In => value
                    .as_array()
                    .is_some_and(|arr| arr.iter().any(|x| equal(a, x))),
                Op::Contains => match (a, value) {
                    (Value::String(s), Value::String(sub)) => s.contains(sub.as_str()),
                    (Value::Array(arr), v) => arr.iter().any(|x| equal(x, v)),
                    (Value::Object(o), Value::String(k)) => o.contains_key(k),
                    _ => false,
                },
                Op::Exists | Op::NotExists | Op::Ne => unreachable!("handled above"),
            }
        }
    }
}

/// Evaluate without allocation. Iterative over `and`/`or` lists, recursive
/// only in nesting depth, which JSON parsing already bounds (128).
pub fn eval(c: &Cond, ctx: &Value) -> bool {
    match c {
        Cond::Const(b) => *b,
        Cond::And(parts) => parts.iter().all(|p| eval(p, ctx)),
        Cond::Or(parts) => parts.iter().any(|p| eval(p, ctx)),
        Cond::Not(inner) => !eval(inner, ctx),
        Cond::Cmp {
            op, path, value, ..
        } => cmp_holds(*op, lookup(ctx, path), value),
    }
}

/// Evaluate and say why, e.g. `lead.fields.budget (2500) gt 1000: true`.
pub fn explain(c: &Cond, ctx: &Value) -> String {
    match c {
        Cond::Const(b) => format!("{b}"),
        Cond::And(parts) | Cond::Or(parts) => {
            let word = if matches!(c, Cond::And(_)) {
                " and "
            } else {
                " or "
            };
            let inner: Vec<String> = parts.iter().map(|p| explain(p, ctx)).collect();
            format!("({}): {}", inner.join(word), eval(c, ctx))
        }
        Cond::Not(inner) => format!("not [{}]: {}", explain(inner, ctx), eval(c, ctx)),
        Cond::Cmp {
            op,
            path,
            raw_path,
            value,
        } => {
            let actual = lookup(ctx, path);
            let shown = actual.map_or_else(|| "missing".to_string(), Value::to_string);
            let holds = cmp_holds(*op, actual, value);
            if matches!(op, Op::Exists | Op::NotExists) {
                format!("{raw_path} ({shown}) {}: {holds}", op.name())
            } else {
                format!("{raw_path} ({shown}) {} {value}: {holds}", op.name())
            }
        }
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;
    use serde_json::json;

    use super::{eval, parse};

    fn holds(c: serde_json::Value, ctx: &serde_json::Value) -> bool {
        eval(&parse(&c).unwrap(), ctx)
    }

    #[pg_test]
    fn every_operator_on_dotted_paths() {
        let ctx = json!({"lead": {"fields": {"budget": 2500, "text": "1500", "tags": ["vip", "eu"],
                          "email": "ann@x.example", "plan": "pro"}, "list": [{"n": 1}]}});
        let p = |path: &str| format!("lead.fields.{path}");
        for (op, path, value, want) in [
            ("eq", p("plan"), json!("pro"), true),
            ("==", p("budget"), json!(2500.0), true),
            ("ne", p("plan"), json!("free"), true),
            ("ne", p("missing"), json!(1), true),
            ("gt", p("budget"), json!(1000), true),
            ("gt", p("text"), json!(1000), true),
            ("gt", p("budget"), json!(2500), false),
            ("gte", p("budget"), json!(2500), true),
            ("lt", p("budget"), json!(1000), false),
            ("lte", p("budget"), json!(2500), true),
            ("in", p("plan"), json!(["pro", "team"]), true),
            ("in", p("plan"), json!(["free"]), false),
            ("contains", p("email"), json!("@x."), true),
            ("contains", p("tags"), json!("vip"), true),
            ("contains", "lead.fields".into(), json!("budget"), true),
            ("contains", p("tags"), json!("us"), false),
            ("eq", "lead.list.0.n".into(), json!(1), true),
            ("gt", p("missing"), json!(1), false),
        ] {
            let c = json!({"op": op, "path": path, "value": value});
            assert_eq!(holds(c.clone(), &ctx), want, "{c}");
        }
        assert!(holds(
            json!({"op": "exists", "path": "lead.fields.plan"}),
            &ctx
        ));
        assert!(!holds(
            json!({"op": "exists", "path": "lead.fields.nope"}),
            &ctx
        ));
        assert!(holds(
            json!({"op": "not_exists", "path": "lead.fields.nope"}),
            &ctx
        ));
        let gt = json!({"op": "gt", "path": "lead.fields.budget", "value": 1000});
        let lt = json!({"op": "lt", "path": "lead.fields.budget", "value": 1000});
        assert!(holds(json!({"and": [gt, {"not": lt}]}), &ctx));
        assert!(!holds(json!({"and": [gt, lt]}), &ctx));
        assert!(holds(json!({"or": [lt, gt]}), &ctx));
        assert!(!holds(json!({"not": gt}), &ctx));
        assert!(holds(json!(true), &ctx));
    }

    #[pg_test]
    fn malformed_conditions_name_the_location() {
        for (c, want) in [
            (
                json!({"op": "between", "path": "a", "value": 1}),
                "condition.op: unknown operator \"between\"",
            ),
            (
                json!({"op": "gt", "value": 1}),
                "condition.path: must be a non-empty dotted path",
            ),
            (
                json!({"op": "gt", "path": "a"}),
                "condition.value: operator \"gt\" needs a value",
            ),
            (
                json!({"and": [{"op": "in", "path": "a", "value": 1}]}),
                "condition.and[0].value: operator \"in\" needs an array",
            ),
            (
                json!({"not": 3}),
                "condition.not: must be an object or a boolean",
            ),
            (json!({"or": []}), "condition.or: must not be empty"),
            (
                json!({"op": "eq", "path": "a..b", "value": 1}),
                "condition.path: \"a..b\" has an empty segment",
            ),
        ] {
            assert_eq!(parse(&c).unwrap_err(), want);
        }
    }
}
