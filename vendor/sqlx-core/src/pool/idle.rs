//! (agentry) The pool's idle connections as a stack: the connection released last is
//! handed out first (LIFO), as pgbouncer and HikariCP do. Upstream keeps them in a
//! FIFO queue, which spreads even one client's statements over every connection of the
//! pool in turn: each is a server process of its own whose caches have gone cold since
//! its last turn, and the server spends more CPU per statement (on Postgres, measured
//! by the project's `peers` benchmark at one client). With a stack, a light load keeps
//! reusing the same few connections, and the rest sit idle at the bottom until the
//! reaper closes them (`idle_timeout`).

use std::collections::VecDeque;
use std::sync::Mutex;

pub(super) struct IdleConns<T> {
    /// Most recently released at the back.
    stack: Mutex<VecDeque<T>>,
    capacity: usize,
}

impl<T> IdleConns<T> {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            stack: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
        }
    }

    fn stack(&self) -> std::sync::MutexGuard<'_, VecDeque<T>> {
        self.stack.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `idle` on top; gives it back if the stack is full.
    pub(super) fn push(&self, idle: T) -> Result<(), T> {
        let mut stack = self.stack();
        if stack.len() >= self.capacity {
            return Err(idle);
        }
        stack.push_back(idle);
        Ok(())
    }

    /// The connection released last.
    pub(super) fn pop(&self) -> Option<T> {
        self.stack().pop_back()
    }

    /// The connection idle the longest, if `expired` says so.
    pub(super) fn pop_oldest_if(&self, expired: impl FnOnce(&T) -> bool) -> Option<T> {
        let mut stack = self.stack();
        if expired(stack.front()?) {
            stack.pop_front()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::IdleConns;

    #[test]
    fn last_released_first_and_oldest_reaped() {
        let idle = IdleConns::new(3);
        for i in 1..=3 {
            assert!(idle.push(i).is_ok());
        }
        assert_eq!(idle.push(4), Err(4));
        assert_eq!(idle.pop(), Some(3));
        assert_eq!(idle.pop_oldest_if(|&i| i > 1), None);
        assert_eq!(idle.pop_oldest_if(|&i| i == 1), Some(1));
        assert_eq!(idle.pop(), Some(2));
        assert_eq!(idle.pop(), None);
        assert_eq!(idle.pop_oldest_if(|_| true), None);
    }
}
