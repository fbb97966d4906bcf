//! The six state-transition events, as pulled from snapshots and as pushed
//! to `POST /events`, and the key that makes one transition count once.

use crate::model::TaskState;
use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    TaskStarted,
    TaskCompleted,
    TaskFailed,
    TaskRetried,
    TaskSkipped,
    PlanCompleted,
}

impl EventType {
    pub const ALL: [EventType; 6] = [
        EventType::TaskStarted,
        EventType::TaskCompleted,
        EventType::TaskFailed,
        EventType::TaskRetried,
        EventType::TaskSkipped,
        EventType::PlanCompleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::TaskStarted => "TASK_STARTED",
            EventType::TaskCompleted => "TASK_COMPLETED",
            EventType::TaskFailed => "TASK_FAILED",
            EventType::TaskRetried => "TASK_RETRIED",
            EventType::TaskSkipped => "TASK_SKIPPED",
            EventType::PlanCompleted => "PLAN_COMPLETED",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The state a task event moves its task to (none for a plan event).
    pub fn target(self) -> Option<TaskState> {
        match self {
            EventType::TaskStarted | EventType::TaskRetried => Some(TaskState::Running),
            EventType::TaskCompleted => Some(TaskState::Success),
            EventType::TaskFailed => Some(TaskState::Failed),
            EventType::TaskSkipped => Some(TaskState::Skipped),
            EventType::PlanCompleted => None,
        }
    }

    /// The event a task entering `state` at `attempt` makes, if any.
    pub fn entering(state: TaskState, attempt: i64) -> Option<EventType> {
        match state {
            TaskState::Pending => None,
            TaskState::Running if attempt > 1 => Some(EventType::TaskRetried),
            TaskState::Running => Some(EventType::TaskStarted),
            TaskState::Success => Some(EventType::TaskCompleted),
            TaskState::Failed => Some(EventType::TaskFailed),
            TaskState::Skipped => Some(EventType::TaskSkipped),
        }
    }
}

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A sweep saw it by diffing snapshots.
    Pull,
    /// The executor sent it to `POST /events`.
    Push,
    /// The monitor derived it (a plan whose last task a push finished).
    Monitor,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Pull => "pull",
            Source::Push => "push",
            Source::Monitor => "monitor",
        }
    }
}

/// One transition. `task_id` is absent only for `PLAN_COMPLETED`, whose
/// `attempt` is the plan's completion count (so a plan that completes
/// again after a retry reopened it is a new event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: EventType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub droid_type: Option<String>,
    pub attempt: i64,
    pub at: DateTime<Utc>,
}

impl Event {
    /// Pull and push of one transition share this key, so it counts once.
    /// STARTED and RETRIED share a class: both say "running at attempt N",
    /// and the two sources may name the same transition either way.
    pub fn dedupe_key(&self) -> String {
        let class = match self.kind.target() {
            Some(TaskState::Running) => "running",
            Some(TaskState::Success) => "success",
            Some(TaskState::Failed) => "failed",
            Some(TaskState::Skipped) => "skipped",
            Some(TaskState::Pending) | None => "plan",
        };
        let subject = match self.kind {
            EventType::PlanCompleted => self.plan_id.as_deref().unwrap_or(""),
            _ => self.task_id.as_deref().unwrap_or(""),
        };
        format!("{class}:{}:{subject}", self.attempt)
    }
}

/// An event as `POST /events` accepts it: strict, so a misspelt key is a
/// 400 instead of an event silently missing a field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pushed {
    #[serde(rename = "type")]
    kind: String,
    task_id: Option<String>,
    plan_id: Option<String>,
    droid_type: Option<String>,
    attempt: Option<i64>,
    at: Option<String>,
}

/// The longest id or type name accepted: ids are keys, not documents.
const MAX_FIELD: usize = 256;

/// Parse a `POST /events` body: one event object or an array of them.
/// Every event is checked before any is taken, so a bad one refuses the
/// whole batch with its index and reason. `at` defaults to `now`.
pub fn parse_batch(body: &[u8], now: DateTime<Utc>) -> Result<Vec<Event>, String> {
    // Never a `serde_json::Value` of the whole body: a tree of small
    // values costs up to 80 times the body's bytes. An array is split into
    // raw slices of the body (16 bytes each), then each event is read
    // straight into its typed form.
    let not_json = |e: serde_json::Error| format!("the body is not JSON: {e}");
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let (items, batch): (Vec<&serde_json::value::RawValue>, bool) = match first {
        Some(b'[') => (serde_json::from_slice(body).map_err(not_json)?, true),
        Some(b'{') => (vec![serde_json::from_slice(body).map_err(not_json)?], false),
        _ => {
            // Valid JSON of another kind is refused as such; anything else
            // is not JSON.
            serde_json::from_slice::<serde::de::IgnoredAny>(body).map_err(not_json)?;
            return Err("the body must be an event object or an array of them".into());
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| check(v, now).map_err(|e| if batch { format!("event {i}: {e}") } else { e }))
        .collect()
}

fn check(v: &serde_json::value::RawValue, now: DateTime<Utc>) -> Result<Event, String> {
    let p: Pushed = serde_json::from_str(v.get()).map_err(|e| {
        // serde_json's position is within this event, not the body.
        let text = e.to_string();
        text.split(" at line ").next().unwrap_or(&text).to_string()
    })?;
    let kind = EventType::parse(&p.kind).ok_or_else(|| {
        format!(
            "unknown type {:?}; expected one of {}",
            p.kind,
            EventType::ALL.map(|t| t.as_str()).join(", ")
        )
    })?;
    for (key, value) in [
        ("task_id", &p.task_id),
        ("plan_id", &p.plan_id),
        ("droid_type", &p.droid_type),
    ] {
        if let Some(v) = value {
            if v.is_empty() || v.len() > MAX_FIELD {
                return Err(format!("{key} must be 1 to {MAX_FIELD} bytes"));
            }
        }
    }
    let at = match p.at.as_deref() {
        None => now,
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map_err(|e| format!("at {s:?} is not an RFC 3339 time: {e}"))?
            .with_timezone(&Utc),
    };
    // As for executor times: an offset can carry 0000 or 9999 out of the
    // range the activity log reads back.
    if !(1970..=9999).contains(&at.year()) {
        return Err(format!("at {at} is outside the years 1970 to 9999"));
    }
    if kind == EventType::PlanCompleted {
        if p.plan_id.is_none() {
            return Err("PLAN_COMPLETED needs plan_id".into());
        }
        if p.task_id.is_some() {
            return Err("PLAN_COMPLETED takes no task_id".into());
        }
    } else if p.task_id.is_none() {
        return Err(format!("{} needs task_id", kind.as_str()));
    }
    // A task event without its attempt could not be matched with the
    // sweep's view of the same transition; a plan's is looked up.
    let attempt = match (kind, p.attempt) {
        (_, Some(a)) if a < 1 => return Err(format!("attempt must be 1 or more, not {a}")),
        (EventType::TaskRetried, Some(1)) => {
            return Err("TASK_RETRIED needs attempt 2 or more".into())
        }
        (_, Some(a)) => a,
        (EventType::PlanCompleted, None) => 0,
        (k, None) => return Err(format!("{} needs attempt", k.as_str())),
    };
    Ok(Event {
        kind,
        task_id: p.task_id,
        plan_id: p.plan_id,
        droid_type: p.droid_type,
        attempt,
        at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-11-23T10:00:00Z".parse().expect("time")
    }

    #[test]
    fn one_event_or_a_batch() {
        let one = br#"{"type":"TASK_STARTED","task_id":"a","plan_id":"p","droid_type":"d","attempt":1,"at":"2026-11-23T09:59:00Z"}"#;
        let e = parse_batch(one, now()).expect("valid");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].kind, EventType::TaskStarted);
        assert_eq!(
            e[0].at,
            "2026-11-23T09:59:00Z".parse::<DateTime<Utc>>().expect("t")
        );
        let batch = br#"[{"type":"TASK_COMPLETED","task_id":"a","attempt":1},{"type":"PLAN_COMPLETED","plan_id":"p"}]"#;
        let e = parse_batch(batch, now()).expect("valid");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].at, now(), "at defaults to the time received");
        assert_eq!(
            e[1].attempt, 0,
            "a plan's attempt is looked up at ingestion"
        );
        assert!(parse_batch(b"[]", now()).expect("empty").is_empty());
    }

    #[test]
    fn refusals_say_why() {
        let cases: &[(&[u8], &str)] = &[
            (b"{", "not JSON"),
            (b"42", "event object or an array"),
            (
                br#"{"type":"TASK_EXPLODED","task_id":"a","attempt":1}"#,
                "unknown type",
            ),
            (br#"{"type":"TASK_STARTED","attempt":1}"#, "needs task_id"),
            (br#"{"type":"TASK_STARTED","task_id":"a"}"#, "needs attempt"),
            (
                br#"{"type":"TASK_STARTED","task_id":"a","attempt":0}"#,
                "1 or more",
            ),
            (
                br#"{"type":"TASK_RETRIED","task_id":"a","attempt":1}"#,
                "2 or more",
            ),
            (br#"{"type":"PLAN_COMPLETED"}"#, "needs plan_id"),
            (
                br#"{"type":"PLAN_COMPLETED","plan_id":"p","task_id":"a"}"#,
                "takes no task_id",
            ),
            (
                br#"{"type":"TASK_STARTED","task_id":"a","attempt":1,"taskid":"b"}"#,
                "unknown field",
            ),
            (
                br#"{"type":"TASK_STARTED","task_id":"a","attempt":1,"at":"yesterday"}"#,
                "RFC 3339",
            ),
            (
                br#"{"type":"TASK_STARTED","task_id":"","attempt":1}"#,
                "1 to 256 bytes",
            ),
            (
                br#"[{"type":"TASK_STARTED","task_id":"a","attempt":1},{"type":"TASK_STARTED"}]"#,
                "event 1: ",
            ),
        ];
        for (body, want) in cases {
            let err = parse_batch(body, now()).expect_err(&String::from_utf8_lossy(body));
            assert!(
                err.contains(want),
                "{}: {err}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn started_and_retried_share_a_key_and_other_transitions_do_not() {
        let ev = |kind, attempt| Event {
            kind,
            task_id: Some("t".into()),
            plan_id: Some("p".into()),
            droid_type: None,
            attempt,
            at: now(),
        };
        assert_eq!(
            ev(EventType::TaskStarted, 2).dedupe_key(),
            ev(EventType::TaskRetried, 2).dedupe_key()
        );
        assert_ne!(
            ev(EventType::TaskStarted, 1).dedupe_key(),
            ev(EventType::TaskStarted, 2).dedupe_key()
        );
        assert_ne!(
            ev(EventType::TaskFailed, 1).dedupe_key(),
            ev(EventType::TaskCompleted, 1).dedupe_key()
        );
        let mut plan = ev(EventType::PlanCompleted, 1);
        plan.task_id = None;
        assert_eq!(plan.dedupe_key(), "plan:1:p");
    }

    #[test]
    fn entering_a_state() {
        use TaskState::*;
        let table = [
            (Pending, 1, None),
            (Running, 1, Some(EventType::TaskStarted)),
            (Running, 2, Some(EventType::TaskRetried)),
            (Success, 3, Some(EventType::TaskCompleted)),
            (Failed, 1, Some(EventType::TaskFailed)),
            (Skipped, 1, Some(EventType::TaskSkipped)),
        ];
        for (state, attempt, want) in table {
            assert_eq!(
                EventType::entering(state, attempt),
                want,
                "{state:?} {attempt}"
            );
        }
    }
}
