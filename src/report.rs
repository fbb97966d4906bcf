//! How sweep results are shown: one JSON object, or a readable table.

use crate::logging::escaped;
use crate::model::Outcome;
use crate::sweep::SweepReport;
use std::fmt::Write;

pub fn json(report: &SweepReport) -> String {
    serde_json::to_string_pretty(report).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

pub fn table(report: &SweepReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} sweep{}{}: {} tasks seen, {} RUNNING checked, {} findings ({} ms)",
        report.kind.as_str(),
        report
            .sweep_id
            .map(|i| format!(" #{i}"))
            .unwrap_or_default(),
        if report.dry_run {
            " (dry run: nothing changed)"
        } else {
            ""
        },
        report.tasks_seen,
        report.tasks_checked,
        report.findings.len(),
        (report.finished_at - report.started_at).num_milliseconds()
    );
    if let Some(e) = &report.snapshot_error {
        let _ = writeln!(
            out,
            "snapshot_error: {}\nnothing was judged and nothing was marked",
            escaped(e)
        );
    }
    if let Some(d) = &report.deferral {
        let _ = writeln!(out, "hung verdicts deferred: {}", escaped(d));
    }
    if report.findings.is_empty() {
        return out;
    }
    let rows: Vec<[String; 6]> = report
        .findings
        .iter()
        .map(|f| {
            let outcome = if report.dry_run && f.outcome == Outcome::Pending && f.action.acts() {
                format!("would {}", f.action.as_str())
            } else {
                f.outcome.as_str().to_string()
            };
            // Ids and reasons come from the executor: never raw to a terminal.
            [
                escaped(&f.task_id),
                escaped(f.droid_type.as_deref().unwrap_or_default()),
                f.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                f.kind.as_str().to_string(),
                outcome,
                escaped(
                    &f.detail
                        .clone()
                        .or_else(|| {
                            f.evidence
                                .get("reason")
                                .and_then(|r| r.as_str())
                                .map(String::from)
                        })
                        .unwrap_or_default(),
                ),
            ]
        })
        .collect();
    let head = ["TASK", "TYPE", "PID", "KIND", "OUTCOME", "WHY"];
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r.iter()).take(5) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i < 5 {
                let _ = write!(s, "{:<w$}  ", c, w = width[i]);
            } else {
                s.push_str(c);
            }
        }
        s
    };
    let _ = writeln!(out, "{}", line(head));
    for r in &rows {
        let _ = writeln!(out, "{}", line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]));
    }
    out
}
