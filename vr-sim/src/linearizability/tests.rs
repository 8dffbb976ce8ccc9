//! Differential test: the search against a brute-force checker (no cache, no
//! pruning, no lists) on many small random histories.

use super::model::{apply, Step};
use super::{check, CheckResult};
use crate::history::{Event, History, Input, Operation, Outcome, Output};

const KEYS: [&str; 2] = ["x", "y"];

/// xorshift64*: a small deterministic generator for the test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn value(rng: &mut Rng) -> Option<String> {
    match rng.below(4) {
        0 => None,
        1 => Some("1".into()),
        2 => Some("a".into()),
        _ => Some(String::new()),
    }
}

/// A random input; with `rwa` only reads, writes and appends.
fn input(rng: &mut Rng, rwa: bool) -> Input {
    let r = if rwa {
        [0, 2, 4][rng.below(3) as usize]
    } else {
        rng.below(6)
    };
    match r {
        0 | 1 => Input::Read,
        2 => Input::Write(value(rng).unwrap_or_default()),
        3 => Input::Incr(rng.below(3) as i64),
        4 => Input::Append(["a", "b"][rng.below(2) as usize].into()),
        _ => Input::Cas {
            from: value(rng),
            to: value(rng),
        },
    }
}

/// A process's operation in flight: key index, input, and the output once it
/// has been applied (`Some(None)`: it could not be applied).
type Busy = (usize, Input, Option<Option<Output>>);

/// A random history of a register service that is correct (each operation is
/// applied atomically at a random moment while it is outstanding), then
/// possibly corrupted: outputs changed, applied operations reported as failed.
/// It uses `keys` keys of `KEYS`, and reports an applied operation as `info`
/// with probability `info_percent`%; with `rwa` it has only reads, writes and
/// appends.
fn random_history(rng: &mut Rng, keys: u64, info_percent: u64, rwa: bool) -> History {
    let processes = 1 + rng.below(4);
    let mut regs: Vec<Option<String>> = vec![None; 2];
    // per process: (key index, input, applied output (None: not yet))
    let mut busy: Vec<Option<Busy>> = vec![None; processes as usize];
    let mut events = Vec::new();
    let mut invocations = 0;
    let max_ops = 2 + rng.below(8);
    let corrupt = rng.below(2) == 0;
    let mut time = 0;
    loop {
        time += 1;
        let p = rng.below(processes) as usize;
        match busy[p].take() {
            None if invocations < max_ops => {
                let k = rng.below(keys) as usize;
                let i = input(rng, rwa);
                events.push(Event::invoke(p as u64, time, KEYS[k], &i));
                invocations += 1;
                busy[p] = Some((k, i, None));
            }
            None => {
                if busy.iter().all(Option::is_none) || rng.below(20) == 0 {
                    break;
                }
            }
            Some((k, i, None)) => {
                // Apply it now (if the model allows; else it will fail).
                let applied = match apply(&regs[k], &i, None) {
                    Step::Illegal => Some(None),
                    step => {
                        let before = regs[k].clone();
                        if let Step::New(v) = step {
                            regs[k] = v;
                        }
                        Some(Some(match &i {
                            Input::Read => Output::Read(before),
                            Input::Write(_) => Output::Write,
                            Input::Append(_) => Output::Append,
                            Input::Incr(_) => {
                                Output::Incr(regs[k].as_deref().unwrap().parse().unwrap())
                            }
                            Input::Cas { from, .. } => Output::Cas {
                                swapped: *from == before,
                            },
                        }))
                    }
                };
                busy[p] = Some((k, i, applied));
            }
            Some((k, i, Some(output))) => {
                let r = rng.below(10);
                let e = match output {
                    None => Event::fail(p as u64, time, KEYS[k], &i),
                    Some(_) if rng.below(100) < info_percent => {
                        Event::info(p as u64, time, KEYS[k], &i)
                    }
                    Some(_) if r == 1 && corrupt => Event::fail(p as u64, time, KEYS[k], &i),
                    Some(mut o) => {
                        if corrupt && (r == 2 || r == 3) {
                            o = match o {
                                Output::Read(_) => Output::Read(value(rng)),
                                Output::Incr(n) => Output::Incr(n + 1),
                                Output::Cas { swapped } => Output::Cas { swapped: !swapped },
                                o => o,
                            };
                        }
                        Event::ok(p as u64, time, KEYS[k], &i, &o)
                    }
                };
                events.push(e);
            }
        }
    }
    // Some operations stay outstanding: unknown. Fail some invocations that
    // were never applied, too (they are genuinely not applied).
    History::from_events(events, None).expect("well-formed")
}

/// Is there an order of all `ok` operations and some unknown ones, respecting
/// real time, in which every `ok` operation returns its output?
fn brute_force(ops: &[&Operation], placed: &mut Vec<bool>, state: &Option<String>) -> bool {
    let done = ops
        .iter()
        .zip(placed.iter())
        .all(|(o, &p)| p || o.output().is_none());
    if done {
        return true;
    }
    for i in 0..ops.len() {
        if placed[i] {
            continue;
        }
        // Every unplaced ok operation must not have returned before ops[i] was invoked.
        let blocked = ops.iter().zip(placed.iter()).any(|(a, &p)| {
            !p && a.output().is_some() && a.return_event.unwrap() < ops[i].call_event
        });
        if blocked {
            continue;
        }
        let next = match apply(state, &ops[i].input, ops[i].output()) {
            Step::Illegal => continue,
            Step::Same => state.clone(),
            Step::New(v) => v,
        };
        placed[i] = true;
        let ok = brute_force(ops, placed, &next);
        placed[i] = false;
        if ok {
            return true;
        }
    }
    false
}

fn brute_force_history(h: &History) -> bool {
    KEYS.iter().all(|key| {
        // Keep failed operations out but unknown reads in: the oracle does
        // not share the checker's shortcuts.
        let ops: Vec<&Operation> = h
            .operations()
            .iter()
            .filter(|o| o.key == *key && o.outcome != Outcome::Fail)
            .collect();
        brute_force(&ops, &mut vec![false; ops.len()], &None)
    })
}

/// Checks `rounds` random histories against the brute-force checker.
fn differential(seed: u64, rounds: usize, keys: u64, info_percent: u64, rwa: bool) {
    let mut rng = Rng(seed);
    let (mut yes, mut no) = (0, 0);
    for round in 0..rounds {
        let h = random_history(&mut rng, keys, info_percent, rwa);
        let expected = brute_force_history(&h);
        let got = check(&h);
        let agree = match got {
            CheckResult::Linearizable => expected,
            CheckResult::NotLinearizable { .. } => !expected,
            CheckResult::Unknown { .. } => false,
        };
        assert!(
            agree,
            "round {round}: brute force says {expected}, checker says {got}\n{:#?}",
            h.operations()
        );
        if expected {
            yes += 1;
        } else {
            no += 1;
        }
    }
    // The generator must exercise both verdicts.
    assert!(
        yes * 5 > rounds && no * 20 > rounds,
        "{yes} linearizable, {no} not"
    );
}

#[test]
fn agrees_with_brute_force_on_random_histories() {
    differential(0x9e37_79b9_7f4a_7c15, 5000, 2, 10, false);
}

#[test]
fn agrees_with_brute_force_on_histories_with_many_unknown_outcomes() {
    // One key, many operations whose outcome is unknown: exercises the
    // pruning of pairs dominated by explored ones.
    differential(0x2545_f491_4f6c_dd1d, 5000, 1, 40, false);
}

#[test]
fn agrees_with_brute_force_on_read_write_append_histories() {
    // Only reads, writes and appends: exercises the read lookahead and the
    // rule that unknown writes and appends go where the next read sees them.
    differential(0x5851_f42d_4c95_7f2d, 5000, 1, 30, true);
}
