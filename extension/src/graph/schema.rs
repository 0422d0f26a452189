//! Checking node config against its type's JSON Schema.
//!
//! A deliberately small validator for the keywords the registry's schemas
//! use (draft 2020-12 meaning): `type`, `properties`, `required`,
//! `additionalProperties`, `enum`, `const`, `minimum`, `maximum`,
//! `minLength`, `maxLength`, `minProperties`, `items`, `minItems`,
//! `anyOf`. An unknown keyword is ignored, as JSON Schema prescribes. Every
//! violation is returned, each with the JSON pointer of the offending value.

use serde_json::Value;

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => false,
    }
}

/// All violations of `schema` by `v`, as (JSON pointer, message).
pub fn check(schema: &Value, v: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    check_at(schema, v, "", &mut out);
    out
}

fn check_at(schema: &Value, v: &Value, at: &str, out: &mut Vec<(String, String)>) {
    let Some(s) = schema.as_object() else {
        if schema == &Value::Bool(false) {
            out.push((at.to_string(), "is not allowed".into()));
        }
        return;
    };
    let here = || {
        if at.is_empty() {
            "/".to_string()
        } else {
            at.to_string()
        }
    };
    if let Some(t) = s.get("type") {
        let ok = match t {
            Value::String(t) => type_matches(t, v),
            Value::Array(ts) => ts
                .iter()
                .filter_map(Value::as_str)
                .any(|t| type_matches(t, v)),
            _ => true,
        };
        if !ok {
            out.push((here(), format!("must be of type {t}, got {}", kind(v))));
            return;
        }
    }
    if let Some(Value::Array(options)) = s.get("enum") {
        if !options.contains(v) {
            out.push((
                here(),
                format!("must be one of {}", Value::Array(options.clone())),
            ));
        }
    }
    if let Some(c) = s.get("const") {
        if c != v {
            out.push((here(), format!("must be {c}")));
        }
    }
    if let Some(f) = v.as_f64() {
        if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
            if f < min {
                out.push((here(), format!("must be at least {min}")));
            }
        }
        if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
            if f > max {
                out.push((here(), format!("must be at most {max}")));
            }
        }
    }
    if let Some(text) = v.as_str() {
        let n = text.chars().count() as u64;
        if let Some(min) = s.get("minLength").and_then(Value::as_u64) {
            if n < min {
                out.push((here(), format!("must be at least {min} characters")));
            }
        }
        if let Some(max) = s.get("maxLength").and_then(Value::as_u64) {
            if n > max {
                out.push((here(), format!("must be at most {max} characters")));
            }
        }
    }
    if let Some(obj) = v.as_object() {
        if let Some(Value::Array(req)) = s.get("required") {
            for k in req.iter().filter_map(Value::as_str) {
                if !obj.contains_key(k) {
                    out.push((format!("{at}/{k}"), "is required".into()));
                }
            }
        }
        if let Some(min) = s.get("minProperties").and_then(Value::as_u64) {
            if (obj.len() as u64) < min {
                out.push((here(), format!("must have at least {min} properties")));
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        for (k, child) in obj {
            let path = format!("{at}/{k}");
            match props.and_then(|p| p.get(k)) {
                Some(sub) => check_at(sub, child, &path, out),
                None => match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        out.push((path, "is not a known setting".into()));
                    }
                    Some(sub @ Value::Object(_)) => check_at(sub, child, &path, out),
                    _ => {}
                },
            }
        }
    }
    if let Some(arr) = v.as_array() {
        if let Some(min) = s.get("minItems").and_then(Value::as_u64) {
            if (arr.len() as u64) < min {
                out.push((here(), format!("must have at least {min} items")));
            }
        }
        if let Some(items) = s.get("items") {
            for (i, x) in arr.iter().enumerate() {
                check_at(items, x, &format!("{at}/{i}"), out);
            }
        }
    }
    if let Some(Value::Array(any)) = s.get("anyOf") {
        let fits = any.iter().any(|sub| {
            let mut tmp = Vec::new();
            check_at(sub, v, at, &mut tmp);
            tmp.is_empty()
        });
        if !fits {
            out.push((here(), "matches none of the allowed shapes".into()));
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;
    use serde_json::json;

    use super::check;

    #[pg_test]
    fn schema_violations_carry_pointers() {
        let schema = json!({"type": "object", "required": ["to"], "additionalProperties": false,
            "properties": {"to": {"type": "string", "minLength": 3},
                           "n": {"type": "integer", "minimum": 1, "maximum": 5},
                           "m": {"enum": ["GET", "POST"]},
                           "h": {"type": "object", "additionalProperties": {"type": "string"}}}});
        assert!(check(&schema, &json!({"to": "a@b.c", "n": 2, "m": "GET"})).is_empty());
        let got = check(&schema, &json!({"n": 9, "m": "PUT", "x": 1, "h": {"a": 1}}));
        let mut pointers: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        pointers.sort_unstable();
        assert_eq!(pointers, ["/h/a", "/m", "/n", "/to", "/x"], "{got:?}");
        assert_eq!(
            check(&schema, &json!([])),
            [(
                "/".to_string(),
                "must be of type \"object\", got array".to_string()
            )]
        );
    }
}
