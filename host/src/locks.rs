//! One policy for a lock whose holder panicked, in every process: the
//! request that panicked fails (its task ends with the panic); the next
//! one gets the guarded value back in order — a database connection with
//! any transaction the panic left open rolled back — instead of failing
//! for ever on a poisoned lock, or carrying on inside a transaction that
//! will never commit.

use std::sync::{Mutex, MutexGuard};

/// What a lock guards that can be put back in order after a panic while
/// it was held.
pub trait Recover {
    /// Undoes what a panic may have left half done (e.g. rolls back an
    /// open transaction).
    fn recover(&mut self);
}

/// Locks `mutex`; if a holder panicked, recovers the value first (see
/// the module) and clears the poison.
pub fn lock<T: Recover + ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => {
            let mut guard = poisoned.into_inner();
            guard.recover();
            mutex.clear_poison();
            tracing::warn!("a request panicked while holding a lock; its work was rolled back");
            guard
        }
    }
}

/// Plain data has nothing to undo: the value is as the panic left it, and
/// each of its writes was whole.
impl<K, V, S> Recover for std::collections::HashMap<K, V, S> {
    fn recover(&mut self) {}
}

impl<T> Recover for Option<T> {
    fn recover(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Conn {
        in_transaction: bool,
        rolled_back: u32,
    }

    impl Recover for Conn {
        fn recover(&mut self) {
            if self.in_transaction {
                self.in_transaction = false;
                self.rolled_back += 1;
            }
        }
    }

    #[test]
    fn a_panic_under_the_lock_is_recovered_once_and_the_next_holder_works() {
        let m = Mutex::new(Conn {
            in_transaction: false,
            rolled_back: 0,
        });
        let r = std::panic::catch_unwind(|| {
            let mut c = lock(&m);
            c.in_transaction = true;
            panic!("injected");
        });
        assert!(r.is_err());
        assert!(m.is_poisoned());
        {
            let c = lock(&m);
            assert!(!c.in_transaction, "rolled back");
            assert_eq!(c.rolled_back, 1);
        }
        assert!(!m.is_poisoned(), "the poison is cleared");
        assert_eq!(lock(&m).rolled_back, 1, "recovered once");
    }
}
