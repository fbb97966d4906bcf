//! A wellbeing run for people: every check by subject, then what was filed.

use super::assess::{Check, Status};
use super::{Delivery, Filed, Report};

pub fn text(report: &Report, delivery: Option<&Delivery>) -> String {
    let mut out = String::new();
    if let Filed::AlreadyRecorded {
        started_at,
        initiative_id,
    } = &report.filed
    {
        out.push_str(&format!(
            "Wellbeing run {} was already recorded at {started_at}: nothing filed again{}.\n",
            report.run_id,
            match initiative_id {
                Some(id) => format!(" (its initiative is {id})"),
                None => String::new(),
            }
        ));
        push_delivery(&mut out, delivery);
        return out;
    }
    out.push_str(&format!(
        "Wellbeing run {} ({}) on {}: {}\n",
        report.run_id,
        report.kind.as_str().replace('_', "-"),
        report.host,
        match report.issues {
            0 => "all well".to_string(),
            1 => "1 issue".to_string(),
            n => format!("{n} issues"),
        }
    ));
    let width = report
        .checks
        .iter()
        .map(|c| c.check.len())
        .max()
        .unwrap_or(0);
    let mut subject = None;
    for c in &report.checks {
        if subject != Some(&c.subject) {
            out.push_str(&format!("\n{}\n", c.subject.label()));
            subject = Some(&c.subject);
        }
        out.push_str(&line(c, width));
    }
    out.push('\n');
    match (&report.initiative, &report.filed) {
        (None, Filed::DryRun) => out.push_str("Nothing would be filed (dry run).\n"),
        (None, _) => out.push_str("Nothing filed.\n"),
        (Some(i), Filed::DryRun) => {
            out.push_str(&format!(
                "Would file ({}; dry run, nothing recorded):\n\n{}",
                i.severity.as_str(),
                i.body
            ));
        }
        (Some(i), Filed::Recorded { initiative_id }) => {
            out.push_str(&format!(
                "Filed initiative {} ({}): {}\n",
                initiative_id.map(|id| id.to_string()).unwrap_or_default(),
                i.severity.as_str(),
                i.title
            ));
            push_delivery(&mut out, delivery);
        }
        (Some(_), Filed::AlreadyRecorded { .. }) => {}
    }
    out
}

fn line(c: &Check, width: usize) -> String {
    let mark = match c.status {
        Status::Ok => "ok   ",
        Status::Issue => "ISSUE",
        Status::Skipped => "-    ",
    };
    format!("  {mark} {:<width$}  {}\n", c.check, c.summary)
}

fn push_delivery(out: &mut String, delivery: Option<&Delivery>) {
    let Some(d) = delivery else { return };
    let names = |v: &[String]| v.join(", ");
    if !d.delivered.is_empty() {
        out.push_str(&format!("Delivered to {}.\n", names(&d.delivered)));
    }
    if !d.failed.is_empty() {
        out.push_str(&format!(
            "Not delivered to {} yet: queued in the outbox, retried by the daemon or the next `foreman wellbeing` or `foreman sweep`.\n",
            names(&d.failed)
        ));
    }
    if !d.queued.is_empty() {
        out.push_str(&format!(
            "Queued for {}: another Foreman process is delivering it, or its retry is not due yet.\n",
            names(&d.queued)
        ));
    }
}
