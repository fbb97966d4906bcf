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

/// Issues of one check listed in full; the rest are counted. A day when
/// everything is wrong (a dispatcher down: two thousand stuck plans) must
/// still file an initiative a tracker accepts (GitHub: 65,536 characters).
const LISTED_PER_CHECK: usize = 10;
/// Issues carried in the payload; `issues_total` says how many there were.
const PAYLOAD_ISSUES: usize = 100;

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
        "issues": issues.iter().take(PAYLOAD_ISSUES).collect::<Vec<_>>(),
        "issues_total": issues.len(),
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
    let mut listed: std::collections::BTreeMap<&str, usize> = Default::default();
    for c in issues {
        let n = listed.entry(c.check).or_default();
        *n += 1;
        if *n > LISTED_PER_CHECK {
            continue;
        }
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
    let more: Vec<String> = listed
        .iter()
        .filter(|(_, n)| **n > LISTED_PER_CHECK)
        .map(|(check, n)| format!("{} more `{check}`", n - LISTED_PER_CHECK))
        .collect();
    if !more.is_empty() {
        md.push_str(&format!(
            "\n## Not listed here\n\n{} issue(s) of the same kinds as above: {}. Every one is in the activity log with this run's checks.\n",
            listed
                .values()
                .map(|n| n.saturating_sub(LISTED_PER_CHECK))
                .sum::<usize>(),
            more.join(", ")
        ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wellbeing::assess::Status;

    fn stuck(plan: usize) -> Check {
        Check {
            subject: Subject::Plan(format!("p{plan}")),
            check: "stuck_plan",
            status: Status::Issue,
            severity: Some(Severity::Critical),
            summary: format!("plan p{plan} is stuck"),
            evidence: serde_json::json!({"pending": 1}),
            action: Some("unstick it".into()),
            droid_types: vec!["builder".into()],
        }
    }

    fn header() -> RunHeader {
        RunHeader {
            run_id: "2026-11-23T06:00".into(),
            kind: "scheduled",
            host: "h".into(),
            started_at: DateTime::UNIX_EPOCH + chrono::Duration::days(2),
            window_start: DateTime::UNIX_EPOCH + chrono::Duration::days(1),
        }
    }

    #[test]
    fn a_flood_of_issues_is_listed_in_part_and_counted_in_full() {
        let checks: Vec<Check> = (0..2000).map(stuck).collect();
        let i = compose(&header(), &checks).expect("issues file an initiative");
        assert_eq!(i.title, "Wellbeing: 2000 issues in 1 droid type on h");
        assert!(
            i.body.contains("plan p9 is stuck"),
            "the first ten are listed"
        );
        assert!(!i.body.contains("plan p10 is stuck"), "the eleventh is not");
        assert!(i.body.contains("1990 more `stuck_plan`"), "{}", i.body);
        assert!(i.body.len() < 65_536, "{} characters", i.body.len());
        assert_eq!(i.payload["issues_total"], 2000);
        assert_eq!(i.payload["issues"].as_array().map(Vec::len), Some(100));
    }

    #[test]
    fn no_issue_files_nothing() {
        let mut ok = stuck(1);
        ok.status = Status::Ok;
        ok.severity = None;
        assert!(compose(&header(), &[ok]).is_none());
    }
}
