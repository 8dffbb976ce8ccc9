//! Jepsen logs of one compare-and-set register ([`Format::JepsenEtcd`]).
//!
//! [`Format::JepsenEtcd`]: super::Format::JepsenEtcd

use super::edn::{edn_event, read_edn};
use super::{Event, EventKind, Function, ParseErrorKind, JEPSEN_KEY};

pub(super) fn parse_jepsen_line(line: &str, time: u64) -> Result<Option<Event>, ParseErrorKind> {
    const MARK: &str = "jepsen.util - ";
    let Some(at) = line.find(MARK) else {
        return Ok(None);
    };
    let rest = &line[at + MARK.len()..];
    let mut fields = rest.splitn(4, '\t');
    let process = fields.next().unwrap_or("").trim();
    if !process.starts_with(|c: char| c.is_ascii_digit()) {
        return Ok(None); // :nemesis and other non-client lines
    }
    let process: u64 = process.parse().map_err(|_| ParseErrorKind::InvalidField {
        field: "process",
        reason: format!("{process:?} is not an integer in 0..=2^64-1"),
    })?;
    let (Some(kind), Some(f), Some(value)) = (fields.next(), fields.next(), fields.next()) else {
        return Err(ParseErrorKind::Syntax(
            "expected P<TAB>:TYPE<TAB>:F<TAB>VALUE after \"jepsen.util - \"".into(),
        ));
    };
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
