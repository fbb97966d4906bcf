//! The initiative a wellbeing run files when it found issues: one title,
//! one Markdown body listing every issue with its evidence and a suggested
//! action, one severity, and the JSON document sinks receive.

use super::assess::{Check, Severity, Subject};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeSet;
use std::time::Duration;

/// Bump when a field changes meaning or goes away (adding one does not).
pub const INITIATIVE_VERSION: u32 = 1;

/// What the run was, as the initiative tells it.
#[derive(Debug, Clone, Serialize)]
pub struct RunHeader {
    pub run_id: String,
    /// scheduled | catch_up | manual
    pub kind: &'static str,
    pub host: String,
    pub started_at: DateTime<Utc>,
    pub window_start: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Initiative {
    pub title: String,
    pub severity: Severity,
    /// Markdown.
    pub body: String,
    /// The document webhooks get, commands find in `FOREMAN_INITIATIVE_JSON`.
    pub payload: serde_json::Value,
}

/// The initiative for a run's checks; `None` when none is an issue.
pub fn compose(run: &RunHeader, checks: &[Check]) -> Option<Initiative> {
    let issues: Vec<&Check> = checks.iter().filter(|c| c.is_issue()).collect();
    let severity = issues.iter().filter_map(|c| c.severity).max()?;
    let title = title(&run.host, &issues);
    let body = body(run, &title, severity, &issues);
    let payload = serde_json::json!({
        "version": INITIATIVE_VERSION,
        "run_id": run.run_id,
        "kind": run.kind,
        "host": run.host,
        "title": title,
        "severity": severity,
        "started_at": run.started_at,
        "window_start": run.window_start,
        "issues": issues,
        "body": body,
        "foreman_version": env!("CARGO_PKG_VERSION"),
    });
    Some(Initiative {
        title,
        severity,
        body,
        payload,
    })
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `Wellbeing: 3 issues in 2 droid types on HOST`, naming Foreman itself
/// when it is one of the subjects.
pub fn title(host: &str, issues: &[&Check]) -> String {
    let types: BTreeSet<&str> = issues
        .iter()
        .flat_map(|c| c.droid_types.iter().map(String::as_str))
        .collect();
    let foreman = issues.iter().any(|c| c.subject == Subject::Foreman);
    let what = match (types.len(), foreman) {
        (0, _) => "Foreman itself".to_string(),
        (n, false) => plural(n, "droid type", "droid types"),
        (n, true) => format!(
            "{} and Foreman itself",
            plural(n, "droid type", "droid types")
        ),
    };
    format!(
        "Wellbeing: {} in {what} on {host}",
        plural(issues.len(), "issue", "issues")
    )
}

fn body(run: &RunHeader, title: &str, severity: Severity, issues: &[&Check]) -> String {
    let window = (run.started_at - run.window_start)
        .to_std()
        .unwrap_or(Duration::ZERO);
    let mut md = format!("# {title}\n\n");
    md.push_str(&format!(
        "Foreman's wellbeing run `{}` ({}) on {} found {} over the last {} ({} to {}). Severity: **{}**.\n",
        run.run_id,
        run.kind.replace('_', "-"),
        run.host,
        plural(issues.len(), "issue", "issues"),
        super::assess::human(window),
        run.window_start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        run.started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        severity.as_str()
    ));
    let mut subject: Option<&Subject> = None;
    for c in issues {
        if subject != Some(&c.subject) {
            md.push_str(&format!("\n## {}\n", capitalised(&c.subject.label())));
            subject = Some(&c.subject);
        }
        md.push_str(&format!(
            "\n### {} ({})\n\n{}\n",
            c.check.replace('_', " "),
            c.severity.map(Severity::as_str).unwrap_or("issue"),
            c.summary
        ));
        if let Some(action) = &c.action {
            md.push_str(&format!("\n**Suggested action:** {action}\n"));
        }
        if !c.evidence.is_null() {
            let evidence =
                serde_json::to_string_pretty(&c.evidence).unwrap_or_else(|e| format!("({e})"));
            md.push_str(&format!("\nEvidence:\n\n```json\n{evidence}\n```\n"));
        }
    }
    md.push_str(&format!(
        "\n---\nFiled by Foreman {} (`foreman wellbeing`); this run's checks are in the activity log under run id `{}`.\n",
        env!("CARGO_PKG_VERSION"),
        run.run_id
    ));
    md
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}
