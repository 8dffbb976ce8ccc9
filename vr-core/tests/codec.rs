//! Wire codec tests: round trips, the error taxonomy of `decode` (one test
//! per variant, plus the order of checks), and property tests that feed the
//! decoder arbitrary and mutated frames.

use proptest::collection::vec;
use proptest::prelude::*;

use vr_core::codec::{
    decode, encode, encoded_size, peek_header, DecodeError, Header, HEADER_SIZE,
    LOG_ENTRY_FIXED_SIZE, MAGIC, VERSION,
};
use vr_core::message::{
    CheckpointPages, CheckpointSummary, CheckpointTree, Command, Commit, CrashVector, DoViewChange,
    GetCheckpointPages, GetCheckpointTree, GetState, LogEntry, Message, NewState, PageChunk,
    Prepare, PrepareOk, ReadRequest, Recovery, RecoveryResponse, RecoveryStatus, Reply, Request,
    StartView, StartViewChange,
};

const CLUSTER: u64 = 0x0123_4567_89ab_cdef;
const MAX: usize = 1 << 20;

// Header offsets, restated from the format table so that a change to the
// codec's layout breaks these tests.
const SIZE_FIELD: core::ops::Range<usize> = 4..8;
const CLUSTER_FIELD: core::ops::Range<usize> = 8..16;
const VIEW_FIELD: core::ops::Range<usize> = 16..24;
const EPOCH_FIELD: core::ops::Range<usize> = 24..28;
const CHECKSUM_FIELD: core::ops::Range<usize> = 28..32;

fn frame(message: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    encode(message, CLUSTER, &mut out);
    out
}

/// Recomputes the checksum of a frame edited by a test, so that decoding
/// reaches the checks after the checksum.
fn reseal(frame: &mut [u8]) {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&frame[..CHECKSUM_FIELD.start]);
    hasher.update(&frame[HEADER_SIZE..]);
    let sum = hasher.finalize();
    frame[CHECKSUM_FIELD].copy_from_slice(&sum.to_le_bytes());
}

/// Rewrites the body of a frame (fixing the size field and the checksum).
fn with_body(mut frame: Vec<u8>, body: &[u8]) -> Vec<u8> {
    frame.truncate(HEADER_SIZE);
    frame.extend_from_slice(body);
    let size = u32::try_from(body.len()).unwrap();
    frame[SIZE_FIELD].copy_from_slice(&size.to_le_bytes());
    reseal(&mut frame);
    frame
}

fn assert_round_trip(message: &Message) {
    let bytes = frame(message);
    assert_eq!(bytes.len(), encoded_size(message), "{message:?}");
    assert_eq!(
        decode(&bytes, CLUSTER, MAX),
        Ok((message.clone(), bytes.len()))
    );
}

fn entry(op_number: u64, op: &[u8]) -> LogEntry {
    LogEntry {
        op_number,
        view: 3,
        client_id: 0xdead_beef_0000_0000_0000_0000_cafe_f00d,
        request_number: op_number * 10,
        op: op.to_vec(),
        kind: Default::default(),
    }
}

/// At least one hand-written instance of every variant, with empty and
/// non-empty ops and logs and extreme integers.
fn samples() -> Vec<Message> {
    let log = vec![entry(5, b"set x 1"), entry(6, b""), entry(7, &[0xff; 300])];
    vec![
        Message::Request(Request {
            client_id: 1,
            request_number: 1,
            op: vec![],
        }),
        Message::Request(Request {
            client_id: u128::MAX,
            request_number: u64::MAX,
            op: b"increment".to_vec(),
        }),
        Message::Prepare(Prepare {
            view: 3,
            commit_number: 4,
            timestamp_ns: 123,
            full_commit_min: 0,
            entries: vec![entry(5, b"set x 1")],
        }),
        Message::Prepare(Prepare {
            view: u64::MAX,
            commit_number: 0,
            timestamp_ns: u64::MAX,
            full_commit_min: 0,
            entries: vec![entry(1, b""), entry(2, b"two"), entry(3, &[0; 100])],
        }),
        Message::PrepareOk(PrepareOk {
            view: 3,
            op_number: 5,
            replica: vr_core::ReplicaIndex(2),
            timestamp_ns: 122,
            commit_number: 0,
            crash_vector: [0, 3, u64::MAX].into_iter().collect(),
        }),
        Message::Commit(Commit {
            view: 3,
            commit_number: 5,
            op_number: 7,
            timestamp_ns: 0,
            full_commit_min: 2,
        }),
        Message::Reply(Reply {
            view: 3,
            client_id: 42,
            request_number: 9,
            op_number: 77,
            result: b"ok".to_vec(),
        }),
        Message::Reply(Reply {
            view: 0,
            client_id: 0,
            request_number: 0,
            op_number: 0,
            result: vec![],
        }),
        Message::Reconfiguration(vr_core::message::Reconfiguration {
            client_id: 77,
            request_number: 3,
            epoch: 2,
            members: vec![
                vr_core::MemberId(0),
                vr_core::MemberId(1),
                vr_core::MemberId(5),
            ],
            addresses: vec![b"10.0.0.1:7000".to_vec(), vec![], b"x".to_vec()],
        }),
        Message::StartEpoch(vr_core::message::StartEpoch {
            view: 4,
            epoch: 3,
            op_number: 900,
            entry_view: 12,
            members: vec![
                vr_core::MemberId(0),
                vr_core::MemberId(1),
                vr_core::MemberId(5),
            ],
            addresses: vec![],
            sender: vr_core::MemberId(1),
        }),
        Message::EpochStarted(vr_core::message::EpochStarted {
            epoch: 3,
            member: vr_core::MemberId(5),
        }),
        Message::ReadRequest(ReadRequest {
            client_id: 5,
            request_number: 3,
            op_number_min: 1000,
            op: b"get x".to_vec(),
        }),
        Message::StartViewChange(StartViewChange {
            view: 4,
            promised_view: 3,
            replica: vr_core::ReplicaIndex(u8::MAX),
            crash_vector: CrashVector::new(),
        }),
        Message::DoViewChange(DoViewChange {
            view: 4,
            last_normal_view: 3,
            op_number: 7,
            commit_number: 4,
            log: log.clone(),
            replica: vr_core::ReplicaIndex(1),
            crash_vector: [1, 2, 3, 4, 5, 6, 7, 8, 9].into_iter().collect(),
        }),
        Message::DoViewChange(DoViewChange {
            view: 4,
            last_normal_view: 3,
            op_number: 4,
            commit_number: 4,
            log: vec![],
            replica: vr_core::ReplicaIndex(0),
            crash_vector: [0; 3].into_iter().collect(),
        }),
        Message::StartView(StartView {
            view: 4,
            op_number: 7,
            commit_number: 4,
            log: log.clone(),
        }),
        Message::StartView(StartView {
            view: 4,
            op_number: 0,
            commit_number: 0,
            log: vec![],
        }),
        Message::GetState(GetState {
            view: 4,
            op_number: 4,
            replica: vr_core::ReplicaIndex(2),
        }),
        Message::NewState(NewState {
            view: 4,
            op_number: 9,
            commit_number: 7,
            log,
            replica: vr_core::ReplicaIndex(0),
            checkpoint: None,
            full_commit_min: 3,
        }),
        Message::NewState(NewState {
            view: 4,
            op_number: 4,
            commit_number: 4,
            log: vec![],
            replica: vr_core::ReplicaIndex(0),
            checkpoint: Some(summary()),
            full_commit_min: 0,
        }),
        Message::Recovery(Recovery {
            replica: vr_core::ReplicaIndex(2),
            nonce: u64::MAX,
            incarnation: 0,
        }),
        Message::RecoveryResponse(RecoveryResponse {
            view: 9,
            nonce: 77,
            status: RecoveryStatus::Recovering,
            op_number: 10,
            commit_number: 8,
            crash_vector: [0, 1, 0].into_iter().collect(),
            replica: vr_core::ReplicaIndex(1),
        }),
        Message::GetCheckpointTree(GetCheckpointTree {
            view: 2,
            root: [7; 32],
            level: 3,
            parents: vec![0, 5, u64::MAX],
            replica: vr_core::ReplicaIndex(1),
        }),
        Message::CheckpointTree(CheckpointTree {
            view: 2,
            summary: summary(),
            level: 3,
            parents: vec![5],
            digests: vec![[1; 32], [2; 32]],
            replica: vr_core::ReplicaIndex(0),
        }),
        Message::GetCheckpointPages(GetCheckpointPages {
            view: 2,
            root: [7; 32],
            pages: vec![],
            offset: 4096,
            replica: vr_core::ReplicaIndex(2),
        }),
        Message::CheckpointPages(CheckpointPages {
            view: 2,
            summary: summary(),
            chunks: vec![
                PageChunk {
                    page: 3,
                    offset: 0,
                    size: 5,
                    data: b"hello".to_vec(),
                },
                PageChunk {
                    page: 9,
                    offset: 100,
                    size: 200,
                    data: vec![],
                },
            ],
            replica: vr_core::ReplicaIndex(1),
        }),
    ]
}

fn summary() -> CheckpointSummary {
    CheckpointSummary {
        op_number: 4096,
        page_count: 17,
        service_page_count: 16,
        root: [0xab; 32],
    }
}

#[test]
fn every_variant_round_trips() {
    let samples = samples();
    let mut commands: Vec<u8> = samples.iter().map(|m| m.command() as u8).collect();
    commands.sort_unstable();
    commands.dedup();
    assert_eq!(
        commands,
        (1..=20).collect::<Vec<u8>>(),
        "a variant is missing"
    );
    for message in &samples {
        assert_round_trip(message);
    }
}

#[test]
fn layout_matches_the_documented_table() {
    let message = Message::Commit(Commit {
        view: 7,
        commit_number: 5,
        op_number: 6,
        timestamp_ns: 9,
        full_commit_min: 4,
    });
    let bytes = frame(&message);
    let mut expected = Vec::new();
    expected.extend_from_slice(b"VR");
    expected.push(2); // version
    expected.push(Command::Commit as u8);
    expected.extend_from_slice(&32u32.to_le_bytes()); // body size
    expected.extend_from_slice(&CLUSTER.to_le_bytes());
    expected.extend_from_slice(&7u64.to_le_bytes()); // view
    expected.extend_from_slice(&0u32.to_le_bytes()); // epoch
    expected.extend_from_slice(&[0; 4]); // checksum, checked below
    expected.extend_from_slice(&5u64.to_le_bytes()); // commit_number
    expected.extend_from_slice(&6u64.to_le_bytes()); // op_number
    expected.extend_from_slice(&9u64.to_le_bytes()); // timestamp_ns
    expected.extend_from_slice(&4u64.to_le_bytes()); // full_commit_min
    let mut covered = expected[..28].to_vec();
    covered.extend_from_slice(&expected[HEADER_SIZE..]);
    expected[CHECKSUM_FIELD].copy_from_slice(&crc32fast::hash(&covered).to_le_bytes());
    assert_eq!(bytes, expected);
    assert_eq!(MAGIC, *b"VR");
    assert_eq!(VERSION, 2);
}

#[test]
fn log_entry_layout() {
    let e = entry(5, b"abc");
    assert_eq!(e.encoded_size(), LOG_ENTRY_FIXED_SIZE + 3);
    let message = Message::StartView(StartView {
        view: 1,
        op_number: 5,
        commit_number: 4,
        log: vec![e.clone()],
    });
    let bytes = frame(&message);
    let body = &bytes[HEADER_SIZE..];
    assert_eq!(body.len(), 8 + 8 + 4 + e.encoded_size());
    assert_eq!(&body[16..20], &1u32.to_le_bytes()); // entry count
    let wire = &body[20..];
    assert_eq!(&wire[0..8], &5u64.to_le_bytes());
    assert_eq!(&wire[8..16], &3u64.to_le_bytes());
    assert_eq!(&wire[16..32], &e.client_id.to_le_bytes());
    assert_eq!(&wire[32..40], &50u64.to_le_bytes());
    assert_eq!(&wire[40..44], &3u32.to_le_bytes());
    assert_eq!(&wire[44..], b"abc");
    // A reconfiguration entry (§7) sets the top bit of the op length.
    let mut reconfiguration = e.clone();
    reconfiguration.kind = vr_core::EntryKind::Reconfiguration;
    let message = Message::StartView(StartView {
        view: 1,
        op_number: 5,
        commit_number: 4,
        log: vec![reconfiguration.clone()],
    });
    let bytes = frame(&message);
    let wire = &bytes[HEADER_SIZE + 20..];
    assert_eq!(&wire[40..44], &(3u32 | 1 << 31).to_le_bytes());
    let (decoded, _) = decode(&bytes, CLUSTER, MAX).unwrap();
    assert_eq!(decoded, message);
}

#[test]
fn encode_appends_to_the_callers_buffer() {
    let samples = samples();
    let mut out = b"prefix".to_vec();
    encode(&samples[0], CLUSTER, &mut out);
    assert_eq!(&out[..6], b"prefix");
    assert_eq!(out[6..], frame(&samples[0]));
}

#[test]
fn frames_back_to_back_decode_in_turn() {
    let samples = samples();
    let mut buffer = Vec::new();
    for message in &samples {
        encode(message, CLUSTER, &mut buffer);
    }
    let mut rest = &buffer[..];
    for message in &samples {
        let (decoded, used) = decode(rest, CLUSTER, MAX).unwrap();
        assert_eq!(&decoded, message);
        rest = &rest[used..];
    }
    assert!(rest.is_empty());
}

#[test]
fn peek_header_reads_the_raw_fields() {
    let message = Message::PrepareOk(PrepareOk {
        view: 9,
        op_number: 5,
        replica: vr_core::ReplicaIndex(2),
        timestamp_ns: 1,
        commit_number: 0,
        crash_vector: [0, 0, 1].into_iter().collect(),
    });
    let bytes = frame(&message);
    assert_eq!(peek_header(&bytes[..HEADER_SIZE - 1]), None);
    let header: Header = peek_header(&bytes[..HEADER_SIZE]).unwrap();
    assert_eq!(header.magic, MAGIC);
    assert_eq!(header.version, VERSION);
    assert_eq!(header.command, Command::PrepareOk as u8);
    // op_number (8) + replica (1) + timestamp (8) + commit_number (8) +
    // crash vector (1 + 3 * 8)
    assert_eq!(header.body_size, 50);
    assert_eq!(header.cluster, CLUSTER);
    assert_eq!(header.view, 9);
    assert_eq!(header.epoch, 0);
    assert_eq!(header.frame_size(), bytes.len() as u64);
}

// One test per error variant.

#[test]
fn error_truncated() {
    let bytes = frame(&samples()[9]);
    assert_eq!(
        decode(&[], CLUSTER, MAX),
        Err(DecodeError::Truncated {
            needed: HEADER_SIZE
        })
    );
    assert_eq!(
        decode(&bytes[..HEADER_SIZE - 1], CLUSTER, MAX),
        Err(DecodeError::Truncated {
            needed: HEADER_SIZE
        })
    );
    // Once the header is in, `needed` is the whole frame.
    for len in [HEADER_SIZE, bytes.len() - 1] {
        assert_eq!(
            decode(&bytes[..len], CLUSTER, MAX),
            Err(DecodeError::Truncated {
                needed: bytes.len()
            })
        );
    }
}

#[test]
fn error_bad_magic() {
    let mut bytes = frame(&samples()[0]);
    bytes[0] = b'X';
    assert_eq!(decode(&bytes, CLUSTER, MAX), Err(DecodeError::BadMagic));
    // Judged on the header alone, before the body arrives.
    assert_eq!(
        decode(&bytes[..HEADER_SIZE], CLUSTER, MAX),
        Err(DecodeError::BadMagic)
    );
}

#[test]
fn error_unsupported_version() {
    let mut bytes = frame(&samples()[0]);
    bytes[2] = 1;
    reseal(&mut bytes);
    assert_eq!(
        decode(&bytes, CLUSTER, MAX),
        Err(DecodeError::UnsupportedVersion(1)),
        "frames of the format before epochs are refused"
    );
}

#[test]
fn error_oversized() {
    let bytes = frame(&samples()[9]);
    let len = bytes.len();
    assert!(
        decode(&bytes, CLUSTER, len).is_ok(),
        "the limit is inclusive"
    );
    assert_eq!(
        decode(&bytes, CLUSTER, len - 1),
        Err(DecodeError::Oversized {
            size: len as u64,
            max: len - 1
        })
    );
    // A header announcing a huge body is refused from the header alone,
    // before the cluster check and without waiting for the body.
    let mut header = bytes[..HEADER_SIZE].to_vec();
    header[SIZE_FIELD].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        decode(&header, CLUSTER + 1, MAX),
        Err(DecodeError::Oversized {
            size: u64::from(u32::MAX) + HEADER_SIZE as u64,
            max: MAX
        })
    );
}

#[test]
fn error_wrong_cluster() {
    let bytes = frame(&samples()[2]);
    assert_eq!(
        decode(&bytes, CLUSTER + 1, MAX),
        Err(DecodeError::WrongCluster {
            expected: CLUSTER + 1,
            found: CLUSTER
        })
    );
    // Judged before waiting for the body.
    assert_eq!(&bytes[CLUSTER_FIELD], &CLUSTER.to_le_bytes());
    assert_eq!(
        decode(&bytes[..HEADER_SIZE], 7, MAX),
        Err(DecodeError::WrongCluster {
            expected: 7,
            found: CLUSTER
        })
    );
}

#[test]
fn error_bad_checksum() {
    let bytes = frame(&samples()[9]);
    for at in [
        3,
        VIEW_FIELD.start,
        EPOCH_FIELD.start,
        CHECKSUM_FIELD.start,
        HEADER_SIZE,
        bytes.len() - 1,
    ] {
        let mut corrupt = bytes.clone();
        corrupt[at] ^= 0x01;
        assert_eq!(
            decode(&corrupt, CLUSTER, MAX),
            Err(DecodeError::BadChecksum),
            "flipped byte {at}"
        );
    }
}

#[test]
fn error_unknown_command() {
    for command in [0, 21, 255] {
        let mut bytes = frame(&samples()[0]);
        bytes[3] = command;
        reseal(&mut bytes);
        assert_eq!(
            decode(&bytes, CLUSTER, MAX),
            Err(DecodeError::UnknownCommand(command))
        );
    }
}

#[test]
fn error_malformed_lying_length() {
    // A Request whose op length claims more bytes than the body holds.
    let mut bytes = frame(&samples()[1]);
    let op_len_at = HEADER_SIZE + 16 + 8;
    bytes[op_len_at..op_len_at + 4].copy_from_slice(&1000u32.to_le_bytes());
    reseal(&mut bytes);
    assert!(matches!(
        decode(&bytes, CLUSTER, MAX),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn error_malformed_huge_counts_fail_without_allocating() {
    // A StartView claiming 4 billion entries, then 10 bytes: must fail on the
    // count, not try to reserve 4 billion entries.
    let template = frame(&samples()[12]);
    let mut body = Vec::new();
    body.extend_from_slice(&0u64.to_le_bytes());
    body.extend_from_slice(&0u64.to_le_bytes());
    body.extend_from_slice(&u32::MAX.to_le_bytes());
    body.extend_from_slice(&[0; 10]);
    let bytes = with_body(template, &body);
    assert!(matches!(
        decode(&bytes, CLUSTER, MAX),
        Err(DecodeError::Malformed(_))
    ));
    // Same for a 4 GiB op length.
    let template = frame(&samples()[0]);
    let mut body = vec![0; 24];
    body.extend_from_slice(&u32::MAX.to_le_bytes());
    body.extend_from_slice(&[0; 10]);
    let bytes = with_body(template, &body);
    assert!(matches!(
        decode(&bytes, CLUSTER, MAX),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn error_malformed_body_shape() {
    for message in samples() {
        let bytes = frame(&message);
        let body = bytes[HEADER_SIZE..].to_vec();
        // Too short by one byte: a field runs past the end.
        let short = with_body(bytes.clone(), &body[..body.len() - 1]);
        assert!(
            matches!(decode(&short, CLUSTER, MAX), Err(DecodeError::Malformed(_))),
            "{message:?}"
        );
        // One byte too many: trailing bytes.
        let mut long = body.clone();
        long.push(0);
        let long = with_body(bytes, &long);
        assert!(
            matches!(decode(&long, CLUSTER, MAX), Err(DecodeError::Malformed(_))),
            "{message:?}"
        );
    }
}

#[test]
fn error_malformed_header_fields() {
    // The epoch is the sender's (§7): returned by `decode_in_epoch`.
    let mut bytes = frame(&samples()[2]);
    bytes[EPOCH_FIELD].copy_from_slice(&3u32.to_le_bytes());
    reseal(&mut bytes);
    let (message, epoch, _) = vr_core::codec::decode_in_epoch(&bytes, CLUSTER, MAX).unwrap();
    assert_eq!((message, epoch), (samples()[2].clone(), 3));
    // An op length past the body, with the reconfiguration bit set.
    let message = Message::StartView(StartView {
        view: 1,
        op_number: 5,
        commit_number: 4,
        log: vec![entry(5, b"abc")],
    });
    let mut bytes = frame(&message);
    let at = bytes.len() - 3 - 4;
    bytes[at..at + 4].copy_from_slice(&(4u32 | 1 << 31).to_le_bytes());
    reseal(&mut bytes);
    assert!(matches!(
        decode(&bytes, CLUSTER, MAX),
        Err(DecodeError::Malformed(_))
    ));
    // A Request carries no view, so its header view must be 0.
    let mut bytes = frame(&samples()[0]);
    bytes[VIEW_FIELD].copy_from_slice(&5u64.to_le_bytes());
    reseal(&mut bytes);
    assert!(matches!(
        decode(&bytes, CLUSTER, MAX),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn errors_display() {
    let errors = [
        DecodeError::Truncated { needed: 32 },
        DecodeError::BadMagic,
        DecodeError::UnsupportedVersion(2),
        DecodeError::Oversized { size: 10, max: 5 },
        DecodeError::WrongCluster {
            expected: 1,
            found: 2,
        },
        DecodeError::BadChecksum,
        DecodeError::UnknownCommand(0),
        DecodeError::Malformed("why"),
    ];
    for error in errors {
        assert!(!error.to_string().is_empty());
    }
}

#[cfg(feature = "std")]
#[test]
fn decode_error_is_a_std_error() {
    let error: Box<dyn std::error::Error> = Box::new(DecodeError::BadChecksum);
    assert_eq!(error.to_string(), "bad checksum");
}

// Property tests.

fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..64)
}

fn arb_entry() -> impl Strategy<Value = LogEntry> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u128>(),
        any::<u64>(),
        arb_bytes(),
    )
        .prop_map(
            |(op_number, view, client_id, request_number, op)| LogEntry {
                op_number,
                view,
                client_id,
                request_number,
                op,
                kind: Default::default(),
            },
        )
}

fn arb_log() -> impl Strategy<Value = Vec<LogEntry>> {
    vec(arb_entry(), 0..8)
}

fn arb_message() -> impl Strategy<Value = Message> {
    let u = any::<u64>;
    prop_oneof![
        (any::<u128>(), u(), arb_bytes()).prop_map(|(client_id, request_number, op)| {
            Message::Request(Request {
                client_id,
                request_number,
                op,
            })
        }),
        (u(), u(), u(), u(), arb_log()).prop_map(
            |(view, commit_number, timestamp_ns, full_commit_min, entries)| {
                Message::Prepare(Prepare {
                    view,
                    commit_number,
                    timestamp_ns,
                    full_commit_min,
                    entries,
                })
            }
        ),
        (u(), u(), any::<u8>(), u(), u(), arb_cv()).prop_map(
            |(view, op_number, replica, timestamp_ns, commit_number, crash_vector)| {
                Message::PrepareOk(PrepareOk {
                    view,
                    op_number,
                    replica: vr_core::ReplicaIndex(replica),
                    timestamp_ns,
                    commit_number,
                    crash_vector,
                })
            }
        ),
        (u(), u(), u(), u(), u()).prop_map(
            |(view, commit_number, op_number, timestamp_ns, full_commit_min)| {
                Message::Commit(Commit {
                    view,
                    commit_number,
                    op_number,
                    timestamp_ns,
                    full_commit_min,
                })
            }
        ),
        (u(), any::<u128>(), u(), u(), arb_bytes()).prop_map(
            |(view, client_id, request_number, op_number, result)| {
                Message::Reply(Reply {
                    view,
                    client_id,
                    request_number,
                    op_number,
                    result,
                })
            }
        ),
        (any::<u128>(), u(), u(), arb_bytes()).prop_map(
            |(client_id, request_number, op_number_min, op)| {
                Message::ReadRequest(ReadRequest {
                    client_id,
                    request_number,
                    op_number_min,
                    op,
                })
            }
        ),
        (u(), u(), any::<u8>(), arb_cv()).prop_map(
            |(view, promised_view, replica, crash_vector)| Message::StartViewChange(
                StartViewChange {
                    view,
                    promised_view,
                    replica: vr_core::ReplicaIndex(replica),
                    crash_vector,
                }
            )
        ),
        (u(), u(), u(), u(), arb_log(), any::<u8>(), arb_cv()).prop_map(
            |(view, last_normal_view, op_number, commit_number, log, replica, crash_vector)| {
                Message::DoViewChange(DoViewChange {
                    view,
                    last_normal_view,
                    op_number,
                    commit_number,
                    log,
                    replica: vr_core::ReplicaIndex(replica),
                    crash_vector,
                })
            }
        ),
        (u(), u(), u(), arb_log()).prop_map(|(view, op_number, commit_number, log)| {
            Message::StartView(StartView {
                view,
                op_number,
                commit_number,
                log,
            })
        }),
        (u(), u(), any::<u8>()).prop_map(|(view, op_number, replica)| {
            Message::GetState(GetState {
                view,
                op_number,
                replica: vr_core::ReplicaIndex(replica),
            })
        }),
        (
            u(),
            u(),
            u(),
            arb_log(),
            any::<u8>(),
            proptest::option::of(arb_summary()),
            u(),
        )
            .prop_map(
                |(view, op_number, commit_number, log, replica, checkpoint, full_commit_min)| {
                    Message::NewState(NewState {
                        view,
                        op_number,
                        commit_number,
                        log,
                        replica: vr_core::ReplicaIndex(replica),
                        checkpoint,
                        full_commit_min,
                    })
                }
            ),
        (any::<u8>(), u(), u()).prop_map(|(replica, nonce, incarnation)| {
            Message::Recovery(Recovery {
                replica: vr_core::ReplicaIndex(replica),
                nonce,
                incarnation,
            })
        }),
        (u(), u(), 0u8..3, u(), u(), arb_cv(), any::<u8>()).prop_map(
            |(view, nonce, status, op_number, commit_number, crash_vector, replica)| {
                Message::RecoveryResponse(RecoveryResponse {
                    view,
                    nonce,
                    status: [
                        RecoveryStatus::Normal,
                        RecoveryStatus::ViewChange,
                        RecoveryStatus::Recovering,
                    ][usize::from(status)],
                    op_number,
                    commit_number,
                    crash_vector,
                    replica: vr_core::ReplicaIndex(replica),
                })
            }
        ),
        (
            u(),
            any::<[u8; 32]>(),
            any::<u8>(),
            vec(u(), 0..20),
            any::<u8>()
        )
            .prop_map(|(view, root, level, parents, replica)| {
                Message::GetCheckpointTree(GetCheckpointTree {
                    view,
                    root,
                    level,
                    parents,
                    replica: vr_core::ReplicaIndex(replica),
                })
            }),
        (
            u(),
            arb_summary(),
            any::<u8>(),
            vec(u(), 0..20),
            vec(any::<[u8; 32]>(), 0..20),
            any::<u8>()
        )
            .prop_map(|(view, summary, level, parents, digests, replica)| {
                Message::CheckpointTree(CheckpointTree {
                    view,
                    summary,
                    level,
                    parents,
                    digests,
                    replica: vr_core::ReplicaIndex(replica),
                })
            }),
        (u(), any::<[u8; 32]>(), vec(u(), 0..20), u(), any::<u8>()).prop_map(
            |(view, root, pages, offset, replica)| {
                Message::GetCheckpointPages(GetCheckpointPages {
                    view,
                    root,
                    pages,
                    offset,
                    replica: vr_core::ReplicaIndex(replica),
                })
            }
        ),
        (
            u(),
            arb_summary(),
            vec((u(), u(), u(), arb_bytes()), 0..5),
            any::<u8>()
        )
            .prop_map(|(view, summary, chunks, replica)| {
                Message::CheckpointPages(CheckpointPages {
                    view,
                    summary,
                    chunks: chunks
                        .into_iter()
                        .map(|(page, offset, size, data)| PageChunk {
                            page,
                            offset,
                            size,
                            data,
                        })
                        .collect(),
                    replica: vr_core::ReplicaIndex(replica),
                })
            }),
    ]
}

fn arb_cv() -> impl Strategy<Value = CrashVector> {
    vec(any::<u64>(), 0..9).prop_map(|v| v.into_iter().collect())
}

fn arb_summary() -> impl Strategy<Value = CheckpointSummary> {
    (any::<u64>(), any::<u64>(), any::<u64>(), any::<[u8; 32]>()).prop_map(
        |(op_number, page_count, service_page_count, root)| CheckpointSummary {
            op_number,
            page_count,
            service_page_count,
            root,
        },
    )
}

/// What a decoder may say about a frame whose byte `at` was changed, given
/// which header field the byte belongs to.
fn expected_after_flip(at: usize, result: &Result<(Message, usize), DecodeError>) -> bool {
    match at {
        0..=1 => *result == Err(DecodeError::BadMagic),
        2 => matches!(result, Err(DecodeError::UnsupportedVersion(_))),
        // A new size may be too large, ask for more bytes, or cut the body
        // short (which the checksum then catches).
        4..=7 => matches!(
            result,
            Err(DecodeError::Oversized { .. }
                | DecodeError::Truncated { .. }
                | DecodeError::BadChecksum)
        ),
        8..=15 => matches!(result, Err(DecodeError::WrongCluster { .. })),
        // The command, view, epoch, checksum and body are all covered by the
        // CRC, which catches every single-byte error.
        _ => *result == Err(DecodeError::BadChecksum),
    }
}

proptest! {
    #[test]
    fn arbitrary_messages_round_trip(message in arb_message(), prefix in arb_bytes()) {
        let mut out = prefix.clone();
        encode(&message, CLUSTER, &mut out);
        let written = out.len() - prefix.len();
        prop_assert_eq!(written, encoded_size(&message));
        let (decoded, consumed) = decode(&out[prefix.len()..], CLUSTER, MAX).unwrap();
        prop_assert_eq!(decoded, message);
        prop_assert_eq!(consumed, written);
    }

    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..2048), max in 0..4096usize) {
        let _ = decode(&bytes, CLUSTER, max);
        let _ = peek_header(&bytes);
    }

    /// Edited or random bodies behind a valid, checksummed header reach the
    /// body parser: it either rejects them as malformed or accepts them, and
    /// whatever it accepts re-encodes to the very same bytes (the encoding is
    /// canonical).
    #[test]
    fn resealed_bodies_are_rejected_or_canonical(
        message in arb_message(),
        command in prop::option::of(0..=12u8),
        view in prop::option::of(any::<u64>()),
        edit in prop::option::of((any::<prop::sample::Index>(), any::<u8>())),
        random_body in prop::option::weighted(0.25, vec(any::<u8>(), 0..256)),
    ) {
        let original = frame(&message);
        let mut body = random_body.unwrap_or_else(|| original[HEADER_SIZE..].to_vec());
        if let (Some((at, value)), false) = (edit, body.is_empty()) {
            let at = at.index(body.len());
            body[at] = value;
        }
        let mut bytes = original.clone();
        if let Some(command) = command {
            bytes[3] = command;
        }
        if let Some(view) = view {
            bytes[VIEW_FIELD].copy_from_slice(&view.to_le_bytes());
        }
        let bytes = with_body(bytes, &body);
        match decode(&bytes, CLUSTER, MAX) {
            Ok((decoded, consumed)) => {
                prop_assert_eq!(consumed, bytes.len());
                prop_assert_eq!(frame(&decoded), bytes);
            }
            Err(DecodeError::UnknownCommand(c)) => {
                prop_assert!(Command::from_u8(c).is_none());
            }
            Err(DecodeError::Malformed(_)) => {}
            Err(other) => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    #[test]
    fn flipped_byte_is_detected(
        message in arb_message(),
        at in any::<prop::sample::Index>(),
        mask in 1..=255u8,
    ) {
        let mut bytes = frame(&message);
        let at = at.index(bytes.len());
        bytes[at] ^= mask;
        let result = decode(&bytes, CLUSTER, MAX);
        prop_assert!(expected_after_flip(at, &result), "byte {} gave {:?}", at, result);
    }

    #[test]
    fn truncated_frame_asks_for_more(message in arb_message(), cut in any::<prop::sample::Index>()) {
        let bytes = frame(&message);
        let len = cut.index(bytes.len());
        let needed = if len < HEADER_SIZE { HEADER_SIZE } else { bytes.len() };
        prop_assert_eq!(
            decode(&bytes[..len], CLUSTER, MAX),
            Err(DecodeError::Truncated { needed })
        );
    }

    #[test]
    fn junk_after_a_frame_is_left_alone(message in arb_message(), junk in vec(any::<u8>(), 1..64)) {
        let mut bytes = frame(&message);
        let len = bytes.len();
        bytes.extend_from_slice(&junk);
        prop_assert_eq!(decode(&bytes, CLUSTER, MAX), Ok((message, len)));
    }

    #[test]
    fn overwritten_size_field_is_detected(message in arb_message(), size in any::<u32>()) {
        let mut bytes = frame(&message);
        let original = u32::from_le_bytes(bytes[SIZE_FIELD].try_into().unwrap());
        bytes[SIZE_FIELD].copy_from_slice(&size.to_le_bytes());
        let result = decode(&bytes, CLUSTER, MAX);
        let frame_size = HEADER_SIZE as u64 + u64::from(size);
        if size == original {
            prop_assert_eq!(result, Ok((message, bytes.len())));
        } else if frame_size > MAX as u64 {
            prop_assert_eq!(result, Err(DecodeError::Oversized { size: frame_size, max: MAX }));
        } else if frame_size > bytes.len() as u64 {
            prop_assert_eq!(result, Err(DecodeError::Truncated { needed: frame_size as usize }));
        } else {
            prop_assert_eq!(result, Err(DecodeError::BadChecksum));
        }
    }
}
