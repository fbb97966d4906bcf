//! Logs go to stderr through tracing-subscriber; `-v`/`-q` set the level,
//! `RUST_LOG` overrides it. Three formats: text (colour only on a
//! terminal), journal (chosen by default under systemd, where stderr is the
//! journal: `<N>` syslog priority prefixes that journald turns into the
//! entry's priority, no timestamp, which journald adds), and json.

use crate::cli::LogFormat;
use std::fmt;
use std::io::IsTerminal;
use tracing::{Event, Level, Subscriber};
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
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format.unwrap_or_else(default_format) {
        LogFormat::Text => {
            let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(ansi).try_init()
        }
        LogFormat::Journal => builder.with_ansi(false).event_format(Journal).try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
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
        // with a priority of its own.
        let mut fields = String::new();
        ctx.format_fields(Writer::new(&mut fields), event)?;
        writeln!(
            writer,
            "<{}>{}: {}",
            priority(*meta.level()),
            meta.target(),
            fields.replace('\n', "\\n").replace('\r', "\\r")
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

    #[test]
    fn journal_stream_must_name_our_stderr() {
        assert!(!stderr_is(std::ffi::OsStr::new("garbage")));
        assert!(!stderr_is(std::ffi::OsStr::new("1:2")));
    }
}
