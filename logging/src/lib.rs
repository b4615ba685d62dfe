//! Log records on stderr: one record per line, whatever the logged values
//! hold. A username with a newline must not write a second, forged record,
//! so the text format escapes control characters in every message and field
//! value; the JSON format (for log shippers) escapes them as JSON does.
//!
//! Every record written while a request is served names that request (its
//! id, method and path) as `request{...}` in text and as the `span` in JSON,
//! the shape a tracing span gave. The label is a task-local read by the
//! formatters, not a span: a span per request cost a tenth of a CAS round
//! trip (a registry slot, its fields formatted up front, enter and exit at
//! every poll) for records that most requests never write.

use http::{HeaderValue, Method, Uri};
use serde_json::{Map, Value};
use std::fmt::{self, Write as _};
use std::future::Future;
use tokio::task::futures::TaskLocalFuture;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// `[server] log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

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
        LogFormat::Json => builder
            .with_ansi(false)
            .fmt_fields(JsonFields::new())
            .event_format(Records::Json)
            .init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .fmt_fields(EscapedFields)
            .event_format(Records::Text)
            .init(),
    }
}

tokio::task_local! {
    static REQUEST: RequestLabel;
}

/// The request a record was written for. The path only: the query carries
/// tickets.
pub struct RequestLabel {
    pub id: HeaderValue,
    pub method: Method,
    pub uri: Uri,
}

impl RequestLabel {
    fn id(&self) -> &str {
        self.id.to_str().unwrap_or("-")
    }
}

/// Runs `future` (a request) with its records labelled.
pub fn scope<F: Future>(label: RequestLabel, future: F) -> TaskLocalFuture<RequestLabel, F> {
    REQUEST.scope(label, future)
}

/// Runs `f` with its records labelled.
pub fn in_scope<R>(label: RequestLabel, f: impl FnOnce() -> R) -> R {
    REQUEST.sync_scope(label, f)
}

/// Castellan's two record formats.
#[derive(Debug, Clone, Copy)]
enum Records {
    /// `2026-01-01T00:00:00.000000Z  INFO request{id="…" method=GET
    /// path=/…}: target: message fields`, as tracing's own format wrote it.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields`, `target`,
    /// and `span` (the innermost) and `spans` (outermost first), as
    /// tracing-subscriber's JSON format wrote them.
    Json,
}

/// A span other than the request's (other crates open them): its name and
/// its fields as the subscriber formatted them (`EscapedFields` for text,
/// `JsonFields` for JSON).
struct SpanFields {
    name: &'static str,
    fields: String,
}

impl<S, N> FormatEvent<S, N> for Records
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Records bridged from the `log` crate: their own level and target.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let spans: Vec<SpanFields> = ctx
            .event_scope()
            .into_iter()
            .flat_map(|s| s.from_root())
            .map(|span| SpanFields {
                name: span.name(),
                fields: span
                    .extensions()
                    .get::<FormattedFields<N>>()
                    .map(|f| f.fields.clone())
                    .unwrap_or_default(),
            })
            .collect();
        match self {
            Self::Text => text(writer, event, meta, &spans),
            Self::Json => json(writer, event, meta, &spans),
        }
    }
}

fn text(
    mut writer: Writer<'_>,
    event: &Event<'_>,
    meta: &Metadata<'_>,
    spans: &[SpanFields],
) -> fmt::Result {
    SystemTime.format_time(&mut writer)?;
    let level = *meta.level();
    if writer.has_ansi_escapes() {
        write!(writer, " \x1b[{}m{level:>5}\x1b[0m ", colour(level))?;
    } else {
        write!(writer, " {level:>5} ")?;
    }
    let labelled = REQUEST.try_with(|r| -> fmt::Result {
        write!(writer, "request{{id=")?;
        write!(Escaping(&mut writer), "{:?}", r.id())?;
        write!(writer, " method={} path=", r.method)?;
        Escaping(&mut writer).write_str(r.uri.path())?;
        writer.write_str("}:")
    });
    let any = labelled.is_ok() || !spans.is_empty();
    labelled.unwrap_or(Ok(()))?;
    for span in spans {
        writer.write_str(span.name)?;
        if !span.fields.is_empty() {
            write!(writer, "{{{}}}", span.fields)?;
        }
        writer.write_char(':')?;
    }
    if any {
        writer.write_char(' ')?;
    }
    write!(writer, "{}: ", meta.target())?;
    EscapedFields.format_fields(writer.by_ref(), event)?;
    writeln!(writer)
}

fn colour(level: Level) -> u8 {
    match level {
        Level::TRACE => 35,
        Level::DEBUG => 34,
        Level::INFO => 32,
        Level::WARN => 33,
        Level::ERROR => 31,
    }
}

fn json(
    mut writer: Writer<'_>,
    event: &Event<'_>,
    meta: &Metadata<'_>,
    spans: &[SpanFields],
) -> fmt::Result {
    let mut timestamp = String::new();
    SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
    let mut fields = JsonVisitor(Map::new());
    event.record(&mut fields);
    let mut objects: Vec<Value> = REQUEST
        .try_with(|r| {
            serde_json::json!({
                "id": r.id(),
                "method": r.method.as_str(),
                "path": r.uri.path(),
                "name": "request",
            })
        })
        .into_iter()
        .collect();
    for span in spans {
        let mut object =
            serde_json::from_str::<Map<String, Value>>(&span.fields).unwrap_or_default();
        object.insert("name".into(), span.name.into());
        objects.push(Value::Object(object));
    }
    let record = Record {
        timestamp,
        level: meta.level().as_str(),
        fields: fields.0,
        target: meta.target(),
        span: objects.last(),
        spans: &objects,
    };
    let line = serde_json::to_string(&record).map_err(|_| fmt::Error)?;
    writeln!(writer, "{line}")
}

#[derive(serde::Serialize)]
struct Record<'a> {
    timestamp: String,
    level: &'a str,
    fields: Map<String, Value>,
    target: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    span: Option<&'a Value>,
    #[serde(skip_serializing_if = "<[Value]>::is_empty")]
    spans: &'a [Value],
}

/// An event's fields as JSON values (records bridged from `log` carry
/// their metadata as `log.` fields, left out as the text format does).
struct JsonVisitor(Map<String, Value>);

impl JsonVisitor {
    fn put(&mut self, field: &Field, value: Value) {
        if !field.name().starts_with("log.") {
            self.0.insert(field.name().to_owned(), value);
        }
    }
}

impl Visit for JsonVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
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

    fn captured(json: bool, log: impl FnOnce()) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone());
        if json {
            let subscriber = builder
                .fmt_fields(JsonFields::new())
                .event_format(Records::Json)
                .finish();
            tracing::subscriber::with_default(subscriber, log);
        } else {
            let subscriber = builder
                .fmt_fields(EscapedFields)
                .event_format(Records::Text)
                .finish();
            tracing::subscriber::with_default(subscriber, log);
        }
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    fn text_of(log: impl FnOnce()) -> String {
        captured(false, log)
    }

    fn label(id: &'static str) -> RequestLabel {
        RequestLabel {
            id: HeaderValue::from_static(id),
            method: Method::POST,
            uri: Uri::from_static("/cas/login?service=https%3A%2F%2Fapp&ticket=ST-secret"),
        }
    }

    #[test]
    fn a_newline_in_a_value_stays_on_its_line() {
        let user = "x\nINFO SSO session opened user=admin";
        let text = text_of(|| {
            let span = tracing::info_span!("other", path = %"/a\r\nb");
            let _in = span.enter();
            tracing::info!(user = %user, other = ?user, "login refused: {}", "bad\x1b[31m");
        });
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains(r"user=x\nINFO SSO session opened user=admin"),
            "{text}"
        );
        assert!(text.contains(r#"other="x\nINFO"#), "{text}");
        assert!(text.contains(r"other{path=/a\r\nb}: "), "{text}");
        assert!(text.contains(r"login refused: bad\u{1b}[31m"), "{text}");
    }

    #[test]
    fn a_record_names_its_request_by_id_method_and_path_never_the_query() {
        let text = text_of(|| {
            in_scope(label("7-1"), || tracing::warn!(user = "bob", "refused"));
            tracing::info!("after");
        });
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].contains(
                r#"  WARN request{id="7-1" method=POST path=/cas/login}: castellan_logging::tests: refused user="bob""#
            ),
            "{text}"
        );
        assert!(!text.contains("ST-secret"), "{text}");
        assert!(
            lines[1].contains("  INFO castellan_logging::tests: after"),
            "{text}"
        );
        // A client's X-Request-Id cannot close the label early.
        let text = text_of(|| in_scope(label(r#"a"}: b"#), || tracing::info!("x")));
        assert!(text.contains(r#"request{id="a\"}: b" method"#), "{text}");
    }

    #[test]
    fn json_records_are_objects_with_the_request_as_their_span() {
        let text = captured(true, || {
            in_scope(label("7-2"), || {
                tracing::info!(user = "x\ny", n = 3, ok = true, "login refused")
            });
            tracing::info!("after");
            let other = tracing::info_span!("other", path = "/a");
            in_scope(label("7-3"), || other.in_scope(|| tracing::info!("inside")));
        });
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        let first = &lines[0];
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["target"], "castellan_logging::tests");
        assert_eq!(first["fields"]["message"], "login refused");
        assert_eq!(first["fields"]["user"], "x\ny");
        assert_eq!(first["fields"]["n"], 3);
        assert_eq!(first["fields"]["ok"], true);
        let span = serde_json::json!({"id": "7-2", "method": "POST", "path": "/cas/login", "name": "request"});
        assert_eq!(first["span"], span);
        assert_eq!(first["spans"], serde_json::json!([span]));
        assert!(first["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')));
        assert!(lines[1].get("span").is_none(), "{text}");
        // Another crate's span follows the request's, innermost last.
        assert_eq!(
            lines[2]["span"],
            serde_json::json!({"path": "/a", "name": "other"})
        );
        assert_eq!(lines[2]["spans"][0]["id"], "7-3");
        assert_eq!(lines[2]["spans"].as_array().map(Vec::len), Some(2));
        assert!(!text.contains("ST-secret"), "{text}");
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
