//! Names and quoting, pure. Every identifier that reaches a statement goes
//! through `ident` (always double-quoted, so any schema or table name works,
//! keywords and capitals included), every value through `literal`.

/// PostgreSQL's identifier limit (NAMEDATALEN - 1), in bytes.
pub const MAX_IDENT: usize = 63;

/// `name` as a quoted identifier: `"` + name with `"` doubled + `"`.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `schema.name`, both quoted.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", ident(schema), ident(name))
}

/// `value` as a string literal. Standard-conforming strings are always on in
/// PostgreSQL 15's default, but a backslash is doubled into an E'' literal
/// anyway so the result means the same under either setting.
pub fn literal(value: &str) -> String {
    let body = value.replace('\'', "''");
    if body.contains('\\') {
        format!("E'{}'", body.replace('\\', "\\\\"))
    } else {
        format!("'{body}'")
    }
}

/// `base` cut to at most `max` bytes, on a character boundary.
fn truncate(base: &str, max: usize) -> &str {
    let mut end = max.min(base.len());
    while !base.is_char_boundary(end) {
        end -= 1;
    }
    &base[..end]
}

/// The name of a parent's partition: `<parent>_<suffix>`, the parent's name
/// shortened so the whole fits in 63 bytes (PostgreSQL would otherwise
/// truncate it silently, and two ranges could then share a name).
/// `attempt` > 0 adds `_<attempt>` for when the plain name is taken.
pub fn partition(parent: &str, suffix: &str, attempt: u32) -> String {
    let tail = if attempt == 0 {
        format!("_{suffix}")
    } else {
        format!("_{suffix}_{attempt}")
    };
    format!("{}{tail}", truncate(parent, MAX_IDENT - tail.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quoting() {
        assert_eq!(ident("plain"), "\"plain\"");
        assert_eq!(ident("We\"ird name"), "\"We\"\"ird name\"");
        assert_eq!(qualified("a b", "C"), "\"a b\".\"C\"");
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal("a\\b"), "E'a\\\\b'");
    }

    #[test]
    fn names_fit() {
        assert_eq!(partition("audit_logs", "2026_01", 0), "audit_logs_2026_01");
        assert_eq!(
            partition("audit_logs", "2026_01", 2),
            "audit_logs_2026_01_2"
        );
        assert_eq!(partition("audit_logs", "default", 0), "audit_logs_default");
        let long = "é".repeat(40);
        let name = partition(&long, "2024_02_29", 0);
        assert!(name.len() <= MAX_IDENT);
        assert!(name.ends_with("_2024_02_29"));
    }

    proptest! {
        /// Any name fits the limit, keeps its suffix, and quotes to something
        /// that unquotes back to itself.
        #[test]
        fn any_name(parent in "\\PC{0,80}", attempt in 0u32..20) {
            let name = partition(&parent, "2026_01_31", attempt);
            prop_assert!(name.len() <= MAX_IDENT);
            prop_assert!(name.contains("_2026_01_31"));
            let q = ident(&name);
            let inner = &q[1..q.len() - 1];
            prop_assert_eq!(inner.replace("\"\"", "\""), name);
        }
    }
}
