//! Hand-made histories with known verdicts: anomalies the checker must reject
//! and legal (if surprising) behaviours it must accept.
//!
//! Each history is built event by event, written out with `write_jsonl` and
//! read back with the `jsonl` parser before checking, so the round trip is
//! exercised too. Keys start as nil.

use std::collections::HashMap;

use vr_sim::history::{parse, write_jsonl, Event, Format, Input, Output};
use vr_sim::linearizability::{check, check_with_limit, CheckResult};

/// Builds a history; each method adds one event at the next time step.
#[derive(Default)]
struct H {
    events: Vec<Event>,
    pending: HashMap<u64, (String, Input)>,
    time: u64,
}

impl H {
    fn new() -> Self {
        H::default()
    }

    fn tick(&mut self) -> u64 {
        self.time += 10;
        self.time
    }

    /// Process `p` invokes `input` on `key`.
    fn call(mut self, p: u64, key: &str, input: Input) -> Self {
        let t = self.tick();
        self.events.push(Event::invoke(p, t, key, &input));
        assert!(self.pending.insert(p, (key.to_string(), input)).is_none());
        self
    }

    /// Process `p`'s operation completes ok with `output`.
    fn ok(mut self, p: u64, output: Output) -> Self {
        let t = self.tick();
        let (key, input) = self.pending.remove(&p).expect("an outstanding operation");
        self.events.push(Event::ok(p, t, key, &input, &output));
        self
    }

    /// Process `p`'s operation definitely failed.
    fn fail(mut self, p: u64) -> Self {
        let t = self.tick();
        let (key, input) = self.pending.remove(&p).expect("an outstanding operation");
        self.events.push(Event::fail(p, t, key, &input));
        self
    }

    /// Process `p`'s operation has an unknown outcome.
    fn info(mut self, p: u64) -> Self {
        let t = self.tick();
        let (key, input) = self.pending.remove(&p).expect("an outstanding operation");
        self.events.push(Event::info(p, t, key, &input));
        self
    }

    /// A whole operation with no other operation concurrent to it.
    fn op(self, p: u64, key: &str, input: Input, output: Output) -> Self {
        self.call(p, key, input).ok(p, output)
    }

    fn check(self) -> CheckResult {
        let text: String = self.events.iter().map(|e| write_jsonl(e) + "\n").collect();
        let history = parse(Format::Jsonl, &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(history.events(), &self.events[..]);
        check(&history)
    }
}

fn write(v: &str) -> Input {
    Input::Write(v.to_string())
}

fn read() -> Input {
    Input::Read
}

fn saw(v: Option<&str>) -> Output {
    Output::Read(v.map(str::to_string))
}

fn assert_linearizable(r: CheckResult) {
    assert_eq!(r, CheckResult::Linearizable, "{r}");
}

/// Asserts the verdict is "not linearizable on `key`" and returns the op ids
/// of the blocked operation and the pending ones.
fn assert_not_linearizable(r: CheckResult, key: &str) -> (usize, Vec<usize>) {
    match &r {
        CheckResult::NotLinearizable {
            key: k,
            blocked,
            pending,
            ..
        } => {
            assert_eq!(k, key, "{r}");
            let text = r.to_string();
            assert!(text.contains(&format!("#{} ", blocked.id)), "{text}");
            (blocked.id, pending.iter().map(|o| o.id).collect())
        }
        _ => panic!("expected not linearizable on {key:?}, got {r}"),
    }
}

// ---------------------------------------------------------------- rejected

#[test]
fn stale_read_after_a_later_write_completed_is_rejected() {
    let r = H::new()
        .op(1, "x", write("a"), Output::Write)
        .op(2, "x", write("b"), Output::Write)
        .op(3, "x", read(), saw(Some("a"))) // op #2: b was acknowledged before
        .check();
    let (blocked, pending) = assert_not_linearizable(r.clone(), "x");
    assert_eq!(blocked, 2);
    assert_eq!(pending, vec![2]);
    match r {
        CheckResult::NotLinearizable {
            longest_prefix,
            state_after_prefix,
            ..
        } => {
            assert_eq!(
                longest_prefix.iter().map(|o| o.id).collect::<Vec<_>>(),
                vec![0, 1]
            );
            assert_eq!(state_after_prefix.as_deref(), Some("b"));
        }
        _ => unreachable!(),
    }
}

#[test]
fn lost_acknowledged_write_is_rejected() {
    // b is acknowledged, but every read after that still sees a.
    let r = H::new()
        .op(1, "x", write("a"), Output::Write)
        .call(2, "x", write("b"))
        .op(3, "x", read(), saw(Some("a"))) // concurrent with the write: fine so far
        .ok(2, Output::Write)
        .op(3, "x", read(), saw(Some("a")))
        .op(1, "x", read(), saw(Some("a")))
        .check();
    assert_not_linearizable(r, "x");
}

#[test]
fn duplicated_increment_is_rejected() {
    // Two increments by 1, yet the counter reads 3: one was applied twice.
    let r = H::new()
        .call(1, "n", Input::Incr(1))
        .call(2, "n", Input::Incr(1))
        .ok(1, Output::Incr(1))
        .ok(2, Output::Incr(2))
        .op(3, "n", read(), saw(Some("3")))
        .check();
    assert_not_linearizable(r, "n");
}

#[test]
fn duplicated_increment_with_unknown_outcomes_is_rejected() {
    // Unknown operations take effect at most once, too.
    let r = H::new()
        .call(1, "n", Input::Incr(1))
        .call(2, "n", Input::Incr(1))
        .info(1)
        .info(2)
        .op(3, "n", read(), saw(Some("3")))
        .check();
    assert_not_linearizable(r, "n");
}

#[test]
fn increment_returning_a_wrong_value_is_rejected() {
    let r = H::new()
        .op(1, "n", Input::Incr(5), Output::Incr(5))
        .op(1, "n", Input::Incr(1), Output::Incr(7))
        .check();
    assert_not_linearizable(r, "n");
}

#[test]
fn read_of_a_value_never_written_is_rejected() {
    let r = H::new()
        .call(1, "x", write("a"))
        .op(2, "x", read(), saw(Some("z")))
        .ok(1, Output::Write)
        .check();
    assert_not_linearizable(r, "x");
}

#[test]
fn failed_write_that_shows_up_is_rejected() {
    // "fail" means definitely not applied.
    let r = H::new()
        .call(1, "x", write("a"))
        .fail(1)
        .op(2, "x", read(), saw(Some("a")))
        .check();
    assert_not_linearizable(r, "x");
}

#[test]
fn unknown_write_that_shows_up_and_then_vanishes_is_rejected() {
    // It may take effect, but only once: nothing can bring back nil.
    let r = H::new()
        .call(1, "x", write("a"))
        .info(1)
        .op(2, "x", read(), saw(Some("a")))
        .op(2, "x", read(), saw(None))
        .check();
    assert_not_linearizable(r, "x");
}

#[test]
fn read_before_the_write_was_invoked_is_rejected() {
    // An unknown write takes effect only after its invocation.
    let r = H::new()
        .op(2, "x", read(), saw(Some("a")))
        .call(1, "x", write("a"))
        .check();
    assert_not_linearizable(r, "x");
}

#[test]
fn cas_that_swapped_on_the_wrong_value_is_rejected() {
    let r = H::new()
        .op(1, "x", write("a"), Output::Write)
        .op(
            1,
            "x",
            Input::Cas {
                from: Some("b".into()),
                to: Some("c".into()),
            },
            Output::Cas { swapped: true },
        )
        .check();
    assert_not_linearizable(r, "x");
}

#[test]
fn cas_that_did_not_swap_on_the_right_value_is_rejected() {
    let r = H::new()
        .op(
            1,
            "x",
            Input::Cas {
                from: None,
                to: Some("c".into()),
            },
            Output::Cas { swapped: false },
        )
        .check();
    assert_not_linearizable(r, "x");
}

#[test]
fn violation_is_reported_on_its_own_key() {
    // Key "a" is fine; key "b" has a stale read.
    let r = H::new()
        .op(1, "a", write("1"), Output::Write)
        .op(1, "b", write("1"), Output::Write)
        .op(2, "b", write("2"), Output::Write)
        .op(3, "a", read(), saw(Some("1")))
        .op(3, "b", read(), saw(Some("1")))
        .check();
    assert_not_linearizable(r, "b");
}

#[test]
fn exhausted_budget_is_unknown_not_linearizable() {
    let h = H::new()
        .op(1, "x", write("a"), Output::Write)
        .op(2, "x", read(), saw(Some("a")));
    let text: String = h.events.iter().map(|e| write_jsonl(e) + "\n").collect();
    let history = parse(Format::Jsonl, &text).unwrap();
    assert!(
        matches!(check_with_limit(&history, 1), CheckResult::Unknown { ref key, steps: 1 } if key == "x")
    );
    assert_eq!(check_with_limit(&history, 2), CheckResult::Linearizable);
}

// ---------------------------------------------------------------- accepted

#[test]
fn concurrent_write_and_read_may_see_the_old_value() {
    let r = H::new()
        .op(1, "x", write("a"), Output::Write)
        .call(1, "x", write("b"))
        .op(2, "x", read(), saw(Some("a")))
        .ok(1, Output::Write)
        .check();
    assert_linearizable(r);
}

#[test]
fn concurrent_write_and_read_may_see_the_new_value() {
    let r = H::new()
        .op(1, "x", write("a"), Output::Write)
        .call(1, "x", write("b"))
        .op(2, "x", read(), saw(Some("b")))
        .ok(1, Output::Write)
        .check();
    assert_linearizable(r);
}

#[test]
fn unknown_write_that_shows_up_in_a_later_read_is_accepted() {
    let r = H::new()
        .call(1, "x", write("a"))
        .info(1)
        .op(2, "x", read(), saw(None))
        .op(2, "x", read(), saw(Some("a"))) // took effect long after the info
        .check();
    assert_linearizable(r);
}

#[test]
fn write_never_completed_that_shows_up_later_is_accepted() {
    let r = H::new()
        .call(1, "x", write("a")) // no completion before the end
        .op(2, "x", write("b"), Output::Write)
        .op(2, "x", read(), saw(Some("a"))) // took effect after b
        .check();
    assert_linearizable(r);
}

#[test]
fn unknown_write_that_never_shows_up_is_accepted() {
    let r = H::new()
        .call(1, "x", write("a"))
        .info(1)
        .op(2, "x", read(), saw(None))
        .op(2, "x", write("b"), Output::Write)
        .op(2, "x", read(), saw(Some("b")))
        .call(1, "x", write("c")) // never completes
        .op(2, "x", read(), saw(Some("b")))
        .check();
    assert_linearizable(r);
}

#[test]
fn unknown_increment_that_could_never_apply_is_accepted() {
    // incr on a non-integer value is impossible, and need not happen.
    let r = H::new()
        .op(1, "n", write("abc"), Output::Write)
        .call(2, "n", Input::Incr(1))
        .info(2)
        .op(1, "n", read(), saw(Some("abc")))
        .check();
    assert_linearizable(r);
}

#[test]
fn failed_write_that_never_shows_up_is_accepted() {
    let r = H::new()
        .op(1, "x", write("a"), Output::Write)
        .call(1, "x", write("b"))
        .fail(1)
        .op(2, "x", read(), saw(Some("a")))
        .check();
    assert_linearizable(r);
}

#[test]
fn increments_appends_and_cas_in_order_are_accepted() {
    let r = H::new()
        .call(1, "n", Input::Incr(2))
        .call(2, "n", Input::Incr(3))
        .ok(2, Output::Incr(3))
        .ok(1, Output::Incr(5))
        .op(3, "n", read(), saw(Some("5")))
        .op(3, "s", Input::Append("x".into()), Output::Append)
        .call(1, "s", Input::Append("y".into()))
        .call(2, "s", Input::Append("z".into()))
        .ok(2, Output::Append)
        .ok(1, Output::Append)
        .op(3, "s", read(), saw(Some("xzy")))
        .op(
            3,
            "s",
            Input::Cas {
                from: Some("xzy".into()),
                to: None,
            },
            Output::Cas { swapped: true },
        )
        .op(
            3,
            "s",
            Input::Cas {
                from: Some("xzy".into()),
                to: Some("q".into()),
            },
            Output::Cas { swapped: false },
        )
        .op(3, "s", read(), saw(None))
        .check();
    assert_linearizable(r);
}

#[test]
fn empty_history_is_accepted() {
    assert_linearizable(H::new().check());
}
