//! `flowtrack-worker status [--json]`: queue depth, lag and dead jobs per
//! kind and per workspace, from `internal.queue_status()`.

use std::collections::BTreeMap;
use std::fmt::Write;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::claim::QueueRow;

/// Totals for one kind, one workspace, or everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub queued: i64,
    pub due: i64,
    pub running: i64,
    pub dead: i64,
    /// The oldest due job's age (the largest of the group's).
    pub lag_seconds: f64,
    pub oldest_due_at: Option<DateTime<Utc>>,
}

impl Totals {
    fn add(&mut self, row: &QueueRow) {
        self.queued += row.queued;
        self.due += row.due;
        self.running += row.running;
        self.dead += row.dead;
        self.lag_seconds = self.lag_seconds.max(row.lag_seconds.unwrap_or(0.0));
        self.oldest_due_at = match (self.oldest_due_at, row.oldest_due_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KindTotals {
    pub kind: String,
    #[serde(flatten)]
    pub totals: Totals,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkspaceTotals {
    /// `null` for jobs of no workspace.
    pub workspace_id: Option<Uuid>,
    #[serde(flatten)]
    pub totals: Totals,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub total: Totals,
    pub by_kind: Vec<KindTotals>,
    pub by_workspace: Vec<WorkspaceTotals>,
}

pub fn summarize(rows: &[QueueRow]) -> Summary {
    let mut total = Totals::default();
    let mut kinds: BTreeMap<&str, Totals> = BTreeMap::new();
    let mut workspaces: BTreeMap<Option<Uuid>, Totals> = BTreeMap::new();
    for row in rows {
        total.add(row);
        kinds.entry(&row.kind).or_default().add(row);
        workspaces.entry(row.workspace_id).or_default().add(row);
    }
    let mut by_workspace: Vec<WorkspaceTotals> = workspaces
        .into_iter()
        .map(|(workspace_id, totals)| WorkspaceTotals {
            workspace_id,
            totals,
        })
        .collect();
    // Most urgent first: the largest lag, then the most due.
    by_workspace.sort_by(|a, b| {
        b.totals
            .lag_seconds
            .total_cmp(&a.totals.lag_seconds)
            .then(b.totals.due.cmp(&a.totals.due))
            .then(a.workspace_id.cmp(&b.workspace_id))
    });
    Summary {
        total,
        by_kind: kinds
            .into_iter()
            .map(|(kind, totals)| KindTotals {
                kind: kind.to_string(),
                totals,
            })
            .collect(),
        by_workspace,
    }
}

pub fn render_json(summary: &Summary) -> String {
    serde_json::to_string_pretty(summary).expect("a summary always serializes")
}

pub fn render_text(summary: &Summary) -> String {
    let mut out = String::new();
    let line = |out: &mut String, name: &str, t: &Totals| {
        let _ = writeln!(
            out,
            "{name:<38} {:>9} {:>9} {:>9} {:>9} {:>10.3}",
            t.queued, t.due, t.running, t.dead, t.lag_seconds
        );
    };
    let head = |out: &mut String, title: &str| {
        let _ = writeln!(
            out,
            "{title:<38} {:>9} {:>9} {:>9} {:>9} {:>10}",
            "QUEUED", "DUE", "RUNNING", "DEAD", "LAG_S"
        );
    };
    head(&mut out, "KIND");
    for k in &summary.by_kind {
        line(&mut out, &k.kind, &k.totals);
    }
    line(&mut out, "(all)", &summary.total);
    out.push('\n');
    head(&mut out, "WORKSPACE");
    for w in &summary.by_workspace {
        let name = w
            .workspace_id
            .map_or("(none)".to_string(), |id| id.to_string());
        line(&mut out, &name, &w.totals);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ws: Option<Uuid>, kind: &str, n: i64, lag: Option<f64>) -> QueueRow {
        QueueRow {
            workspace_id: ws,
            kind: kind.into(),
            queued: n,
            due: n - 1,
            running: 2,
            dead: 3,
            oldest_due_at: lag
                .map(|l| Utc::now() - chrono::Duration::milliseconds((l * 1000.0) as i64)),
            lag_seconds: lag,
        }
    }

    #[test]
    fn sums_per_kind_and_workspace() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let rows = [
            row(Some(a), "noop", 10, Some(1.0)),
            row(Some(a), "email", 5, Some(7.5)),
            row(Some(b), "noop", 2, None),
            row(None, "webhook", 1, Some(0.5)),
        ];
        let s = summarize(&rows);
        assert_eq!(s.total.queued, 18);
        assert_eq!(s.total.due, 14);
        assert_eq!(s.total.running, 8);
        assert_eq!(s.total.dead, 12);
        assert_eq!(s.total.lag_seconds, 7.5);
        let kinds: Vec<(&str, i64)> = s
            .by_kind
            .iter()
            .map(|k| (k.kind.as_str(), k.totals.queued))
            .collect();
        assert_eq!(kinds, [("email", 5), ("noop", 12), ("webhook", 1)]);
        assert_eq!(s.by_workspace[0].workspace_id, Some(a), "largest lag first");
        assert_eq!(s.by_workspace[0].totals.queued, 15);
        assert_eq!(
            s.by_workspace[0].totals.oldest_due_at,
            rows[1].oldest_due_at
        );
        let text = render_text(&s);
        assert!(text.contains("(none)"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("noop ") && l.contains(" 12 ")),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&render_json(&s)).unwrap();
        assert_eq!(json["by_kind"][1]["kind"], "noop");
        assert_eq!(json["by_kind"][1]["queued"], 12);
        assert_eq!(json["by_workspace"].as_array().unwrap().len(), 3);
        assert!(json["by_workspace"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["workspace_id"].is_null()));
    }
}
