//! Jepsen logs of one compare-and-set register ([`Format::JepsenEtcd`]).
//!
//! [`Format::JepsenEtcd`]: super::Format::JepsenEtcd

use super::edn::{edn_event, read_edn};
use super::{Event, EventKind, Function, ParseErrorKind, JEPSEN_KEY};

pub(super) fn parse_jepsen_line(line: &str, time: u64) -> Result<Option<Event>, ParseErrorKind> {
    let Some(rest) = after_mark(line) else {
        return Ok(None);
    };
    // Jepsen separates the fields by a tab or by a run of spaces (both occur
    // in published logs, as does padding before the first field), so any
    // run of whitespace separates them. The value is the rest of the line: it
    // may itself contain spaces (`[3 0]`).
    let (process, rest) = next_field(rest);
    if !process.starts_with(|c: char| c.is_ascii_digit()) {
        return Ok(None); // :nemesis and other non-client lines
    }
    let process: u64 = process.parse().map_err(|_| ParseErrorKind::InvalidField {
        field: "process",
        reason: format!("{process:?} is not an integer in 0..=2^64-1"),
    })?;
    let (kind, rest) = next_field(rest);
    let (f, value) = next_field(rest);
    if kind.is_empty() || f.is_empty() || value.trim().is_empty() {
        return Err(ParseErrorKind::Syntax(
            "expected P :TYPE :F VALUE (separated by tabs or spaces) after \"jepsen.util - \""
                .into(),
        ));
    }
    let kind = match kind.trim().strip_prefix(':').and_then(EventKind::from_name) {
        Some(k) => k,
        None => return Err(ParseErrorKind::UnknownType(kind.trim().to_string())),
    };
    let f = match f.trim() {
        ":read" => Function::Read,
        ":write" => Function::Write,
        ":cas" => Function::Cas,
        other => return Err(ParseErrorKind::UnknownFunction(other.to_string())),
    };
    let value = read_edn(value.trim())?;
    edn_event(process, kind, f, JEPSEN_KEY.to_string(), &value, time).map(Some)
}

/// The text after `jepsen.util - ` (any run of whitespace around the dash),
/// or `None` if the line has no such mark.
fn after_mark(line: &str) -> Option<&str> {
    const MARK: &str = "jepsen.util";
    let at = line.find(MARK)?;
    let rest = &line[at + MARK.len()..];
    let dash = rest.trim_start();
    if dash.len() == rest.len() {
        return None; // `jepsen.utilx`: not the mark
    }
    let fields = dash.strip_prefix('-')?;
    let trimmed = fields.trim_start();
    (trimmed.len() < fields.len()).then_some(trimmed)
}

/// The first whitespace-delimited field of `text` (after leading
/// whitespace), and the text after the run of whitespace that ends it.
fn next_field(text: &str) -> (&str, &str) {
    let text = text.trim_start();
    match text.find(char::is_whitespace) {
        Some(end) => (&text[..end], text[end..].trim_start()),
        None => (text, ""),
    }
}

#[cfg(test)]
mod tests {
    use crate::history::tests::err;
    use crate::history::{parse, Format, Input, Outcome, Output, JEPSEN_KEY};

    #[test]
    fn jepsen_lines() {
        let text = "\
2017-01-01 INFO  jepsen.core - Running test
INFO  jepsen.util - 0\t:invoke\t:read\tnil
INFO  jepsen.util - :nemesis\t:info\t:start\tnil
INFO  jepsen.util - 1\t:invoke\t:cas\t[3 0]
INFO  jepsen.util - 0\t:fail\t:read\t:timed-out
INFO  jepsen.util - 1\t:fail\t:cas\t[3 0]
INFO  jepsen.util - 2\t:invoke\t:write\t4
INFO  jepsen.util - 2\t:info\t:write\t:timed-out
INFO  jepsen.util - 3\t:invoke\t:read\tnil
INFO  jepsen.util - 3\t:ok\t:read\t4
INFO  jepsen.util - 4\t:invoke\t:cas\t[nil 1]
INFO  jepsen.util - 4\t:ok\t:cas\t[nil 1]
INFO  jepsen.util - 5\t:invoke\t:write\t1
";
        let h = parse(Format::JepsenEtcd, text).unwrap();
        let ops = h.operations();
        assert_eq!(ops.len(), 6);
        assert_eq!(ops[0].input, Input::Read);
        assert_eq!(ops[0].outcome, Outcome::Unknown);
        assert_eq!(ops[0].call_line, 2);
        assert_eq!(
            ops[1].input,
            Input::Cas {
                from: Some("3".into()),
                to: Some("0".into())
            }
        );
        assert_eq!(ops[1].output(), Some(&Output::Cas { swapped: false }));
        assert_eq!(ops[2].input, Input::Write("4".into()));
        assert_eq!(ops[2].outcome, Outcome::Unknown);
        assert_eq!(ops[3].output(), Some(&Output::Read(Some("4".into()))));
        assert_eq!(ops[4].output(), Some(&Output::Cas { swapped: true }));
        assert_eq!(ops[5].outcome, Outcome::Unknown);
        assert!(ops.iter().all(|o| o.key == JEPSEN_KEY));
        assert_eq!(h.initial_value(), None);
    }

    /// Jepsen also writes the fields separated by runs of spaces (issue 17,
    /// item 7): the line of the issue, and a log mixing tabs and spaces, read
    /// exactly as the same log with single tabs.
    #[test]
    fn jepsen_fields_separated_by_any_whitespace() {
        let h = parse(
            Format::JepsenEtcd,
            "INFO  jepsen.util - 1   :invoke :write  3\n",
        )
        .unwrap();
        let ops = h.operations();
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].input, Input::Write("3".into()));
        assert_eq!(ops[0].outcome, Outcome::Unknown);

        let tabs = "\
INFO  jepsen.util - 0\t:invoke\t:read\tnil
INFO  jepsen.util - :nemesis\t:info\t:start\tnil
INFO  jepsen.util - 1\t:invoke\t:cas\t[3 0]
INFO  jepsen.util - 0\t:ok\t:read\tnil
INFO  jepsen.util - 1\t:fail\t:cas\t[3 0]
INFO  jepsen.util - 2\t:invoke\t:write\t4
INFO  jepsen.util - 2\t:ok\t:write\t4
INFO  jepsen.util - 3\t:invoke\t:cas\t[4 1]
INFO  jepsen.util - 3\t:ok\t:cas\t[4 1]
INFO  jepsen.util - 4\t:invoke\t:read\tnil
INFO  jepsen.util - 4\t:info\t:read\t:timed-out
";
        let spaces = "\
INFO  jepsen.util -  0      :invoke :read   nil
INFO  jepsen.util - :nemesis :info  :start  nil
INFO  jepsen.util - 1\t :invoke  :cas   [3 0]
INFO  jepsen.util   -   0 :ok :read nil
INFO  jepsen.util - 1   :fail\t:cas\t\t[3   0]
INFO  jepsen.util - 2   :invoke :write  4
INFO  jepsen.util - 2   :ok     :write  4  
INFO  jepsen.util - 3 \t:invoke :cas   [4 1]
INFO  jepsen.util - 3   :ok     :cas    [4 1]
INFO  jepsen.util - 4   :invoke :read   nil
INFO  jepsen.util - 4   :info   :read   :timed-out
";
        let want = parse(Format::JepsenEtcd, tabs).unwrap();
        assert_eq!(want.operations().len(), 5);
        assert_eq!(parse(Format::JepsenEtcd, spaces).unwrap(), want);
    }

    #[test]
    fn jepsen_malformed_lines() {
        let cases = [
            ("INFO  jepsen.util - 0\t:invoke\t:read", 1, "syntax error"),
            (
                "x\nINFO  jepsen.util - 0\t:start\t:read\tnil",
                2,
                "unknown event type \":start\"",
            ),
            (
                "INFO  jepsen.util - 0\t:invoke\t:add\t1",
                1,
                "unknown operation \":add\"",
            ),
            (
                "INFO  jepsen.util - 0\t:invoke\t:write\t[1",
                1,
                "syntax error",
            ),
            (
                "INFO  jepsen.util - 0\t:invoke\t:write\t1 2",
                1,
                "trailing characters",
            ),
            (
                "INFO  jepsen.util - 0\t:invoke\t:write\t:x",
                1,
                "keyword is only allowed",
            ),
            (
                "INFO  jepsen.util - 0\t:invoke\t:cas\t[1 2 3]",
                1,
                "invalid value",
            ),
            (
                "INFO  jepsen.util - 0\t:invoke\t:cas\t5",
                1,
                "a cas is invoked",
            ),
            (
                "INFO  jepsen.util - 0x\t:invoke\t:read\tnil",
                1,
                "invalid process",
            ),
            (
                "INFO  jepsen.util - 0\t:invoke\t:write\t99999999999999999999",
                1,
                "bad integer",
            ),
            (
                "INFO  jepsen.util - 0\t:ok\t:read\tnil",
                1,
                "no operation outstanding",
            ),
            (
                "INFO  jepsen.util - 0   :invoke  :read  ",
                1,
                "syntax error",
            ),
            (
                "INFO  jepsen.util - 0x  :invoke  :read  nil",
                1,
                "invalid process",
            ),
            (
                "INFO  jepsen.util - 0  :invoke  :write  1 2",
                1,
                "trailing characters",
            ),
        ];
        for (text, line, needle) in cases {
            let e = err(Format::JepsenEtcd, text);
            assert_eq!(e.line, line, "{text}: {e}");
            assert!(
                e.to_string().contains(needle),
                "{text}: {e} lacks {needle:?}"
            );
        }
    }
}
