//! A retry budget: a client's calls that failed on a transient error run
//! again, but retries stay a bounded share of its traffic, so a struggling
//! cluster is not sent a storm of them (tower's `TpsBudget`, as an
//! interceptor).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::hooks::{AfterCall, CallInfo, CallOutcome, Decision, Interceptor};
use crate::Error;

/// Slots the budget's window is cut into: deposits age out a tenth of the
/// window at a time.
const SLOTS: usize = 10;

/// One retry's cost, in the budget's fixed-point units.
const RETRY: u64 = 1_000;

/// Lets a failed call run again while retries stay under a share of calls.
///
/// Every call deposits `ratio` of a retry; a retry withdraws one. Deposits
/// count for `ttl`, and a reserve of `min_per_sec` retries a second (over
/// `ttl`) lets a client that makes few calls still retry. Install one per
/// client: every clone of the `Arc` shares the budget.
///
/// A call runs again only if it failed on a transient error (the node went
/// down mid-call, was overloaded, or could not be reached), its method is
/// idempotent or it ran nowhere, and its deadline has time left: the run
/// again gets what is left of it. Retries are immediate; the budget, not a
/// back-off, is what keeps them few.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use malla_runtime::RetryBudget;
///
/// // At most 20 % of calls retried, plus 10 retries a second.
/// let budget = Arc::new(RetryBudget::new(Duration::from_secs(10), 10, 0.2));
/// # let _ = budget;
/// // client.with_interceptor(budget.clone());
/// ```
#[derive(Debug)]
pub struct RetryBudget {
    window: Mutex<Window>,
    slot_len: Duration,
    reserve: u64,
    deposit: u64,
}

impl Default for RetryBudget {
    /// Tower's defaults: a 10 s window, 10 retries a second, 20 % of calls.
    fn default() -> Self {
        RetryBudget::new(Duration::from_secs(10), 10, 0.2)
    }
}

impl RetryBudget {
    /// A budget of `ratio` retries per call (0 to 1000) over `ttl` (1 s to
    /// 60 s; values outside are clamped), plus `min_per_sec` retries a second.
    pub fn new(ttl: Duration, min_per_sec: u32, ratio: f32) -> Self {
        let ttl = ttl.clamp(Duration::from_secs(1), Duration::from_secs(60));
        let ratio = if ratio.is_finite() {
            ratio.clamp(0.0, 1000.0)
        } else {
            0.0
        };
        RetryBudget {
            window: Mutex::new(Window::new(Instant::now())),
            slot_len: ttl / SLOTS as u32,
            reserve: u64::from(min_per_sec) * ttl.as_secs() * RETRY,
            deposit: (f64::from(ratio) * RETRY as f64) as u64,
        }
    }

    /// Counts a call.
    pub fn deposit(&self) {
        self.deposit_at(Instant::now());
    }

    /// Takes one retry from the budget, if it has one.
    pub fn withdraw(&self) -> bool {
        self.withdraw_at(Instant::now())
    }

    fn deposit_at(&self, now: Instant) {
        let mut window = self.lock();
        window.advance(now, self.slot_len);
        window.head().deposited += self.deposit;
    }

    fn withdraw_at(&self, now: Instant) -> bool {
        let mut window = self.lock();
        window.advance(now, self.slot_len);
        let (deposited, withdrawn) = window.totals();
        if self.reserve + deposited < withdrawn + RETRY {
            return false;
        }
        window.head().withdrawn += RETRY;
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        // The window is counts only: one left half-updated by a panic is
        // still a window.
        self.window.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Interceptor for RetryBudget {
    fn before_call(&self, call: &mut CallInfo<'_>) -> Decision {
        if call.retries() == 0 {
            self.deposit();
        }
        Decision::Continue
    }

    fn after_call(&self, call: &CallInfo<'_>, outcome: &CallOutcome<'_>) -> AfterCall {
        let Some(error) = outcome.error() else {
            return AfterCall::Finish;
        };
        let may_run_again = call.method().is_idempotent() || !outcome.ran();
        if may_run_again && is_transient(error) && self.withdraw() {
            AfterCall::Retry
        } else {
            AfterCall::Finish
        }
    }
}

/// An error another run may not meet: a node that went down or was busy,
/// one that could not be reached. A timeout is not one (the deadline is
/// spent), nor is an answer the service gave.
fn is_transient(error: &Error) -> bool {
    matches!(
        error,
        Error::NodeDown { .. } | Error::Overloaded { .. } | Error::Connect { .. } | Error::Io(_)
    )
}

#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    deposited: u64,
    withdrawn: u64,
}

/// The last `SLOTS` slots of deposits and withdrawals; `head` is the
/// current one, begun at `head_started`.
#[derive(Debug)]
struct Window {
    slots: [Slot; SLOTS],
    head: usize,
    head_started: Instant,
}

impl Window {
    fn new(now: Instant) -> Self {
        Window {
            slots: [Slot::default(); SLOTS],
            head: 0,
            head_started: now,
        }
    }

    /// Moves the head to the slot `now` falls in, emptying the slots it
    /// passes (their counts have aged out).
    fn advance(&mut self, now: Instant, slot_len: Duration) {
        let elapsed = now.saturating_duration_since(self.head_started);
        let passed = (elapsed.as_nanos() / slot_len.as_nanos().max(1)).min(u128::from(u32::MAX)) as u32;
        if passed == 0 {
            return;
        }
        for _ in 0..(passed as usize).min(SLOTS) {
            self.head = (self.head + 1) % SLOTS;
            self.slots[self.head] = Slot::default();
        }
        self.head_started += slot_len * passed;
    }

    fn head(&mut self) -> &mut Slot {
        &mut self.slots[self.head]
    }

    fn totals(&self) -> (u64, u64) {
        self.slots
            .iter()
            .fold((0, 0), |(d, w), slot| (d + slot.deposited, w + slot.withdrawn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(min_per_sec: u32, ratio: f32) -> (RetryBudget, Instant) {
        let budget = RetryBudget::new(Duration::from_secs(10), min_per_sec, ratio);
        let start = budget.lock().head_started;
        (budget, start)
    }

    #[test]
    fn retries_are_a_share_of_calls() {
        let (budget, now) = make(0, 0.2);
        assert!(!budget.withdraw_at(now), "no calls, no reserve: no retry");
        for _ in 0..10 {
            budget.deposit_at(now);
        }
        assert!(budget.withdraw_at(now));
        assert!(budget.withdraw_at(now));
        assert!(!budget.withdraw_at(now), "10 calls at 20 % pay for 2 retries");
    }

    #[test]
    fn the_reserve_lets_a_quiet_client_retry() {
        let (budget, now) = make(1, 0.0);
        let granted = (0..20).filter(|_| budget.withdraw_at(now)).count();
        assert_eq!(granted, 10, "1 a second over a 10 s window");
    }

    #[test]
    fn deposits_age_out_after_the_window() {
        let (budget, start) = make(0, 1.0);
        for _ in 0..5 {
            budget.deposit_at(start);
        }
        // Within the window they count...
        assert!(budget.withdraw_at(start + Duration::from_secs(9)));
        // ...past it they do not, while the withdrawal at 9 s still does.
        assert!(!budget.withdraw_at(start + Duration::from_secs(11)));
        budget.deposit_at(start + Duration::from_secs(11));
        assert!(!budget.withdraw_at(start + Duration::from_secs(11)));
        // At 20 s the withdrawal has aged out and the deposit at 11 s not.
        assert!(budget.withdraw_at(start + Duration::from_secs(20)));
    }

    #[test]
    fn withdrawals_age_out_too() {
        let (budget, start) = make(0, 1.0);
        for second in 0..30 {
            let now = start + Duration::from_secs(second);
            budget.deposit_at(now);
            assert!(budget.withdraw_at(now), "one call, one retry, second {second}");
            assert!(!budget.withdraw_at(now));
        }
    }

    #[test]
    fn a_long_pause_empties_the_window() {
        let (budget, start) = make(0, 1.0);
        budget.deposit_at(start);
        assert!(!budget.withdraw_at(start + Duration::from_secs(86_400 * 365)));
    }

    #[test]
    fn odd_ratios_are_clamped() {
        let (budget, now) = make(0, f32::NAN);
        budget.deposit_at(now);
        assert!(!budget.withdraw_at(now));
        let (budget, now) = make(0, -3.0);
        budget.deposit_at(now);
        assert!(!budget.withdraw_at(now));
    }

    #[test]
    fn transient_errors_only() {
        let node = crate::NodeId::from("n1");
        assert!(is_transient(&Error::NodeDown { node: node.clone() }));
        assert!(!is_transient(&Error::Timeout {
            service: "S".into(),
            method: "m".into(),
            timeout: Duration::from_secs(1),
        }));
        assert!(!is_transient(&Error::Remote {
            service: "S".into(),
            method: "m".into(),
            node,
            message: "panicked".into(),
        }));
    }
}
