//! A linearizability checker (Wing & Gong's search, with memoisation) for one name of
//! the registry, modelled as a register holding its owner.
//!
//! Each operation has the time it was called and, if its answer came, the time it
//! returned and the answer. An operation without an answer (its fate unknown) may take
//! effect at any point after its call, or never. A history is linearizable if the
//! operations can be put in one order that respects real time (an operation that
//! returned before another was called comes first) and in which each answer is what the
//! model gives. Names are independent, so each name's history is checked on its own.

use std::collections::HashSet;

use cmesh_common::Address;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Register { caller: Address },
    Transfer { caller: Address, to: Address },
    Resolve,
}

/// What an operation answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Done,
    Taken,
    NotOwner,
    NotFound,
    Owner(Address),
}

#[derive(Debug, Clone)]
pub struct Operation {
    pub call: Call,
    pub called_at: u64,
    /// When it returned and what it answered; `None` when its fate is unknown.
    pub returned: Option<(u64, Answer)>,
}

/// The model: the owner of the name, if registered.
fn step(owner: Option<Address>, call: Call) -> (Option<Address>, Answer) {
    match (call, owner) {
        (Call::Register { caller }, None) => (Some(caller), Answer::Done),
        (Call::Register { .. }, Some(owner)) => (Some(owner), Answer::Taken),
        (Call::Transfer { .. }, None) => (None, Answer::NotFound),
        (Call::Transfer { caller, to }, Some(owner)) if owner == caller => (Some(to), Answer::Done),
        (Call::Transfer { .. }, Some(owner)) => (Some(owner), Answer::NotOwner),
        (Call::Resolve, None) => (None, Answer::NotFound),
        (Call::Resolve, Some(owner)) => (Some(owner), Answer::Owner(owner)),
    }
}

/// Whether `history` (at most 128 operations) is linearizable from an unregistered name.
pub fn is_linearizable(history: &[Operation]) -> bool {
    assert!(
        history.len() <= 128,
        "the checker takes at most 128 operations per name"
    );
    let mut seen = HashSet::new();
    search(history, 0, None, &mut seen)
}

fn search(
    history: &[Operation],
    done: u128,
    owner: Option<Address>,
    seen: &mut HashSet<(u128, Option<Address>)>,
) -> bool {
    let pending = |i: usize| done & (1u128 << i) == 0;
    // Finished once every operation that returned is placed; the rest may never have run.
    if (0..history.len()).all(|i| !pending(i) || history[i].returned.is_none()) {
        return true;
    }
    if !seen.insert((done, owner)) {
        return false;
    }
    // An operation may go next only if no pending one returned before it was called.
    let first_return = (0..history.len())
        .filter(|&i| pending(i))
        .filter_map(|i| history[i].returned.map(|(at, _)| at))
        .min()
        .unwrap_or(u64::MAX);
    for (i, operation) in history.iter().enumerate() {
        if !pending(i) || operation.called_at > first_return {
            continue;
        }
        let (next, answer) = step(owner, operation.call);
        if operation.returned.is_some_and(|(_, expected)| expected != answer) {
            continue;
        }
        if search(history, done | (1u128 << i), next, seen) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(call: Call, called_at: u64, returned: Option<(u64, Answer)>) -> Operation {
        Operation {
            call,
            called_at,
            returned,
        }
    }

    #[test]
    fn the_checker_accepts_real_orders_and_refuses_impossible_ones() {
        let a = Address::from(1);
        let b = Address::from(2);
        // Two concurrent registrations: either may win.
        let racing = [
            op(Call::Register { caller: a }, 0, Some((10, Answer::Taken))),
            op(Call::Register { caller: b }, 1, Some((9, Answer::Done))),
            op(Call::Resolve, 11, Some((12, Answer::Owner(b)))),
        ];
        assert!(is_linearizable(&racing));
        // A read after the write returned must see it.
        let stale = [
            op(Call::Register { caller: a }, 0, Some((5, Answer::Done))),
            op(Call::Resolve, 6, Some((7, Answer::NotFound))),
        ];
        assert!(!is_linearizable(&stale));
        // Both registrations cannot succeed.
        let twice = [
            op(Call::Register { caller: a }, 0, Some((5, Answer::Done))),
            op(Call::Register { caller: b }, 1, Some((6, Answer::Done))),
        ];
        assert!(!is_linearizable(&twice));
        // A write of unknown fate may explain a later read, or be left out.
        let unknown = [
            op(Call::Register { caller: a }, 0, None),
            op(Call::Resolve, 10, Some((11, Answer::Owner(a)))),
            op(Call::Transfer { caller: a, to: b }, 12, Some((13, Answer::Done))),
        ];
        assert!(is_linearizable(&unknown));
        let left_out = [
            op(Call::Register { caller: a }, 0, None),
            op(Call::Resolve, 10, Some((11, Answer::NotFound))),
        ];
        assert!(is_linearizable(&left_out));
    }
}
