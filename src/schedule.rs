//! Cron schedules (`[wellbeing] schedule`): parsing, the next and the latest
//! occurrence, and the slot id a scheduled run is known by.
//!
//! The dialect is tokio-cron-scheduler's: six fields, seconds first
//! (`sec min hour day-of-month month day-of-week`, an optional seventh for
//! the year), day-of-month and day-of-week combined with AND. We parse with
//! croner configured exactly as tokio-cron-scheduler configures it, but run
//! the schedule ourselves (see ARCHITECTURE.md): that scheduler fixes the UTC
//! offset when a job is created, so after a DST change it fires an hour off,
//! and it neither tells a job which slot it fires for nor remembers a slot
//! missed while the daemon was down.

use chrono::{DateTime, Local, NaiveDateTime, TimeZone, Utc};
use croner::parser::{CronParser, Seconds};
use croner::Cron;

/// The zone a schedule's fields are read in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Zone {
    Local,
    Named(chrono_tz::Tz),
}

impl Zone {
    /// `local`, `UTC`, or an IANA name such as `Europe/Paris`.
    pub fn parse(text: &str) -> Result<Zone, String> {
        match text {
            "local" => Ok(Zone::Local),
            "UTC" | "utc" | "Z" => Ok(Zone::Named(chrono_tz::UTC)),
            other => other.parse::<chrono_tz::Tz>().map(Zone::Named).map_err(|_| {
                format!("{other:?} is not a timezone Foreman knows; give \"local\", \"UTC\" or an IANA name such as \"Europe/Paris\"")
            }),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Zone::Local => "local".into(),
            Zone::Named(tz) => tz.name().into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Schedule {
    text: String,
    cron: Cron,
    zone: Zone,
}

/// The parser tokio-cron-scheduler uses (`Job::new_tz`).
fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Required)
        .dom_and_dow(true)
        .build()
}

impl Schedule {
    /// Parse and prove the expression fires at all; the error says how to
    /// write it.
    pub fn parse(text: &str, zone: Zone) -> Result<Schedule, String> {
        let fields = text.split_whitespace().count();
        if text.trim_start().starts_with('@') {
            return Err(format!("{text:?}: nicknames like @daily are not accepted; give six fields, seconds first, e.g. \"0 0 6 * * *\" for 06:00 every day"));
        }
        let cron = parser().parse(text).map_err(|e| {
            let hint = if fields == 5 {
                format!(" It has five fields: the first is seconds here, so classic cron's \"{}\" is \"0 {}\".", text.trim(), text.trim())
            } else {
                String::new()
            };
            let e = e.to_string();
            let e = e.trim_end_matches('.');
            format!("{text:?} is not a schedule Foreman understands: {e}.{hint} Give six fields, seconds first: `sec min hour day-of-month month day-of-week`, e.g. \"0 0 6 * * *\" for 06:00 every day")
        })?;
        let schedule = Schedule {
            text: text.to_string(),
            cron,
            zone,
        };
        if schedule.next_after(Utc::now()).is_none() {
            return Err(format!(
                "{text:?} never fires again (a year in the past, or a day-of-month and day-of-week that never both match); give a schedule with a next run, e.g. \"0 0 6 * * *\""
            ));
        }
        Ok(schedule)
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn zone(&self) -> Zone {
        self.zone
    }

    /// The first occurrence strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.zone {
            Zone::Local => next(&self.cron, t.with_timezone(&Local)),
            Zone::Named(tz) => next(&self.cron, t.with_timezone(&tz)),
        }
    }

    /// The latest occurrence at or before `t`: the slot a run at `t` is for.
    /// It is always one `next_after` gives too: in a DST gap croner's
    /// backward search lands on the gap's last second, where its forward
    /// search (the daemon's) moves the slot to the gap's end.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let back = match self.zone {
            Zone::Local => previous(&self.cron, t.with_timezone(&Local)),
            Zone::Named(tz) => previous(&self.cron, t.with_timezone(&tz)),
        }?;
        match self.next_after(back - chrono::Duration::seconds(1)) {
            Some(forward) if forward <= t => Some(forward),
            _ => Some(back),
        }
    }

    /// A slot's id: its wall-clock time in the schedule's zone, to the
    /// minute (to the second when the schedule's seconds field is not a
    /// plain 0), e.g. `2026-11-23T06:00`.
    pub fn slot_id(&self, slot: DateTime<Utc>) -> String {
        let minutes = self.text.split_whitespace().next() == Some("0");
        let fmt = |t: NaiveDateTime| {
            if minutes {
                t.format("%Y-%m-%dT%H:%M").to_string()
            } else {
                t.format("%Y-%m-%dT%H:%M:%S").to_string()
            }
        };
        match self.zone {
            Zone::Local => fmt(slot.with_timezone(&Local).naive_local()),
            Zone::Named(tz) => fmt(slot.with_timezone(&tz).naive_local()),
        }
    }

    /// The slot a slot id names, if it is an occurrence of this schedule.
    pub fn parse_slot(&self, id: &str) -> Result<DateTime<Utc>, String> {
        let naive = NaiveDateTime::parse_from_str(id, "%Y-%m-%dT%H:%M")
            .or_else(|_| NaiveDateTime::parse_from_str(id, "%Y-%m-%dT%H:%M:%S"))
            .map_err(|_| format!("{id:?} is not a slot; give its time as YYYY-MM-DDTHH:MM"))?;
        let at = match self.zone {
            Zone::Local => Local
                .from_local_datetime(&naive)
                .earliest()
                .map(|t| t.with_timezone(&Utc)),
            Zone::Named(tz) => tz
                .from_local_datetime(&naive)
                .earliest()
                .map(|t| t.with_timezone(&Utc)),
        }
        .ok_or_else(|| format!("{id} does not exist in {}", self.zone.name()))?;
        if self.latest_at_or_before(at) != Some(at) {
            return Err(format!(
                "{id} is not a time the schedule {:?} ({}) fires at",
                self.text,
                self.zone.name()
            ));
        }
        Ok(at)
    }
}

/// Whole seconds: croner keeps a time's fraction in what it finds, so
/// 06:00:00.906 would be "the 06:00 slot" and later than a sweep at .5.
fn whole<Tz: TimeZone>(t: DateTime<Tz>) -> DateTime<Tz> {
    let nanos = t.timestamp_subsec_nanos();
    t - chrono::Duration::nanoseconds(i64::from(nanos))
}

fn next<Tz: TimeZone>(cron: &Cron, t: DateTime<Tz>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&whole(t), false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn previous<Tz: TimeZone>(cron: &Cron, t: DateTime<Tz>) -> Option<DateTime<Utc>> {
    cron.find_previous_occurrence(&whole(t), true)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn daily(zone: &str) -> Schedule {
        Schedule::parse("0 0 6 * * *", Zone::parse(zone).unwrap()).unwrap()
    }

    #[test]
    fn next_and_latest_around_the_slot() {
        let s = daily("UTC");
        let cases = [
            // (now, next after, latest at or before)
            (
                "2026-11-23T05:59:59Z",
                "2026-11-23T06:00:00Z",
                "2026-11-22T06:00:00Z",
            ),
            (
                "2026-11-23T06:00:00Z",
                "2026-11-24T06:00:00Z",
                "2026-11-23T06:00:00Z",
            ),
            (
                "2026-11-23T06:00:01Z",
                "2026-11-24T06:00:00Z",
                "2026-11-23T06:00:00Z",
            ),
        ];
        for (now, want_next, want_latest) in cases {
            assert_eq!(s.next_after(utc(now)), Some(utc(want_next)), "{now}");
            assert_eq!(
                s.latest_at_or_before(utc(now)),
                Some(utc(want_latest)),
                "{now}"
            );
        }
    }

    #[test]
    fn occurrences_are_whole_seconds_whatever_the_fraction_of_now() {
        let s = Schedule::parse("*/3 * * * * *", Zone::parse("UTC").unwrap()).unwrap();
        let now = utc("2026-11-23T06:00:00.906Z");
        assert_eq!(
            s.latest_at_or_before(now),
            Some(utc("2026-11-23T06:00:00Z"))
        );
        assert_eq!(s.next_after(now), Some(utc("2026-11-23T06:00:03Z")));
        let just_before = utc("2026-11-23T06:00:02.999Z");
        assert_eq!(s.next_after(just_before), Some(utc("2026-11-23T06:00:03Z")));
    }

    #[test]
    fn a_slot_in_a_dst_gap_is_the_one_the_daemon_runs() {
        // 02:30 does not exist in Paris on 2026-03-29 (02:00 -> 03:00).
        let s = Schedule::parse("0 30 2 * * *", Zone::parse("Europe/Paris").unwrap()).unwrap();
        let forward = s.next_after(utc("2026-03-28T12:00:00Z")).unwrap();
        let later = utc("2026-03-29T10:00:00Z");
        assert_eq!(s.latest_at_or_before(later), Some(forward));
        assert_eq!(s.parse_slot(&s.slot_id(forward)), Ok(forward));
        // An ordinary day is untouched.
        assert_eq!(
            s.latest_at_or_before(utc("2026-03-30T10:00:00Z")),
            Some(utc("2026-03-30T00:30:00Z"))
        );
        assert!(Schedule::parse("@daily", Zone::Local).is_err());
    }

    #[test]
    fn a_named_zone_keeps_local_time_across_dst() {
        let s = daily("Europe/Paris");
        // CET (+01:00) in winter, CEST (+02:00) after 2026-03-29.
        assert_eq!(
            s.next_after(utc("2026-03-28T12:00:00Z")),
            Some(utc("2026-03-29T04:00:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2026-03-27T12:00:00Z")),
            Some(utc("2026-03-28T05:00:00Z"))
        );
        assert_eq!(s.slot_id(utc("2026-03-29T04:00:00Z")), "2026-03-29T06:00");
    }

    #[test]
    fn slot_ids_round_trip_and_must_be_occurrences() {
        let s = daily("UTC");
        let slot = utc("2026-11-23T06:00:00Z");
        assert_eq!(s.slot_id(slot), "2026-11-23T06:00");
        assert_eq!(s.parse_slot("2026-11-23T06:00"), Ok(slot));
        let off = s.parse_slot("2026-11-23T07:00").unwrap_err();
        assert!(off.contains("not a time the schedule"), "{off}");
        assert!(s.parse_slot("tomorrow").is_err());
        let secs = Schedule::parse("30 * * * * *", Zone::parse("UTC").unwrap()).unwrap();
        assert_eq!(
            secs.slot_id(utc("2026-11-23T06:00:30Z")),
            "2026-11-23T06:00:30"
        );
        // Every id of a schedule with seconds has them, :00 included.
        let even = Schedule::parse("*/2 * * * * *", Zone::parse("UTC").unwrap()).unwrap();
        assert_eq!(
            even.slot_id(utc("2026-11-23T06:00:00Z")),
            "2026-11-23T06:00:00"
        );
    }

    #[test]
    fn bad_expressions_say_how_to_write_one() {
        let utc = Zone::parse("UTC").unwrap();
        let five = Schedule::parse("0 6 * * *", utc).unwrap_err();
        assert!(five.contains("\"0 0 6 * * *\""), "{five}");
        assert!(five.contains("seconds first"), "{five}");
        let junk = Schedule::parse("every day", utc).unwrap_err();
        assert!(junk.contains("not a schedule"), "{junk}");
        let never = Schedule::parse("0 0 6 30 2 *", utc).unwrap_err();
        assert!(never.contains("never fires"), "{never}");
        assert!(Zone::parse("Mars/Olympus").is_err());
        assert_eq!(Zone::parse("local"), Ok(Zone::Local));
    }
}
