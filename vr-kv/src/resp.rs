//! RESP2, the Redis serialization protocol: an incremental parser for client
//! commands and an encoder for replies.
//!
//! The parser is a pure function of the bytes received so far: it holds no
//! state between calls, so a connection keeps one receive buffer, calls
//! [`parse_command`] on its front, and drops the bytes used when a command
//! comes out. It accepts what a Redis server accepts from clients:
//!
//! - a RESP array of bulk strings, `*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`, as
//!   client libraries and `redis-cli` send;
//! - an inline command, one line split on spaces with Redis's quoting rules
//!   (`SET k "a b"`), as typed into `telnet` or `nc`.
//!
//! Every size is bounded by [`Limits`] before anything is allocated: a header
//! that announces a billion arguments is rejected, and a valid but incomplete
//! command allocates nothing until all of its bytes are in the buffer.
//!
//! Error messages are Redis's own (`networking.c`) where Redis has one. This
//! parser also checks three things Redis does not (the line ends after a
//! header and after a bulk string, and the argument count of an inline
//! command); their messages, marked "Ours" below, are our own.

use core::fmt;

/// Bounds on what [`parse_command`] accepts from one client.
///
/// The total size of one command is bounded by `args_max` times
/// `bulk_bytes_max`, which is far more than a connection should buffer: the
/// caller bounds its receive buffer as well, and closes a connection whose
/// buffer is full without a complete command in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most arguments in one command (the `N` of `*N`). Redis allows
    /// `i32::MAX`; a million is more than any real command needs.
    pub args_max: usize,
    /// Longest bulk string (one argument), in bytes. Redis's
    /// `proto-max-bulk-len` is 512 MiB.
    pub bulk_bytes_max: usize,
    /// Longest inline command line, and longest `*N` / `$N` header line, in
    /// bytes, as Redis's `PROTO_INLINE_MAX_SIZE`.
    pub inline_bytes_max: usize,
}

impl Default for Limits {
    /// A million arguments, 16 MiB per bulk string, 64 KiB per inline line.
    ///
    /// Why 16 MiB and not Redis's 512 MiB: the parser waits for a whole bulk
    /// string in the connection's buffer, so this is the memory one client
    /// can make a server hold for a single argument, and every write is then
    /// copied into the replicated log on every replica. Nothing that large
    /// can be replicated anyway: `vr_core::Config::op_size_max` (64 KiB by
    /// default) bounds a whole operation, so a server should lower
    /// `bulk_bytes_max` to fit its `op_size_max`. 16 MiB is the codec's own
    /// default, with room for deployments that raise `op_size_max`.
    fn default() -> Self {
        Limits {
            args_max: 1024 * 1024,
            bulk_bytes_max: 16 * 1024 * 1024,
            inline_bytes_max: 64 * 1024,
        }
    }
}

/// Why the bytes from a client are not a command. The connection cannot be
/// resynchronised after one: reply with [`RespError::reply`] and close it,
/// as Redis does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RespError {
    /// A protocol error with a fixed message: one of the `PROTOCOL_*`
    /// constants in this module.
    Protocol(&'static str),
    /// An array element is not a bulk string: Redis's
    /// `Protocol error: expected '$', got '%c'` with the offending byte.
    ExpectedBulk(u8),
}

/// `*N` with `N` not an integer, above `i32::MAX`, or above
/// [`Limits::args_max`] (Redis's message).
pub const PROTOCOL_INVALID_MULTIBULK_LENGTH: &str = "Protocol error: invalid multibulk length";
/// `$N` with `N` not an integer, negative, or above
/// [`Limits::bulk_bytes_max`] (Redis's message).
pub const PROTOCOL_INVALID_BULK_LENGTH: &str = "Protocol error: invalid bulk length";
/// An inline line longer than [`Limits::inline_bytes_max`] (Redis's message).
pub const PROTOCOL_TOO_BIG_INLINE: &str = "Protocol error: too big inline request";
/// A `*N` line longer than [`Limits::inline_bytes_max`] (Redis's message).
pub const PROTOCOL_TOO_BIG_MULTIBULK_COUNT: &str = "Protocol error: too big mbulk count string";
/// A `$N` line longer than [`Limits::inline_bytes_max`] (Redis's message).
pub const PROTOCOL_TOO_BIG_BULK_COUNT: &str = "Protocol error: too big bulk count string";
/// An inline line with an unterminated quote, or a closing quote followed by
/// something other than a space (Redis's message).
pub const PROTOCOL_UNBALANCED_QUOTES: &str = "Protocol error: unbalanced quotes in request";
/// Ours, not Redis's: a `*N` or `$N` line whose `\r` is not followed by
/// `\n`. Redis skips the byte unchecked; a parser that guesses here goes on
/// to read garbage as commands.
pub const PROTOCOL_EXPECTED_LF: &str = "Protocol error: expected '\\n' after '\\r'";
/// Ours, not Redis's: a bulk string not followed by `\r\n`. Redis skips the
/// two bytes unchecked (see [`PROTOCOL_EXPECTED_LF`] for why we do not).
pub const PROTOCOL_EXPECTED_CRLF: &str = "Protocol error: expected '\\r\\n' after bulk string";
/// Ours, not Redis's: an inline line with more than [`Limits::args_max`]
/// arguments (Redis has no such bound on inline commands).
pub const PROTOCOL_TOO_MANY_INLINE_ARGS: &str =
    "Protocol error: too many arguments in inline request";

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespError::Protocol(message) => f.write_str(message),
            // Redis prints the raw byte with %c; a byte that is not ASCII
            // shows here as the Latin-1 character of the same value.
            RespError::ExpectedBulk(byte) => {
                write!(
                    f,
                    "Protocol error: expected '$', got '{}'",
                    char::from(*byte)
                )
            }
        }
    }
}

impl std::error::Error for RespError {}

impl RespError {
    /// The error reply Redis sends before closing the connection:
    /// `-ERR Protocol error: ...`.
    pub fn reply(&self) -> Reply {
        Reply::Error(format!("ERR {self}"))
    }
}

/// One complete command: its arguments (the command name first) and the
/// number of bytes it used from the front of the buffer.
pub type Parsed = (Vec<Vec<u8>>, usize);

/// Parses one command from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of a command (read more and
/// call again with the longer buffer), `Ok(Some((args, used)))` when a whole
/// command is there (drop `used` bytes and call again: clients pipeline).
///
/// `args` is empty for a blank inline line, `*0` and `*-1`: Redis reads and
/// ignores these, so the caller consumes `used` bytes and executes nothing.
///
/// Cost: no argument is copied until the whole command is present, and bulk
/// contents are skipped by length, never scanned, so calling again on a
/// growing buffer costs time in the number of arguments, not in bytes.
pub fn parse_command(buf: &[u8], limits: &Limits) -> Result<Option<Parsed>, RespError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buf, limits),
        Some(_) => parse_inline(buf, limits),
    }
}

fn parse_multibulk(buf: &[u8], limits: &Limits) -> Result<Option<Parsed>, RespError> {
    let Some((digits, start)) = header_line(buf, 0, limits, PROTOCOL_TOO_BIG_MULTIBULK_COUNT)?
    else {
        return Ok(None);
    };
    let count = match parse_integer(digits) {
        Some(n) if n <= i64::from(i32::MAX) => n,
        _ => return Err(RespError::Protocol(PROTOCOL_INVALID_MULTIBULK_LENGTH)),
    };
    if count <= 0 {
        return Ok(Some((Vec::new(), start)));
    }
    // Bound the count before reading on: it is a claim, not yet bytes.
    let count = usize::try_from(count)
        .ok()
        .filter(|&n| n <= limits.args_max)
        .ok_or(RespError::Protocol(PROTOCOL_INVALID_MULTIBULK_LENGTH))?;

    // First pass: check that every argument is complete and well formed,
    // without copying, so an incomplete command costs no allocation.
    let mut end = start;
    for _ in 0..count {
        match bulk_span(buf, end, limits)? {
            Some((_, next)) => end = next,
            None => return Ok(None),
        }
    }
    // Second pass: copy. Each argument took at least 6 bytes ("$0\r\n\r\n")
    // of a buffer we hold, so the capacity is justified by the input.
    let mut args = Vec::with_capacity(count);
    let mut at = start;
    for _ in 0..count {
        let (data, next) = bulk_span(buf, at, limits)
            .ok()
            .flatten()
            .expect("the first pass accepted this argument on the same bytes");
        args.push(buf[data].to_vec());
        at = next;
    }
    debug_assert_eq!(at, end, "both passes walk the same arguments");
    Ok(Some((args, end)))
}

/// Finds the `\r\n` that ends the header line starting at `start` (at its
/// `*` or `$`). Returns the bytes between the type byte and `\r`, and the
/// position after `\n`.
fn header_line<'a>(
    buf: &'a [u8],
    start: usize,
    limits: &Limits,
    too_big: &'static str,
) -> Result<Option<(&'a [u8], usize)>, RespError> {
    debug_assert!(start < buf.len(), "a header line starts at a byte we hold");
    // Look no further than the limit, so a flood without `\r` is cut short.
    let window_end = buf.len().min(
        start
            .saturating_add(limits.inline_bytes_max)
            .saturating_add(1),
    );
    let Some(offset) = buf[start..window_end].iter().position(|&b| b == b'\r') else {
        return if buf.len() - start > limits.inline_bytes_max {
            Err(RespError::Protocol(too_big))
        } else {
            Ok(None)
        };
    };
    let cr = start + offset;
    match buf.get(cr + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((&buf[start + 1..cr], cr + 2))),
        Some(_) => Err(RespError::Protocol(PROTOCOL_EXPECTED_LF)),
    }
}

/// Reads the bulk string at `at`: the range of its contents and the
/// position after its trailing `\r\n`.
fn bulk_span(
    buf: &[u8],
    at: usize,
    limits: &Limits,
) -> Result<Option<(core::ops::Range<usize>, usize)>, RespError> {
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    // Redis waits for the whole line before looking at this byte; failing
    // at once gives the same error sooner.
    if kind != b'$' {
        return Err(RespError::ExpectedBulk(kind));
    }
    let Some((digits, data_start)) = header_line(buf, at, limits, PROTOCOL_TOO_BIG_BULK_COUNT)?
    else {
        return Ok(None);
    };
    let len = parse_integer(digits)
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n <= limits.bulk_bytes_max)
        .ok_or(RespError::Protocol(PROTOCOL_INVALID_BULK_LENGTH))?;
    // `data_start <= buf.len()`, so this overflows only for a limit near
    // usize::MAX; then the bulk cannot be in memory and is "incomplete".
    let Some(data_end) = data_start.checked_add(len) else {
        return Ok(None);
    };
    match buf.get(data_end..data_end.saturating_add(2)) {
        Some(b"\r\n") => Ok(Some((data_start..data_end, data_end + 2))),
        Some(_) => Err(RespError::Protocol(PROTOCOL_EXPECTED_CRLF)),
        None if buf.len() > data_end && buf[data_end] != b'\r' => {
            Err(RespError::Protocol(PROTOCOL_EXPECTED_CRLF))
        }
        None => Ok(None),
    }
}

fn parse_inline(buf: &[u8], limits: &Limits) -> Result<Option<Parsed>, RespError> {
    let window_end = buf.len().min(limits.inline_bytes_max.saturating_add(1));
    let Some(lf) = buf[..window_end].iter().position(|&b| b == b'\n') else {
        return if buf.len() > limits.inline_bytes_max {
            Err(RespError::Protocol(PROTOCOL_TOO_BIG_INLINE))
        } else {
            Ok(None)
        };
    };
    // Like Redis, a bare `\n` ends the line too, and a `\r` before it goes.
    let line = buf[..lf].strip_suffix(b"\r").unwrap_or(&buf[..lf]);
    let args = split_args(line).ok_or(RespError::Protocol(PROTOCOL_UNBALANCED_QUOTES))?;
    if args.len() > limits.args_max {
        return Err(RespError::Protocol(PROTOCOL_TOO_MANY_INLINE_ARGS));
    }
    Ok(Some((args, lf + 1)))
}

/// Splits an inline line into arguments exactly as Redis's `sdssplitargs`
/// does: blanks separate arguments; `"..."` takes the escapes `\n \r \t \b
/// \a \xHH` and `\<any>`; `'...'` takes only `\'`; a closing quote must be
/// followed by a blank or the end. Returns `None` for unbalanced quotes.
fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    // Redis works on a C string: a NUL byte ends the line.
    let line = match line.iter().position(|&b| b == 0) {
        Some(nul) => &line[..nul],
        None => line,
    };
    // 0 stands for "end of line", as the terminating NUL does in C.
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let mut args = Vec::new();
    let mut p = 0;
    loop {
        while p < line.len() && is_c_space(line[p]) {
            p += 1;
        }
        if p >= line.len() {
            return Some(args);
        }
        let mut current = Vec::new();
        // The quote the argument is inside, if any.
        let mut quote: Option<u8> = None;
        let mut done = false;
        while !done {
            let c = at(p);
            match quote {
                Some(q) => {
                    let double = q == b'"';
                    if double
                        && c == b'\\'
                        && at(p + 1) == b'x'
                        && is_hex(at(p + 2))
                        && is_hex(at(p + 3))
                    {
                        current.push(hex_value(at(p + 2)) * 16 + hex_value(at(p + 3)));
                        p += 3;
                    } else if double && c == b'\\' && at(p + 1) != 0 {
                        p += 1;
                        current.push(match at(p) {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                    } else if !double && c == b'\\' && at(p + 1) == b'\'' {
                        p += 1;
                        current.push(b'\'');
                    } else if c == q {
                        // A closing quote must end the argument.
                        if at(p + 1) != 0 && !is_c_space(at(p + 1)) {
                            return None;
                        }
                        done = true;
                    } else if c == 0 {
                        // The line ended inside the quotes.
                        return None;
                    } else {
                        current.push(c);
                    }
                }
                None => match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => done = true,
                    b'"' | b'\'' => quote = Some(c),
                    _ => current.push(c),
                },
            }
            if at(p) != 0 {
                p += 1;
            }
        }
        args.push(current);
    }
}

/// C's `isspace` in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => unreachable!("called only after is_hex"),
    }
}

/// Parses a signed 64-bit integer exactly as Redis's `string2ll` does, the
/// test behind every "is this an integer" in Redis: optional `-`, then
/// digits, no leading zeros (`"0"` alone is fine, `"-0"` and `"007"` are
/// not), no `+`, no spaces, at most 20 bytes, within `i64`.
pub fn parse_integer(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if !matches!(digits.first(), Some(b'1'..=b'9')) {
        return None;
    }
    let mut value: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    let value = i128::from(value);
    i64::try_from(if negative { -value } else { value }).ok()
}

/// A reply to a client, in RESP2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`: a status line.
    Simple(String),
    /// `-ERR message`: the text includes its code (`ERR`, `WRONGTYPE`, ...).
    Error(String),
    /// `:42`.
    Integer(i64),
    /// `$3\r\nabc`, or `$-1` (nil) for `None`.
    Bulk(Option<Vec<u8>>),
    /// `*2\r\n...`, or `*-1` (nil) for `None`.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// `+OK`.
    pub fn ok() -> Reply {
        Reply::Simple("OK".to_owned())
    }

    /// Appends the RESP2 encoding of this reply to `out`.
    ///
    /// A `\r` or `\n` inside a simple string or an error becomes a space, as
    /// in Redis's `addReplyErrorFormat`: error texts quote client input
    /// (`unknown command 'a\r\nb'`), and a raw line break there would end
    /// the line early and desynchronise the client.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Simple(text) => encode_line(b'+', text, out),
            Reply::Error(text) => encode_line(b'-', text, out),
            Reply::Integer(n) => {
                out.push(b':');
                out.extend_from_slice(n.to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
            Reply::Bulk(Some(bytes)) => encode_bulk(bytes, out),
            Reply::Array(None) => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(Some(items)) => {
                out.push(b'*');
                out.extend_from_slice(items.len().to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
                for item in items {
                    item.encode(out);
                }
            }
        }
    }

    /// The RESP2 encoding of this reply.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

fn encode_line(kind: u8, text: &str, out: &mut Vec<u8>) {
    out.push(kind);
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

fn encode_bulk(bytes: &[u8], out: &mut Vec<u8>) {
    out.push(b'$');
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// Appends `args` as a client sends a command: a RESP array of bulk
/// strings, which [`parse_command`] reads back.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A], out: &mut Vec<u8>) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        encode_bulk(arg.as_ref(), out);
    }
}
