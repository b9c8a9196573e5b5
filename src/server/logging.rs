//! Logging in nats-server's shape:
//! `[pid] 2026/11/22 06:16:16.123456 [INF] Server is ready`.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// Event formatter producing nats-server's log line layout.
pub struct NatsFormat {
    pid: u32,
    logtime: bool,
}

impl<S, N> FormatEvent<S, N> for NatsFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = match *event.metadata().level() {
            Level::ERROR => "ERR",
            Level::WARN => "WRN",
            Level::INFO => "INF",
            Level::DEBUG => "DBG",
            Level::TRACE => "TRC",
        };
        write!(w, "[{}] ", self.pid)?;
        if self.logtime {
            write!(
                w,
                "{} ",
                chrono::Local::now().format("%Y/%m/%d %H:%M:%S%.6f")
            )?;
        }
        write!(w, "[{level}] ")?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// A log file opened for append, shared by all threads.
struct FileWriter(Mutex<std::fs::File>);

impl<'a> MakeWriter<'a> for FileWriter {
    type Writer = FileGuard<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        FileGuard(self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

struct FileGuard<'a>(std::sync::MutexGuard<'a, std::fs::File>);

impl Write for FileGuard<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Install the global subscriber. `debug` (-D) and `trace` (-V) raise the
/// level for rnats's own events only; dependencies stay at warnings.
pub fn init(
    debug: bool,
    trace: bool,
    logtime: bool,
    json: bool,
    file: Option<&Path>,
) -> std::io::Result<()> {
    let level = if trace {
        "trace"
    } else if debug {
        "debug"
    } else {
        "info"
    };
    let filter = tracing_subscriber::EnvFilter::new(format!("warn,rnats={level}"));
    let writer = match file {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            BoxMakeWriter::new(FileWriter(Mutex::new(f)))
        }
        None => BoxMakeWriter::new(std::io::stderr),
    };
    // `try_init` fails only when a subscriber is already installed (tests
    // start several servers in one process): keep the first one.
    let _ = if json {
        // JSON lines: one object per event, audit fields as JSON fields,
        // for log shippers and SIEMs.
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_current_span(false)
            .with_target(true)
            .with_writer(writer)
            .try_init()
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .event_format(NatsFormat {
                pid: std::process::id(),
                logtime,
            })
            .with_writer(writer)
            .try_init()
    };
    Ok(())
}
