//! What rackboot writes to its log: one event is one line, whatever the
//! network sent.
//!
//! Request paths, TFTP file names, DHCP host names and vendor classes, and
//! anything else a client chooses, end up in log lines (in an error's message
//! more often than in a field of their own). A newline in one of them, sent
//! as `%0a` in a URL or as a raw byte in a TFTP request, would start a line
//! of the client's making: a forged event for whoever reads the log, or a
//! tool that parses it. So the log's field formatter ([`Fields`]) escapes
//! control characters in every field and in the message, not only in the
//! values a call site remembered to wrap: `\n`, `\r`, `\t` as such, other
//! controls as `\x1b` or `\u{85}`, and the Unicode line separators and
//! bidirectional overrides that make text display other than it reads as
//! `\u{2028}` and the like.
//!
//! Owns the escaping and the subscriber `rackboot` logs with ([`init`]); does
//! not own what is logged where.

use std::fmt::{self, Write as _};
use std::io::IsTerminal as _;

use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::Writer;

/// The log on stderr, filtered by `RACKBOOT_LOG` (default `info`), colours
/// only for a person at a terminal, every field escaped ([`Fields`]).
pub fn init() {
    let filter = EnvFilter::try_from_env("RACKBOOT_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,hickory_proto=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in journald or log files.
        .with_ansi(std::io::stderr().is_terminal())
        .fmt_fields(Fields)
        .init();
}

/// Whether `c` is written escaped: controls (C0, DEL, C1), the Unicode line
/// and paragraph separators, and the marks and overrides that reorder text.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
        )
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// A [`fmt::Write`] that passes text through with [`needs_escape`]
/// characters escaped.
pub struct Escaping<W>(pub W);

impl<W: fmt::Write> fmt::Write for Escaping<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(at) = rest.find(needs_escape) {
            self.0.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().expect("found at a char boundary");
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c if u32::from(c) < 0x80 => write!(self.0, "\\x{:02x}", u32::from(c))?,
                c => write!(self.0, "\\u{{{:x}}}", u32::from(c))?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

/// `text` as the log writes it.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let _ = Escaping(&mut out).write_str(text);
    out
}

/// The log's field formatter: as tracing-subscriber's default (the message
/// first, then `name=value`, string fields quoted), with every value escaped.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fields;

impl<'w> MakeVisitor<Writer<'w>> for Fields {
    type Visitor = FieldsVisitor<'w>;

    fn make_visitor(&self, writer: Writer<'w>) -> FieldsVisitor<'w> {
        FieldsVisitor {
            writer,
            empty: true,
            result: Ok(()),
        }
    }
}

pub struct FieldsVisitor<'w> {
    writer: Writer<'w>,
    empty: bool,
    result: fmt::Result,
}

impl Visit for FieldsVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"))
        } else {
            self.record_debug(field, &value)
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The whole chain, as one value: a cause is often where the
        // client's input is quoted.
        let mut chain = value.to_string();
        let mut source = value.source();
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        self.record_debug(field, &format_args!("{chain}"))
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        // Metadata of `log` records, already shown as the event's target.
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        if !std::mem::take(&mut self.empty) {
            self.result = self.writer.write_char(' ');
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.result = self.result.and_then(|()| {
            if name != "message" {
                write!(self.writer, "{name}=")?;
            }
            write!(Escaping(&mut self.writer), "{value:?}")
        });
    }
}

impl VisitOutput<fmt::Result> for FieldsVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for FieldsVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn controls_separators_and_overrides_are_escaped_and_the_rest_kept() {
        for (raw, logged) in [
            ("/boot/x.ipxe", "/boot/x.ipxe"),
            ("a\nb\r\nc\td", "a\\nb\\r\\nc\\td"),
            (
                "\u{1b}[31mred\u{7}\u{0}\u{7f}",
                "\\x1b[31mred\\x07\\x00\\x7f",
            ),
            ("c1\u{85}next", "c1\\u{85}next"),
            ("line\u{2028}sep\u{2029}", "line\\u{2028}sep\\u{2029}"),
            (
                "evil\u{202e}txt.exe\u{2066}",
                "evil\\u{202e}txt.exe\\u{2066}",
            ),
            // Printable text outside ASCII is kept as it came.
            ("höst-ñame 名前", "höst-ñame 名前"),
            ("", ""),
        ] {
            assert_eq!(escape(raw), logged, "{raw:?}");
        }
    }

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(b)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn one_event_is_one_line_whatever_its_fields_hold() {
        let buf = Buffer::default();
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .fmt_fields(Fields)
            .finish();
        let forged = "x\n2026-01-01T00:00:00Z  INFO rackboot: admin token accepted";
        let err = std::io::Error::other(format!("no such file {forged}"));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", path = %forged);
            let _in = span.enter();
            tracing::info!(file = %forged, name = forged, "TFTP read of {forged}");
            tracing::warn!(error = &err as &dyn std::error::Error, "cannot open");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        for (escaped, what) in [
            (
                "TFTP read of x\\n2026-01-01T00:00:00Z  INFO rackboot: admin",
                "the message",
            ),
            (" file=x\\n2026", "a Display field"),
            (
                " name=\"x\\n2026",
                "a string field, quoted and escaped as before",
            ),
            ("request{path=x\\n2026", "a span's field"),
        ] {
            assert!(lines[0].contains(escaped), "{what}: {text}");
        }
        assert!(lines[1].contains("error=no such file x\\n2026"), "{text}");
    }
}
