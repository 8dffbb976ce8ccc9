//! The RESP2 codec: commands in, replies out, and what happens to bytes that
//! are neither.

use proptest::prelude::*;
use vr_kv::resp::*;

fn parse(buf: &[u8]) -> Result<Option<Parsed>, RespError> {
    parse_command(buf, &Limits::default())
}

fn args(list: &[&str]) -> Vec<Vec<u8>> {
    list.iter().map(|a| a.as_bytes().to_vec()).collect()
}

/// The message a parse of `buf` fails with, as the client would see it.
fn error_of(buf: &[u8], limits: &Limits) -> String {
    match parse_command(buf, limits) {
        Err(e) => e.to_string(),
        other => panic!("expected an error for {buf:?}, got {other:?}"),
    }
}

#[test]
fn multibulk_command_parses() {
    let buf = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
    assert_eq!(parse(buf), Ok(Some((args(&["GET", "k"]), buf.len()))));
}

#[test]
fn bulk_strings_are_binary_safe() {
    let buf = b"*2\r\n$4\r\n\r\n\0\xff\r\n$0\r\n\r\n";
    assert_eq!(
        parse(buf),
        Ok(Some((vec![b"\r\n\0\xff".to_vec(), Vec::new()], buf.len())))
    );
}

#[test]
fn inline_command_parses_with_crlf_or_bare_lf() {
    assert_eq!(parse(b"PING\r\n"), Ok(Some((args(&["PING"]), 6))));
    assert_eq!(
        parse(b"SET  k\tv\n"),
        Ok(Some((args(&["SET", "k", "v"]), 9)))
    );
}

#[test]
fn inline_quotes_follow_redis() {
    let (got, _) = parse(b"SET \"a b\" 'c d'\r\n").unwrap().unwrap();
    assert_eq!(got, args(&["SET", "a b", "c d"]));
    let (got, _) = parse(b"ECHO \"\\x41\\n\\t\\\"q\\z\"\r\n").unwrap().unwrap();
    assert_eq!(got, vec![b"ECHO".to_vec(), b"A\n\t\"qz".to_vec()]);
    let (got, _) = parse(b"ECHO 'it\\'s \\n'\r\n").unwrap().unwrap();
    assert_eq!(got, vec![b"ECHO".to_vec(), b"it's \\n".to_vec()]);
    // An empty quoted argument is an argument.
    let (got, _) = parse(b"SET k \"\"\r\n").unwrap().unwrap();
    assert_eq!(got, args(&["SET", "k", ""]));
    // A quote inside a word opens a quoted part of the same argument,
    // which must end the argument (`a"b c"d` is unbalanced, below).
    let (got, _) = parse(b"ECHO a\"b c\" x\r\n").unwrap().unwrap();
    assert_eq!(got, args(&["ECHO", "ab c", "x"]));
}

#[test]
fn empty_commands_are_consumed_with_no_args() {
    // Redis reads and ignores these; the caller skips them.
    assert_eq!(parse(b"\r\n"), Ok(Some((vec![], 2))));
    assert_eq!(parse(b"   \n"), Ok(Some((vec![], 4))));
    assert_eq!(parse(b"*0\r\n"), Ok(Some((vec![], 4))));
    assert_eq!(parse(b"*-1\r\n"), Ok(Some((vec![], 5))));
}

#[test]
fn pipelined_commands_come_out_one_at_a_time() {
    let mut buf = Vec::new();
    encode_command(&["SET", "k", "v"], &mut buf);
    buf.extend_from_slice(b"PING\r\n");
    encode_command(&["GET", "k"], &mut buf);
    buf.extend_from_slice(b"ECHO \"x y\"\n");
    let mut rest = &buf[..];
    let mut got = Vec::new();
    while let Some((command, used)) = parse(rest).unwrap() {
        assert!(used > 0);
        got.push(command);
        rest = &rest[used..];
    }
    assert!(rest.is_empty());
    assert_eq!(
        got,
        vec![
            args(&["SET", "k", "v"]),
            args(&["PING"]),
            args(&["GET", "k"]),
            args(&["ECHO", "x y"]),
        ]
    );
}

#[test]
fn every_prefix_is_incomplete_then_the_whole_completes() {
    let mut multibulk = Vec::new();
    encode_command(&["SET", "key", "a value\r\n with CRLF", ""], &mut multibulk);
    let cases: [&[u8]; 4] = [
        &multibulk,
        b"SET k \"quoted value\"\r\n",
        b"*-1\r\n",
        b"*1\r\n$10\r\n0123456789\r\n",
    ];
    for buf in cases {
        for end in 0..buf.len() {
            assert_eq!(parse(&buf[..end]), Ok(None), "prefix {:?}", &buf[..end]);
        }
        let (_, used) = parse(buf).unwrap().expect("the whole command");
        assert_eq!(used, buf.len());
    }
}

#[test]
fn invalid_multibulk_length() {
    let want = "Protocol error: invalid multibulk length";
    let limits = Limits::default();
    for buf in [
        &b"*x\r\n"[..],
        b"*\r\n",
        b"*01\r\n",
        b"*+1\r\n",
        b"*1 \r\n",
        b"*2147483648\r\n",
        b"*99999999999999999999999\r\n",
    ] {
        assert_eq!(error_of(buf, &limits), want, "{buf:?}");
    }
    // Above args_max: a claim of a billion arguments is refused at once.
    assert_eq!(error_of(b"*1000000000\r\n", &limits), want);
    let small = Limits {
        args_max: 2,
        ..Limits::default()
    };
    assert_eq!(error_of(b"*3\r\n", &small), want);
    assert!(parse_command(b"*2\r\n", &small).unwrap().is_none());
}

#[test]
fn invalid_bulk_length() {
    let want = "Protocol error: invalid bulk length";
    let limits = Limits {
        bulk_bytes_max: 10,
        ..Limits::default()
    };
    for buf in [
        &b"*1\r\n$-1\r\n"[..],
        b"*1\r\n$x\r\n",
        b"*1\r\n$\r\n",
        b"*1\r\n$01\r\n",
        b"*1\r\n$11\r\n",
    ] {
        assert_eq!(error_of(buf, &limits), want, "{buf:?}");
    }
    assert!(parse_command(b"*1\r\n$10\r\n", &limits).unwrap().is_none());
}

#[test]
fn expected_dollar() {
    let limits = Limits::default();
    assert_eq!(
        error_of(b"*1\r\nx", &limits),
        "Protocol error: expected '$', got 'x'"
    );
    assert_eq!(
        error_of(b"*2\r\n$1\r\na\r\n:1\r\n", &limits),
        "Protocol error: expected '$', got ':'"
    );
    // What the client sees: Redis's "-ERR " prefix, on one line.
    let reply = RespError::ExpectedBulk(b'\n').reply().to_bytes();
    assert_eq!(reply, b"-ERR Protocol error: expected '$', got ' '\r\n");
}

#[test]
fn too_big_lines() {
    let limits = Limits {
        inline_bytes_max: 8,
        ..Limits::default()
    };
    // Eight bytes without a newline may still be a line; nine may not.
    assert!(parse_command(b"PING 123", &limits).unwrap().is_none());
    assert_eq!(
        error_of(b"PING 1234", &limits),
        "Protocol error: too big inline request"
    );
    assert!(parse_command(b"PING 123\n", &limits).unwrap().is_some());
    assert_eq!(
        error_of(b"*123456789", &limits),
        "Protocol error: too big mbulk count string"
    );
    assert_eq!(
        error_of(b"*1\r\n$123456789", &limits),
        "Protocol error: too big bulk count string"
    );
}

#[test]
fn unbalanced_quotes() {
    let want = "Protocol error: unbalanced quotes in request";
    let limits = Limits::default();
    for buf in [
        &b"SET k \"v\r\n"[..],
        b"SET k 'v\r\n",
        b"SET k \"v\"x\r\n",
        b"SET k 'v'x\r\n",
        b"ECHO a\"b c\"d\r\n",
    ] {
        assert_eq!(error_of(buf, &limits), want, "{buf:?}");
    }
}

#[test]
fn stricter_than_redis_about_line_ends() {
    let limits = Limits::default();
    assert_eq!(
        error_of(b"*1\rx", &limits),
        "Protocol error: expected '\\n' after '\\r'"
    );
    assert_eq!(
        error_of(b"*1\r\n$1\r\nab\r\n", &limits),
        "Protocol error: expected '\\r\\n' after bulk string"
    );
    assert_eq!(
        error_of(b"*1\r\n$1\r\na\rx", &limits),
        "Protocol error: expected '\\r\\n' after bulk string"
    );
    let few = Limits {
        args_max: 2,
        ..Limits::default()
    };
    assert_eq!(
        error_of(b"a b c\r\n", &few),
        "Protocol error: too many arguments in inline request"
    );
}

#[test]
fn huge_claims_wait_for_bytes_instead_of_reserving() {
    let unbounded = Limits {
        args_max: usize::MAX,
        bulk_bytes_max: usize::MAX,
        inline_bytes_max: 64 * 1024,
    };
    assert_eq!(parse_command(b"*1000000000\r\n", &unbounded), Ok(None));
    assert_eq!(
        parse_command(b"*2\r\n$9223372036854775807\r\nab", &unbounded),
        Ok(None)
    );
}

#[test]
fn replies_encode_as_redis_sends_them() {
    let cases: Vec<(Reply, &[u8])> = vec![
        (Reply::ok(), b"+OK\r\n"),
        (
            Reply::Error("ERR bad\r\nthing".into()),
            b"-ERR bad  thing\r\n",
        ),
        (Reply::Integer(-42), b":-42\r\n"),
        (Reply::Bulk(None), b"$-1\r\n"),
        (Reply::Bulk(Some(b"a\r\nb".to_vec())), b"$4\r\na\r\nb\r\n"),
        (Reply::Bulk(Some(vec![])), b"$0\r\n\r\n"),
        (Reply::Array(None), b"*-1\r\n"),
        (Reply::Array(Some(vec![])), b"*0\r\n"),
        (
            Reply::Array(Some(vec![
                Reply::Integer(1),
                Reply::Bulk(None),
                Reply::Array(Some(vec![Reply::Simple("x".into())])),
            ])),
            b"*3\r\n:1\r\n$-1\r\n*1\r\n+x\r\n",
        ),
    ];
    for (reply, want) in cases {
        assert_eq!(reply.to_bytes(), want, "{reply:?}");
    }
}

#[test]
fn an_array_of_bulk_replies_parses_back_as_a_command() {
    let command = args(&["MSET", "a", "1", "b", ""]);
    let reply = Reply::Array(Some(
        command
            .iter()
            .map(|a| Reply::Bulk(Some(a.clone())))
            .collect(),
    ));
    let bytes = reply.to_bytes();
    assert_eq!(parse(&bytes), Ok(Some((command, bytes.len()))));
}

#[test]
fn integers_follow_string2ll() {
    let cases: [(&[u8], Option<i64>); 14] = [
        (b"0", Some(0)),
        (b"-1", Some(-1)),
        (b"9223372036854775807", Some(i64::MAX)),
        (b"-9223372036854775808", Some(i64::MIN)),
        (b"9223372036854775808", None),
        (b"-9223372036854775809", None),
        (b"-0", None),
        (b"007", None),
        (b"+1", None),
        (b" 1", None),
        (b"1 ", None),
        (b"", None),
        (b"-", None),
        (b"1.5", None),
    ];
    for (text, want) in cases {
        assert_eq!(
            parse_integer(text),
            want,
            "{:?}",
            String::from_utf8_lossy(text)
        );
    }
}

/// One edit of a valid stream: the kinds of damage a buggy client or a torn
/// connection produce.
#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(buf: &mut Vec<u8>, m: &Mutation) {
    if buf.is_empty() {
        return;
    }
    match *m {
        Mutation::Flip(i, b) => {
            let i = i % buf.len();
            buf[i] ^= b;
        }
        Mutation::Insert(i, b) => buf.insert(i % (buf.len() + 1), b),
        Mutation::Remove(i) => {
            buf.remove(i % buf.len());
        }
        Mutation::Truncate(i) => buf.truncate(i % buf.len()),
    }
}

/// Parses commands off the front of `buf` until one is incomplete or an
/// error, checking what every answer promises.
fn drain(buf: &[u8], limits: &Limits) -> Result<usize, TestCaseError> {
    let mut rest = buf;
    let mut commands = 0;
    while let Ok(Some((command, used))) = parse_command(rest, limits) {
        prop_assert!(used > 0 && used <= rest.len());
        prop_assert!(command.len() <= limits.args_max);
        prop_assert!(command.iter().all(|a| a.len() <= used));
        rest = &rest[used..];
        commands += 1;
    }
    Ok(commands)
}

fn small_limits() -> impl Strategy<Value = Limits> {
    (1usize..8, 0usize..16, 1usize..32).prop_map(|(a, b, i)| Limits {
        args_max: a,
        bulk_bytes_max: b,
        inline_bytes_max: i,
    })
}

/// Fragments that make up RESP and inline commands, for byte strings that
/// get past the first checks more often than random bytes do.
const PIECES: [&[u8]; 16] = [
    b"*",
    b"$",
    b"\r\n",
    b"\r",
    b"\n",
    b"-1",
    b"0",
    b"1",
    b"2",
    b"99999999999",
    b"\"",
    b"'",
    b"\\x4",
    b" ",
    b"\0",
    b"ab",
];

proptest! {
    #[test]
    fn random_bytes_never_panic(
        buf in proptest::collection::vec(any::<u8>(), 0..256),
        limits in prop_oneof![Just(Limits::default()), small_limits()],
    ) {
        drain(&buf, &limits)?;
    }

    #[test]
    fn protocol_like_bytes_never_panic(
        parts in proptest::collection::vec(
            proptest::sample::select(PIECES.to_vec()),
            0..40,
        ),
        limits in prop_oneof![Just(Limits::default()), small_limits()],
    ) {
        drain(&parts.concat(), &limits)?;
    }

    #[test]
    fn mutated_commands_never_panic(
        commands in proptest::collection::vec(
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 1..5),
            1..4,
        ),
        mutations in proptest::collection::vec(mutation(), 1..6),
        limits in prop_oneof![Just(Limits::default()), small_limits()],
    ) {
        let mut buf = Vec::new();
        for command in &commands {
            encode_command(command, &mut buf);
        }
        for m in &mutations {
            apply(&mut buf, m);
        }
        drain(&buf, &limits)?;
    }

    #[test]
    fn encoded_commands_round_trip(
        commands in proptest::collection::vec(
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..6),
            1..5,
        ),
    ) {
        let mut buf = Vec::new();
        for command in &commands {
            encode_command(command, &mut buf);
        }
        let mut rest = &buf[..];
        for command in &commands {
            let (got, used) = parse(rest).unwrap().expect("complete");
            prop_assert_eq!(&got, command);
            rest = &rest[used..];
        }
        prop_assert!(rest.is_empty());
    }

    #[test]
    fn split_anywhere_parses_the_same(
        command in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 1..5),
        cut in any::<usize>(),
    ) {
        let mut buf = Vec::new();
        encode_command(&command, &mut buf);
        let cut = cut % buf.len();
        prop_assert_eq!(parse(&buf[..cut]), Ok(None));
        prop_assert_eq!(parse(&buf), Ok(Some((command, buf.len()))));
    }
}
