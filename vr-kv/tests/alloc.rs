//! The parser allocates only what the bytes in hand justify: a header's
//! claim reserves nothing, and an incomplete command allocates nothing.
//!
//! A counting allocator sees every allocation this test binary makes; the
//! count is per thread, so tests running in parallel do not mix.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use vr_kv::resp::{encode_command, parse_command, Limits};

struct Counting;

thread_local! {
    static ALLOCATED_BYTES: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATED_BYTES.try_with(|n| n.set(n.get() + layout.size()));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes allocated on this thread while `f` runs.
fn allocated_by<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATED_BYTES.with(Cell::get);
    let out = f();
    (out, ALLOCATED_BYTES.with(Cell::get) - before)
}

fn unbounded() -> Limits {
    Limits {
        args_max: usize::MAX,
        bulk_bytes_max: usize::MAX,
        inline_bytes_max: 64 * 1024,
    }
}

#[test]
fn a_billion_argument_claim_allocates_nothing() {
    let limits = unbounded();
    let (parsed, bytes) = allocated_by(|| parse_command(b"*1000000000\r\n$3\r\nfoo\r\n", &limits));
    assert_eq!(parsed, Ok(None));
    assert_eq!(bytes, 0);
}

#[test]
fn an_incomplete_command_allocates_nothing() {
    let args: Vec<Vec<u8>> = (0..1000)
        .map(|i| format!("argument {i}").into_bytes())
        .collect();
    let mut buf = Vec::new();
    encode_command(&args, &mut buf);
    buf.pop();
    let limits = Limits::default();
    let (parsed, bytes) = allocated_by(|| parse_command(&buf, &limits));
    assert_eq!(parsed, Ok(None));
    assert_eq!(bytes, 0);
}

#[test]
fn a_complete_command_allocates_its_arguments_and_no_more() {
    let args: Vec<Vec<u8>> = (0..1000)
        .map(|i| format!("argument {i}").into_bytes())
        .collect();
    let mut buf = Vec::new();
    encode_command(&args, &mut buf);
    let limits = Limits::default();
    let (parsed, bytes) = allocated_by(|| parse_command(&buf, &limits));
    assert_eq!(parsed, Ok(Some((args.clone(), buf.len()))));
    // The copies themselves, at least (which also shows the counter works)...
    let contents = args.iter().map(Vec::len).sum::<usize>();
    // ...and at most the copies plus one slot per argument.
    let justified = contents + args.len() * std::mem::size_of::<Vec<u8>>();
    assert!(
        (contents..=justified).contains(&bytes),
        "{bytes} bytes, expected {contents}..={justified}"
    );
}
