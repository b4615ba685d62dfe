//! Log records on stderr: one record per line, whatever the logged values
//! hold. A username with a newline must not write a second, forged record,
//! so the text format escapes control characters in every message and field
//! value; the JSON format (for log shippers) escapes them as JSON does.

use crate::config::LogFormat;
use std::fmt::{self, Write as _};
use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::EnvFilter;

/// `RUST_LOG_FORMAT` ("text" or "json") wins over `[server] log_format`.
pub fn format_from_env(configured: LogFormat) -> Result<LogFormat, String> {
    match std::env::var("RUST_LOG_FORMAT") {
        Ok(v) if !v.is_empty() => LogFormat::parse(&v)
            .ok_or_else(|| format!("RUST_LOG_FORMAT: {v:?} is not \"text\" or \"json\"")),
        _ => Ok(configured),
    }
}

/// Installs the global subscriber: level from `RUST_LOG` (default `info`;
/// the database driver's notices, such as "table already exists" at each
/// start, only from `warn`).
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().with_ansi(false).init(),
        LogFormat::Text => builder
            .fmt_fields(EscapedFields)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

/// Formats the fields of events and spans as `name=value`, the message
/// first and bare, with control characters escaped.
#[derive(Debug, Default, Clone, Copy)]
pub struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = EscapingVisitor {
            out: Escaping(writer),
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'writer> {
    out: Escaping<Writer<'writer>>,
    first: bool,
    result: fmt::Result,
}

impl Visit for EscapingVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        // Records bridged from the `log` crate carry their metadata as fields.
        if name.starts_with("log.") {
            return;
        }
        if !self.first {
            self.result = self.out.0.write_char(' ');
        }
        self.first = false;
        self.result = self.result.and_then(|()| match name {
            "message" => write!(self.out, "{value:?}"),
            name => {
                let name = name.strip_prefix("r#").unwrap_or(name);
                write!(self.out.0, "{name}=").and_then(|()| write!(self.out, "{value:?}"))
            }
        });
    }
}

/// A writer that escapes what could end a log line or drive a terminal:
/// C0 and C1 control characters, DEL, and the Unicode line, paragraph and
/// bidirectional-override characters.
struct Escaping<W>(W);

impl<W: fmt::Write> fmt::Write for Escaping<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(at) = rest.find(needs_escape) {
            self.0.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c => write!(self.0, "\\u{{{:x}}}", u32::from(c))?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| io::ErrorKind::Other)?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn text_of(log: impl FnOnce()) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(EscapedFields)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn a_newline_in_a_value_stays_on_its_line() {
        let user = "x\nINFO SSO session opened user=admin";
        let text = text_of(|| {
            let span = tracing::info_span!("request", path = %"/a\r\nb");
            let _in = span.enter();
            tracing::info!(user = %user, other = ?user, "login refused: {}", "bad\x1b[31m");
        });
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains(r"user=x\nINFO SSO session opened user=admin"),
            "{text}"
        );
        assert!(text.contains(r#"other="x\nINFO"#), "{text}");
        assert!(text.contains(r"path=/a\r\nb"), "{text}");
        assert!(text.contains(r"login refused: bad\u{1b}[31m"), "{text}");
    }

    #[test]
    fn every_control_and_line_breaking_character_is_escaped() {
        let mut out = Escaping(String::new());
        out.write_str("a\tb\u{7f}c\u{85}d\u{2028}e\u{202e}f é")
            .unwrap();
        assert_eq!(out.0, r"a\tb\u{7f}c\u{85}d\u{2028}e\u{202e}f é");
    }

    #[test]
    fn plain_fields_read_as_before() {
        let text = text_of(|| tracing::info!(n = 3, name = "casuser", r#type = %"cas", "ok"));
        assert!(text.contains(r#"ok n=3 name="casuser" type=cas"#), "{text}");
    }

    #[test]
    fn the_environment_names_json_or_text() {
        assert_eq!(LogFormat::parse("json"), Some(LogFormat::Json));
        assert_eq!(LogFormat::parse("yaml"), None);
    }
}
