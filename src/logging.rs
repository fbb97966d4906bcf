//! Logs go to stderr through tracing-subscriber; `-v`/`-q` set the level,
//! `RUST_LOG` overrides it. Three formats: text (colour only on a
//! terminal), journal (chosen by default under systemd, where stderr is the
//! journal: the journal's native protocol with every field its own journal
//! field when its socket answers, else `<N>` syslog priority prefixes that
//! journald turns into the entry's priority, no timestamp, which journald
//! adds), and json.
//!
//! Fields carry text from outside (task ids, an executor's stderr): in every
//! format a control character (C0, DEL, C1) or a line/paragraph separator in
//! a field is written escaped (`\n`, `\r`, `\t`, `\u{1b}`), so no field can
//! start a forged line or reach the terminal as an escape sequence. Text and
//! journal escape field by field (`Escaped`); json is escaped by serde, and
//! what JSON allows raw (DEL, C1, U+2028/9) is written as `\uXXXX`.

use crate::cli::LogFormat;
use std::fmt;
use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// The format when none is asked for: journal when systemd connected
/// stderr to the journal (`JOURNAL_STREAM` names its device and inode).
pub fn default_format() -> LogFormat {
    if std::env::var_os("JOURNAL_STREAM").is_some_and(|v| stderr_is(&v)) {
        LogFormat::Journal
    } else {
        LogFormat::Text
    }
}

/// Whether stderr is the stream `JOURNAL_STREAM` (`DEVICE:INODE`) names: a
/// child whose stderr was redirected elsewhere inherits the variable.
fn stderr_is(value: &std::ffi::OsStr) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

pub fn init(verbose: u8, quiet: u8, format: Option<LogFormat>) {
    let level = match (verbose as i8) - (quiet as i8) {
        i8::MIN..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr);
    let _ = match format.unwrap_or_else(default_format) {
        LogFormat::Text => {
            let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(ansi).fmt_fields(Escaped).try_init()
        }
        LogFormat::Journal => match journald() {
            // Native fields: `journalctl TASK_ID=build-7` or
            // `FOREMAN_FINDING_ID=42` finds the entries of one task or
            // finding; values travel as fields, so nothing needs escaping.
            Some(layer) => {
                use tracing_subscriber::layer::SubscriberExt;
                use tracing_subscriber::util::SubscriberInitExt;
                tracing_subscriber::registry()
                    .with(filter())
                    .with(layer)
                    .try_init()
                    .map_err(|e| e.into())
            }
            // No journal socket (a container, CI, or stderr that only
            // looks like the journal): the `<N>`-prefixed lines.
            None => builder
                .with_ansi(false)
                .fmt_fields(Escaped)
                .event_format(Journal)
                .try_init(),
        },
        LogFormat::Json => builder
            .json()
            .with_ansi(false)
            .event_format(JsonSafe(tracing_subscriber::fmt::format().json()))
            .try_init(),
    };
}

/// The journal's native protocol, when its socket answers: every field
/// under its own name, upper-cased, with no prefix (tracing-journald's
/// default `F_`), and `SYSLOG_IDENTIFIER=foreman`.
fn journald() -> Option<tracing_journald::Layer> {
    tracing_journald::layer().ok().map(|l| {
        l.with_field_prefix(None)
            .with_syslog_identifier("foreman".to_string())
    })
}

/// Whether a character is written escaped: every control character (C0,
/// DEL, C1) and the Unicode line and paragraph separators.
fn needs_escape(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// A `fmt::Write` that escapes what `needs_escape` picks as it passes.
struct Escaping<'w, W: fmt::Write>(&'w mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some((at, c)) = rest.char_indices().find(|&(_, c)| needs_escape(c)) {
            self.0.write_str(&rest[..at])?;
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c => write!(self.0, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

/// Text with every control character escaped: for logs, and for anything
/// else printed to a terminal that came from outside (task ids, reasons).
pub fn escaped(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let _ = fmt::Write::write_str(&mut Escaping(&mut out), s);
    out
}

/// The fields of text and journal lines, as tracing-subscriber's default
/// (`message` first and bare, then `name=value`), every value escaped.
struct Escaped;

impl<'a> MakeVisitor<Writer<'a>> for Escaped {
    type Visitor = EscapedVisitor<'a>;

    fn make_visitor(&self, target: Writer<'a>) -> Self::Visitor {
        EscapedVisitor {
            writer: target,
            is_empty: true,
            result: Ok(()),
        }
    }
}

struct EscapedVisitor<'a> {
    writer: Writer<'a>,
    is_empty: bool,
    result: fmt::Result,
}

impl EscapedVisitor<'_> {
    fn write_field(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        if name.starts_with("log.") {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.result = (|| {
            if self.is_empty {
                self.is_empty = false;
            } else {
                self.writer.write_char(' ')?;
            }
            if name != "message" {
                if self.writer.has_ansi_escapes() {
                    write!(self.writer, "\x1b[3m{name}\x1b[0m\x1b[2m=\x1b[0m")?;
                } else {
                    write!(self.writer, "{name}=")?;
                }
            }
            fmt::Write::write_fmt(&mut Escaping(&mut self.writer), value)
        })();
    }
}

impl Visit for EscapedVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.write_field(field, format_args!("{value}"))
        } else {
            self.write_field(field, format_args!("{value:?}"))
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        self.write_field(field, format_args!("{text}"))
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write_field(field, format_args!("{value:?}"))
    }
}

impl VisitOutput<fmt::Result> for EscapedVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for EscapedVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

/// tracing-subscriber's json lines, with what JSON allows raw in a string
/// but a terminal or a log viewer may act on (DEL, C1, U+2028/9) written as
/// `\uXXXX`: the same JSON value, no raw control byte. serde escapes the
/// rest (C0, quotes, backslashes).
struct JsonSafe<F>(F);

impl<S, N, F> FormatEvent<S, N> for JsonSafe<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        writer.write_str(&json_safe(&line))
    }
}

/// JSON text with DEL, C1 and U+2028/9 as `\uXXXX` escapes. Outside a
/// string JSON has no such characters, so only strings change, and only in
/// spelling.
fn json_safe(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    for c in line.chars() {
        if (c as u32) >= 0x7f && needs_escape(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// `<priority>target: message key=value…`, one line per event.
struct Journal;

impl<S, N> FormatEvent<S, N> for Journal
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        // journald reads a priority at the start of every line: a newline
        // inside a message (an executor's stderr) must not start a line
        // with a priority of its own. The fields come escaped (`Escaped`);
        // escaping again catches any other field formatter.
        let mut fields = String::new();
        ctx.format_fields(Writer::new(&mut fields), event)?;
        writeln!(
            writer,
            "<{}>{}: {}",
            priority(*meta.level()),
            meta.target(),
            escaped(&fields)
        )
    }
}

/// syslog priorities (sd-daemon.h): ERROR is err (3), WARN warning (4),
/// INFO info (6), DEBUG and TRACE debug (7).
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_are_syslogs() {
        assert_eq!(priority(Level::ERROR), 3);
        assert_eq!(priority(Level::WARN), 4);
        assert_eq!(priority(Level::INFO), 6);
        assert_eq!(priority(Level::DEBUG), 7);
        assert_eq!(priority(Level::TRACE), 7);
    }

    const FORGED: &str = "t1\n2026-12-02T00:00:00Z ERROR forged\r\x1b[31mred\x7f\u{9b}2J\u{2028}x";

    /// What one event looks like in each format, the subscriber built as
    /// `init` builds it.
    fn lines(format: LogFormat) -> String {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let builder = tracing_subscriber::fmt()
            .with_writer(move || buf.clone())
            .with_ansi(false);
        let emit = || {
            let err = std::io::Error::other(FORGED);
            tracing::warn!(task_id = %FORGED, debug = ?FORGED, text = FORGED, error = &err as &(dyn std::error::Error + 'static), "finding {FORGED}");
        };
        match format {
            LogFormat::Text => {
                tracing::subscriber::with_default(builder.fmt_fields(Escaped).finish(), emit)
            }
            LogFormat::Journal => tracing::subscriber::with_default(
                builder.fmt_fields(Escaped).event_format(Journal).finish(),
                emit,
            ),
            LogFormat::Json => tracing::subscriber::with_default(
                builder
                    .json()
                    .event_format(JsonSafe(tracing_subscriber::fmt::format().json()))
                    .finish(),
                emit,
            ),
        }
        let bytes = out.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn no_field_forges_a_line_or_reaches_the_terminal_raw() {
        for format in [LogFormat::Text, LogFormat::Journal, LogFormat::Json] {
            let out = lines(format);
            assert_eq!(out.lines().count(), 1, "{format:?}: {out}");
            assert!(out.ends_with('\n'), "{format:?}: {out}");
            let bad = out
                .trim_end_matches('\n')
                .chars()
                .find(|c| needs_escape(*c));
            assert_eq!(bad, None, "{format:?}: {out:?}");
            assert!(out.contains("forged"), "{format:?}: {out}");
        }
        let text = lines(LogFormat::Text);
        assert!(
            text.contains("task_id=t1\\n2026-12-02T00:00:00Z ERROR forged\\r\\u{1b}[31mred\\u{7f}\\u{9b}2J\\u{2028}x"),
            "{text}"
        );
        assert!(text.contains("finding t1\\n2026"), "{text}");
        let json = lines(LogFormat::Json);
        let v: serde_json::Value = serde_json::from_str(json.trim_end()).expect("one JSON object");
        assert_eq!(v["fields"]["task_id"], FORGED, "{json}");
    }

    #[test]
    fn escaping_leaves_plain_text_alone() {
        assert_eq!(
            escaped("plain text, ünïcode \\ \"quoted\""),
            "plain text, ünïcode \\ \"quoted\""
        );
        assert_eq!(
            escaped("a\nb\r\t\x1b\x00\x7f\u{85}"),
            "a\\nb\\r\\t\\u{1b}\\u{0}\\u{7f}\\u{85}"
        );
        assert_eq!(
            json_safe("{\"a\":\"x\x7f\u{9b}\"}\n"),
            "{\"a\":\"x\\u007f\\u009b\"}\n"
        );
    }

    #[test]
    fn journal_stream_must_name_our_stderr() {
        assert!(!stderr_is(std::ffi::OsStr::new("garbage")));
        assert!(!stderr_is(std::ffi::OsStr::new("1:2")));
    }
}
