//! TFTP wire format: RRQ, WRQ, DATA, ACK, ERROR (RFC 1350) and OACK with the
//! options of RFC 2347 (blksize RFC 2348, tsize and timeout RFC 2349,
//! windowsize RFC 7440).
//!
//! [`Packet::parse`] is total: any byte string gives a packet or a
//! [`ParseError`], never a panic. It is lenient only where real clients need
//! it (mode and option names in any case, unknown or out-of-range options
//! kept aside rather than refused, trailing NUL padding). Owns no sockets and
//! decides nothing: what to grant is the session's.

use std::fmt;

/// Bytes before the data in a DATA packet: opcode and block number.
pub const DATA_HEADER: usize = 4;
/// RFC 1350's block size, used when a client asks for no other.
pub const DEFAULT_BLKSIZE: u16 = 512;
/// RFC 2348's range for `blksize`.
pub const MIN_BLKSIZE: u16 = 8;
pub const MAX_BLKSIZE: u16 = 65464;

const RRQ: u16 = 1;
const WRQ: u16 = 2;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const OACK: u16 = 6;

/// One TFTP packet; DATA borrows its payload from the received buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    Rrq(Request),
    Wrq(Request),
    Data {
        block: u16,
        data: &'a [u8],
    },
    Ack(u16),
    Error {
        code: ErrorCode,
        message: String,
    },
    /// Option acknowledgement (RFC 2347), in the order given.
    Oack(Vec<(String, String)>),
}

/// A read or write request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub filename: String,
    pub mode: Mode,
    pub options: Options,
}

/// RFC 1350 transfer modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Netascii,
    Octet,
    Mail,
}

/// The options a client asked for. A recognised option with a value outside
/// its RFC's range, and any option rackboot does not know, goes to `ignored`
/// (name=value, for the log): RFC 2347 lets a server leave an option out of
/// its OACK, which is kinder to quirky firmware than refusing the request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// RFC 2348: 8..=65464.
    pub blksize: Option<u16>,
    /// RFC 2349: 0 in a read request ("tell me the size").
    pub tsize: Option<u64>,
    /// RFC 2349: seconds, 1..=255.
    pub timeout: Option<u8>,
    /// RFC 7440: 1..=65535.
    pub windowsize: Option<u16>,
    pub ignored: Vec<String>,
}

/// RFC 1350 (and RFC 2347's 8) error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 0: see the message.
    NotDefined,
    FileNotFound,
    AccessViolation,
    DiskFull,
    IllegalOperation,
    UnknownTid,
    FileExists,
    NoSuchUser,
    /// 8 (RFC 2347): the client refuses the OACK; PXE firmware sends it after
    /// a size probe (an RRQ with `tsize` only to learn the size).
    OptionRefused,
    Other(u16),
}

impl ErrorCode {
    pub fn from_u16(code: u16) -> ErrorCode {
        match code {
            0 => ErrorCode::NotDefined,
            1 => ErrorCode::FileNotFound,
            2 => ErrorCode::AccessViolation,
            3 => ErrorCode::DiskFull,
            4 => ErrorCode::IllegalOperation,
            5 => ErrorCode::UnknownTid,
            6 => ErrorCode::FileExists,
            7 => ErrorCode::NoSuchUser,
            8 => ErrorCode::OptionRefused,
            n => ErrorCode::Other(n),
        }
    }

    pub fn as_u16(self) -> u16 {
        match self {
            ErrorCode::NotDefined => 0,
            ErrorCode::FileNotFound => 1,
            ErrorCode::AccessViolation => 2,
            ErrorCode::DiskFull => 3,
            ErrorCode::IllegalOperation => 4,
            ErrorCode::UnknownTid => 5,
            ErrorCode::FileExists => 6,
            ErrorCode::NoSuchUser => 7,
            ErrorCode::OptionRefused => 8,
            ErrorCode::Other(n) => n,
        }
    }
}

/// Why bytes are not a TFTP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{len} bytes is too short for a TFTP packet")]
    TooShort { len: usize },
    #[error("opcode {0} is not TFTP's (1-6)")]
    UnknownOpcode(u16),
    #[error("the {0} is not NUL-terminated")]
    Unterminated(&'static str),
    #[error("the {0} is not UTF-8")]
    NotUtf8(&'static str),
    #[error("the filename is empty")]
    EmptyFilename,
    #[error("mode `{0}` is not netascii, octet or mail")]
    UnknownMode(String),
    #[error("an ACK is 4 bytes, this one {0}")]
    BadAck(usize),
    /// RFC 2347: a server with no option to acknowledge sends DATA, not an OACK.
    #[error("an OACK acknowledges no option")]
    EmptyOack,
}

impl<'a> Packet<'a> {
    /// The packet `buf` holds.
    pub fn parse(buf: &'a [u8]) -> Result<Packet<'a>, ParseError> {
        if buf.len() < 4 {
            return Err(ParseError::TooShort { len: buf.len() });
        }
        let opcode = u16::from_be_bytes([buf[0], buf[1]]);
        let body = &buf[2..];
        match opcode {
            RRQ => Ok(Packet::Rrq(parse_request(body)?)),
            WRQ => Ok(Packet::Wrq(parse_request(body)?)),
            DATA => Ok(Packet::Data {
                block: u16::from_be_bytes([body[0], body[1]]),
                data: &body[2..],
            }),
            // Some clients pad short packets; an ACK is exactly 4 bytes, but
            // trailing zeros are harmless, anything else is not an ACK.
            ACK if body[2..].iter().all(|&b| b == 0) => {
                Ok(Packet::Ack(u16::from_be_bytes([body[0], body[1]])))
            }
            ACK => Err(ParseError::BadAck(buf.len())),
            ERROR => {
                let code = ErrorCode::from_u16(u16::from_be_bytes([body[0], body[1]]));
                // The message is for people: keep what can be read of it.
                let raw = &body[2..];
                let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
                Ok(Packet::Error {
                    code,
                    message: String::from_utf8_lossy(&raw[..end]).into_owned(),
                })
            }
            OACK => {
                let mut fields = Fields(body);
                let mut opts = Vec::new();
                while let Some(name) = fields.next_str("option name")? {
                    let value = fields
                        .next_str("option value")?
                        .ok_or(ParseError::Unterminated("option value"))?;
                    opts.push((name.to_ascii_lowercase(), value.to_string()));
                }
                if opts.is_empty() {
                    return Err(ParseError::EmptyOack);
                }
                Ok(Packet::Oack(opts))
            }
            n => Err(ParseError::UnknownOpcode(n)),
        }
    }

    /// Appends the packet's bytes to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        match self {
            Packet::Rrq(r) | Packet::Wrq(r) => {
                let op = if matches!(self, Packet::Rrq(_)) {
                    RRQ
                } else {
                    WRQ
                };
                out.extend_from_slice(&op.to_be_bytes());
                put_str(out, &r.filename);
                put_str(out, r.mode.as_str());
                let o = &r.options;
                let mut opt = |name: &str, v: Option<String>| {
                    if let Some(v) = v {
                        put_str(out, name);
                        put_str(out, &v);
                    }
                };
                opt("blksize", o.blksize.map(|v| v.to_string()));
                opt("tsize", o.tsize.map(|v| v.to_string()));
                opt("timeout", o.timeout.map(|v| v.to_string()));
                opt("windowsize", o.windowsize.map(|v| v.to_string()));
            }
            Packet::Data { block, data } => {
                emit_data_header(out, *block);
                out.extend_from_slice(data);
            }
            Packet::Ack(block) => {
                out.extend_from_slice(&ACK.to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
            }
            Packet::Error { code, message } => emit_error(out, *code, message),
            Packet::Oack(opts) => {
                out.extend_from_slice(&OACK.to_be_bytes());
                for (name, value) in opts {
                    put_str(out, name);
                    put_str(out, value);
                }
            }
        }
    }

    /// The packet as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.emit(&mut out);
        out
    }
}

/// Writes a DATA header into the first [`DATA_HEADER`] bytes of `out`, so
/// the sender can read file bytes straight in behind it.
pub fn put_data_header(out: &mut [u8], block: u16) {
    out[..2].copy_from_slice(&DATA.to_be_bytes());
    out[2..4].copy_from_slice(&block.to_be_bytes());
}

fn emit_data_header(out: &mut Vec<u8>, block: u16) {
    let mut h = [0u8; DATA_HEADER];
    put_data_header(&mut h, block);
    out.extend_from_slice(&h);
}

/// An ERROR packet. A message with a NUL is cut there (it would end the field).
pub fn emit_error(out: &mut Vec<u8>, code: ErrorCode, message: &str) {
    out.extend_from_slice(&ERROR.to_be_bytes());
    out.extend_from_slice(&code.as_u16().to_be_bytes());
    put_str(out, message.split('\0').next().unwrap_or(""));
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Netascii => "netascii",
            Mode::Octet => "octet",
            Mode::Mail => "mail",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_u16())
    }
}

/// NUL-terminated fields, one after another.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    /// The next field; `None` at the end (including trailing NUL padding,
    /// which some PXE ROMs add after the last option).
    fn next_str(&mut self, what: &'static str) -> Result<Option<&'a str>, ParseError> {
        if self.0.iter().all(|&b| b == 0) {
            self.0 = &[];
            return Ok(None);
        }
        let end = self
            .0
            .iter()
            .position(|&b| b == 0)
            .ok_or(ParseError::Unterminated(what))?;
        let s = std::str::from_utf8(&self.0[..end]).map_err(|_| ParseError::NotUtf8(what))?;
        self.0 = &self.0[end + 1..];
        Ok(Some(s))
    }

    /// The next field, which must be there.
    fn require(&mut self, what: &'static str) -> Result<&'a str, ParseError> {
        self.next_str(what)?.ok_or(ParseError::Unterminated(what))
    }
}

fn parse_request(body: &[u8]) -> Result<Request, ParseError> {
    let mut fields = Fields(body);
    // An empty filename reads as "no fields" to `Fields`: say what it is.
    if body.first() == Some(&0) {
        return Err(ParseError::EmptyFilename);
    }
    let filename = fields.require("filename")?.to_string();
    let mode = match fields.require("mode")? {
        m if m.eq_ignore_ascii_case("octet") => Mode::Octet,
        m if m.eq_ignore_ascii_case("netascii") => Mode::Netascii,
        m if m.eq_ignore_ascii_case("mail") => Mode::Mail,
        m => return Err(ParseError::UnknownMode(m.to_string())),
    };
    let mut options = Options::default();
    loop {
        // An option whose name or value is cut off or not UTF-8 ends the
        // list: everything before it still counts.
        let name = match fields.next_str("option name") {
            Ok(Some(n)) => n,
            Ok(None) => break,
            Err(e) => {
                options.ignored.push(format!("({e})"));
                break;
            }
        };
        let value = match fields.next_str("option value") {
            Ok(Some(v)) => v,
            Ok(None) => {
                options.ignored.push(format!("{name} (no value)"));
                break;
            }
            Err(e) => {
                options.ignored.push(format!("{name} ({e})"));
                break;
            }
        };
        let ok = match name.to_ascii_lowercase().as_str() {
            // The first of a repeated option counts.
            "blksize" if options.blksize.is_none() => value
                .parse::<u16>()
                .ok()
                .filter(|v| (MIN_BLKSIZE..=MAX_BLKSIZE).contains(v))
                .map(|v| options.blksize = Some(v)),
            "tsize" if options.tsize.is_none() => {
                value.parse::<u64>().ok().map(|v| options.tsize = Some(v))
            }
            "timeout" if options.timeout.is_none() => value
                .parse::<u8>()
                .ok()
                .filter(|&v| v >= 1)
                .map(|v| options.timeout = Some(v)),
            "windowsize" if options.windowsize.is_none() => value
                .parse::<u16>()
                .ok()
                .filter(|&v| v >= 1)
                .map(|v| options.windowsize = Some(v)),
            _ => None,
        };
        if ok.is_none() {
            options.ignored.push(format!("{name}={value}"));
        }
    }
    Ok(Request {
        filename,
        mode,
        options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrq(fields: &[&str]) -> Vec<u8> {
        let mut b = vec![0, 1];
        for f in fields {
            b.extend_from_slice(f.as_bytes());
            b.push(0);
        }
        b
    }

    #[test]
    fn requests_parse_with_their_options() {
        let opts = |blksize, tsize, timeout, windowsize, ignored: &[&str]| Options {
            blksize,
            tsize,
            timeout,
            windowsize,
            ignored: ignored.iter().map(|s| s.to_string()).collect(),
        };
        let table: &[(&[&str], Options)] = &[
            (&["a.efi", "octet"], opts(None, None, None, None, &[])),
            (
                &[
                    "a.efi",
                    "OCTET",
                    "BLKSIZE",
                    "1468",
                    "tsize",
                    "0",
                    "timeout",
                    "5",
                    "windowsize",
                    "16",
                ],
                opts(Some(1468), Some(0), Some(5), Some(16), &[]),
            ),
            // Out of range or not numbers: left out, kept for the log.
            (
                &[
                    "a",
                    "octet",
                    "blksize",
                    "7",
                    "timeout",
                    "0",
                    "windowsize",
                    "0",
                    "tsize",
                    "x",
                ],
                opts(
                    None,
                    None,
                    None,
                    None,
                    &["blksize=7", "timeout=0", "windowsize=0", "tsize=x"],
                ),
            ),
            (
                &["a", "octet", "blksize", "65465", "multicast", ""],
                opts(
                    None,
                    None,
                    None,
                    None,
                    &["blksize=65465", "multicast (no value)"],
                ),
            ),
            // The first of a repeated option counts.
            (
                &["a", "octet", "blksize", "1024", "blksize", "1468"],
                opts(Some(1024), None, None, None, &["blksize=1468"]),
            ),
        ];
        for (fields, want) in table {
            let bytes = rrq(fields);
            match Packet::parse(&bytes) {
                Ok(Packet::Rrq(r)) => {
                    assert_eq!(r.filename, fields[0]);
                    assert_eq!(&r.options, want, "{fields:?}");
                }
                other => panic!("{fields:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn trailing_padding_and_cut_options_do_not_refuse_a_request() {
        let mut b = rrq(&["undionly.kpxe", "octet", "tsize", "0"]);
        b.extend_from_slice(&[0, 0, 0]);
        let Ok(Packet::Rrq(r)) = Packet::parse(&b) else {
            panic!()
        };
        assert_eq!(r.options.tsize, Some(0));
        assert!(r.options.ignored.is_empty());

        let mut b = rrq(&["a", "netascii", "blksize", "1468"]);
        b.extend_from_slice(b"tsize");
        let Ok(Packet::Rrq(r)) = Packet::parse(&b) else {
            panic!()
        };
        assert_eq!((r.mode, r.options.blksize), (Mode::Netascii, Some(1468)));
        assert_eq!(r.options.ignored.len(), 1);
    }

    #[test]
    fn bad_bytes_are_errors_never_panics() {
        let cases: &[(&[u8], ParseError)] = &[
            (b"", ParseError::TooShort { len: 0 }),
            (b"\x00\x01a", ParseError::TooShort { len: 3 }),
            (b"\x00\x09abcd", ParseError::UnknownOpcode(9)),
            (b"\x00\x01abc", ParseError::Unterminated("filename")),
            (b"\x00\x01a\x00oct", ParseError::Unterminated("mode")),
            (b"\x00\x01\x00octet\x00", ParseError::EmptyFilename),
            (
                b"\x00\x01a\x00binary\x00",
                ParseError::UnknownMode("binary".into()),
            ),
            (
                b"\x00\x01\xff\xfe\x00octet\x00",
                ParseError::NotUtf8("filename"),
            ),
            (b"\x00\x04\x00\x01\x07", ParseError::BadAck(5)),
            (
                b"\x00\x06blksize\x00",
                ParseError::Unterminated("option value"),
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(Packet::parse(bytes).as_ref(), Err(want), "{bytes:?}");
        }
        // Every prefix of every kind of packet parses or errs.
        let samples = [
            rrq(&["a/b.efi", "octet", "blksize", "1468", "windowsize", "4"]),
            Packet::Ack(7).to_bytes(),
            Packet::Data {
                block: 3,
                data: b"xyz",
            }
            .to_bytes(),
            Packet::Error {
                code: ErrorCode::FileNotFound,
                message: "File not found".into(),
            }
            .to_bytes(),
            Packet::Oack(vec![("blksize".into(), "1468".into())]).to_bytes(),
        ];
        for s in &samples {
            for end in 0..=s.len() {
                let _ = Packet::parse(&s[..end]);
            }
        }
    }

    /// Found by the `tftp_packet` fuzz target (fuzz/regressions/tftp_packet/oack-no-options):
    /// `00 06 00 00` parsed as an OACK of nothing, which emits as two bytes that do not parse.
    #[test]
    fn an_oack_of_no_option_is_refused() {
        for bytes in [&b"\x00\x06\x00\x00"[..], b"\x00\x06\x00\x00\x00\x00"] {
            assert_eq!(
                Packet::parse(bytes),
                Err(ParseError::EmptyOack),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn packets_round_trip() {
        let packets = [
            Packet::Rrq(Request {
                filename: "x86_64/vmlinuz".into(),
                mode: Mode::Octet,
                options: Options {
                    blksize: Some(1468),
                    tsize: Some(0),
                    timeout: Some(1),
                    windowsize: Some(8),
                    ignored: vec![],
                },
            }),
            Packet::Wrq(Request {
                filename: "up".into(),
                mode: Mode::Netascii,
                options: Options::default(),
            }),
            Packet::Data {
                block: 65535,
                data: &[1, 2, 3],
            },
            Packet::Data {
                block: 0,
                data: &[],
            },
            Packet::Ack(0),
            Packet::Error {
                code: ErrorCode::OptionRefused,
                message: "no".into(),
            },
            Packet::Error {
                code: ErrorCode::Other(99),
                message: String::new(),
            },
            Packet::Oack(vec![
                ("blksize".into(), "968".into()),
                ("tsize".into(), "1048576".into()),
            ]),
        ];
        for p in &packets {
            let bytes = p.to_bytes();
            assert_eq!(&Packet::parse(&bytes).unwrap(), p);
        }
        assert_eq!(Packet::Ack(258).to_bytes(), [0, 4, 1, 2]);
        let mut h = [0u8; 4];
        put_data_header(&mut h, 513);
        assert_eq!(h, [0, 3, 2, 1]);
    }

    #[test]
    fn error_messages_are_cut_at_a_nul() {
        let mut out = Vec::new();
        emit_error(
            &mut out,
            ErrorCode::AccessViolation,
            "Permission denied\0junk",
        );
        assert_eq!(out, b"\x00\x05\x00\x02Permission denied\x00");
    }
}
