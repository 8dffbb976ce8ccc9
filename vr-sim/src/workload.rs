//! The clients' workload: which operation a client invokes next, and how
//! operations and results map to the checker's history.

use vr_core::prng::Prng;

use crate::history::{Input, Output};
use crate::kv::{is_counter_key, KvOp, KvResult, Tag, TaggedOp};

/// Draws the next operation of client `client` (its request-number is
/// `request_number`) on one of `key_count` keys.
///
/// Counter keys get reads, writes of small integers and increments; string
/// keys reads, writes and appends. Written and appended strings name the
/// request, so values are unique and an append's effect is traceable.
pub fn next_op(prng: &mut Prng, client: u32, request_number: u64, key_count: u8) -> TaggedOp {
    let key = prng.below(u64::from(key_count.max(1))) as u8;
    let roll = prng.below(100);
    let op = match (is_counter_key(key), roll) {
        (_, 0..=29) => KvOp::Read,
        (true, 30..=44) => KvOp::Write(prng.below(100).to_string()),
        (true, _) => KvOp::Incr(1 + prng.below(5) as i64),
        (false, 30..=44) => KvOp::Write(format!("w{client}.{request_number}")),
        (false, _) => KvOp::Append(format!("{client}.{request_number};")),
    };
    TaggedOp {
        tag: Tag {
            client,
            request_number,
        },
        key,
        op,
    }
}

/// The history's view of an operation.
pub fn history_input(op: &KvOp) -> Input {
    match op {
        KvOp::Read => Input::Read,
        KvOp::Write(s) => Input::Write(s.clone()),
        KvOp::Incr(d) => Input::Incr(*d),
        KvOp::Append(s) => Input::Append(s.clone()),
    }
}

/// The history's view of a result, or why the result does not answer `input`.
pub fn history_output(input: &Input, result: &KvResult) -> Result<Output, String> {
    match (input, result) {
        (Input::Read, KvResult::Value(v)) => Ok(Output::Read(v.clone())),
        (Input::Write(_), KvResult::Done) => Ok(Output::Write),
        (Input::Append(_), KvResult::Done) => Ok(Output::Append),
        (Input::Incr(_), KvResult::Counter(n)) => Ok(Output::Incr(*n)),
        (_, KvResult::Error(why)) => Err(format!("the service failed {input}: {why}")),
        (input, result) => Err(format!("the reply {result:?} does not answer {input}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_fit_their_key_kind_and_results_map() {
        let mut prng = Prng::new(3);
        let mut kinds = [0u32; 4];
        for r in 1..=400 {
            let op = next_op(&mut prng, 2, r, 4);
            assert!(op.key < 4);
            let i = match (&op.op, is_counter_key(op.key)) {
                (KvOp::Read, _) => 0,
                (KvOp::Write(_), _) => 1,
                (KvOp::Incr(_), true) => 2,
                (KvOp::Append(_), false) => 3,
                (op, counter) => panic!("{op:?} on a counter key: {counter}"),
            };
            kinds[i] += 1;
        }
        assert!(kinds.iter().all(|&k| k > 20), "{kinds:?}");
        assert_eq!(
            history_output(&Input::Incr(1), &KvResult::Counter(4)),
            Ok(Output::Incr(4))
        );
        assert!(history_output(&Input::Read, &KvResult::Done).is_err());
    }
}
