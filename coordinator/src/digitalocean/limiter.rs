//! The rate limiter shared by every caller of one DigitalOcean token: a token bucket for a
//! steady budget, first come first served (one saga's burst of calls cannot starve another's),
//! that also slows down on what the server says (`ratelimit-remaining`, `ratelimit-reset`, a
//! 429's `retry-after`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::retry::RateHeaders;

/// The client's own budget per token, below DigitalOcean's (250 a minute, 5,000 an hour).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateBudget {
    /// Steady rate, requests per minute.
    pub per_minute: u32,
    /// Requests that may go at once after a quiet spell.
    pub burst: u32,
    /// The longest the limiter pauses on the server's word (`retry-after`, `ratelimit-reset`).
    pub max_pause: Duration,
    /// The pause when the server says "none left" without a usable time (`ratelimit-reset` in
    /// the past, a 429 without `retry-after`).
    pub fallback_pause: Duration,
}

impl Default for RateBudget {
    fn default() -> Self {
        Self {
            per_minute: 240,
            burst: 10,
            max_pause: Duration::from_secs(60),
            fallback_pause: Duration::from_secs(1),
        }
    }
}

/// Counters for tests and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimiterStats {
    /// Permits handed out.
    pub acquired: u64,
    /// Permits that had to wait.
    pub waited: u64,
    /// Time spent waiting, summed over callers.
    pub waited_total: Duration,
    /// Pauses ordered by the server (429, `ratelimit-remaining: 0`).
    pub server_pauses: u64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled_at: Instant,
    paused_until: Option<Instant>,
}

/// See the module doc. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct RateLimiter {
    budget: RateBudget,
    /// The queue: tokio's mutex is fair, so waiters are served in arrival order, and only the
    /// head of the queue sleeps on the bucket.
    turn: tokio::sync::Mutex<()>,
    bucket: Mutex<Bucket>,
    acquired: AtomicU64,
    waited: AtomicU64,
    waited_ns: AtomicU64,
    server_pauses: AtomicU64,
}

impl RateLimiter {
    pub fn new(budget: RateBudget) -> Self {
        let budget = RateBudget {
            per_minute: budget.per_minute.max(1),
            burst: budget.burst.max(1),
            ..budget
        };
        Self {
            budget,
            turn: tokio::sync::Mutex::new(()),
            bucket: Mutex::new(Bucket {
                tokens: f64::from(budget.burst),
                refilled_at: Instant::now(),
                paused_until: None,
            }),
            acquired: AtomicU64::new(0),
            waited: AtomicU64::new(0),
            waited_ns: AtomicU64::new(0),
            server_pauses: AtomicU64::new(0),
        }
    }

    pub fn budget(&self) -> RateBudget {
        self.budget
    }

    fn per_second(&self) -> f64 {
        f64::from(self.budget.per_minute) / 60.0
    }

    /// Waits for a permit to send one request.
    pub async fn acquire(&self) {
        let start = Instant::now();
        let _turn = self.turn.lock().await;
        loop {
            let wait = {
                let mut b = self.bucket.lock().expect("limiter lock");
                let now = Instant::now();
                self.refill(&mut b, now);
                match b.paused_until {
                    Some(until) if until > now => until - now,
                    _ if b.tokens >= 1.0 => {
                        b.tokens -= 1.0;
                        break;
                    }
                    _ => Duration::from_secs_f64((1.0 - b.tokens) / self.per_second()),
                }
            };
            tokio::time::sleep(wait).await;
        }
        self.acquired.fetch_add(1, Ordering::Relaxed);
        let waited = start.elapsed();
        if waited >= Duration::from_millis(1) {
            self.waited.fetch_add(1, Ordering::Relaxed);
            self.waited_ns
                .fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
        }
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(b.refilled_at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_second()).min(f64::from(self.budget.burst));
        b.refilled_at = now;
    }

    /// Nobody sends for `for_` (capped at `max_pause`); the bucket empties.
    pub fn pause(&self, for_: Duration) {
        let for_ = for_.min(self.budget.max_pause);
        let now = Instant::now();
        let mut b = self.bucket.lock().expect("limiter lock");
        self.refill(&mut b, now);
        b.tokens = 0.0;
        let until = now + for_;
        if b.paused_until.is_none_or(|t| t < until) {
            b.paused_until = Some(until);
        }
        self.server_pauses.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes in a response's rate-limit headers. `retry-after` wins: everyone waits that long.
    /// Otherwise never more permits than `ratelimit-remaining` says are left (another
    /// coordinator may share the token). None left → pause until `ratelimit-reset` (Unix seconds
    /// at which the oldest counted request of the hour stops counting) when that is within
    /// `max_pause`; else only `fallback_pause`: a reset in the past has been seen, and a far one
    /// means the minute's burst limit is the cause, which the next 429's `retry-after` times.
    pub fn observe(&self, headers: &RateHeaders, wall_now: SystemTime) {
        if let Some(wait) = headers.retry_after {
            self.pause(wait);
            return;
        }
        let Some(remaining) = headers.remaining else {
            return;
        };
        if remaining == 0 {
            let now_secs = wall_now
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            let until_reset = headers
                .reset
                .map(|r| r as f64 - now_secs)
                .filter(|s| *s > 0.0)
                .map(Duration::from_secs_f64)
                .filter(|d| *d <= self.budget.max_pause);
            self.pause(until_reset.unwrap_or(self.budget.fallback_pause));
            return;
        }
        let mut b = self.bucket.lock().expect("limiter lock");
        let now = Instant::now();
        self.refill(&mut b, now);
        b.tokens = b.tokens.min(remaining as f64);
    }

    pub fn stats(&self) -> LimiterStats {
        LimiterStats {
            acquired: self.acquired.load(Ordering::Relaxed),
            waited: self.waited.load(Ordering::Relaxed),
            waited_total: Duration::from_nanos(self.waited_ns.load(Ordering::Relaxed)),
            server_pauses: self.server_pauses.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn budget(per_minute: u32, burst: u32) -> RateBudget {
        RateBudget {
            per_minute,
            burst,
            ..RateBudget::default()
        }
    }

    fn left(remaining: u64, reset: Option<u64>) -> RateHeaders {
        RateHeaders {
            remaining: Some(remaining),
            reset,
            ..RateHeaders::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_wins_over_a_far_reset() {
        let l = RateLimiter::new(budget(6000, 100));
        let wall = SystemTime::now();
        let far = wall.duration_since(UNIX_EPOCH).unwrap().as_secs() + 3000;
        l.observe(
            &RateHeaders {
                retry_after: Some(Duration::from_secs(2)),
                ..left(0, Some(far))
            },
            wall,
        );
        let start = Instant::now();
        l.acquire().await;
        let e = start.elapsed();
        assert!(
            e >= Duration::from_secs(2) && e < Duration::from_secs(3),
            "{e:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_far_reset_is_not_slept_on_either() {
        let l = RateLimiter::new(budget(6000, 100));
        let wall = SystemTime::now();
        let far = wall.duration_since(UNIX_EPOCH).unwrap().as_secs() + 1800;
        l.observe(&left(0, Some(far)), wall);
        let start = Instant::now();
        l.acquire().await;
        let e = start.elapsed();
        assert!(
            e >= Duration::from_secs(1) && e < Duration::from_secs(2),
            "{e:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn steady_rate_after_the_burst() {
        let l = RateLimiter::new(budget(60, 5));
        let start = Instant::now();
        for _ in 0..5 {
            l.acquire().await;
        }
        assert!(start.elapsed() < Duration::from_millis(10));
        for _ in 0..10 {
            l.acquire().await;
        }
        let e = start.elapsed();
        assert!(
            e >= Duration::from_secs(10) && e < Duration::from_millis(10_100),
            "{e:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_arrival_order() {
        let l = Arc::new(RateLimiter::new(budget(600, 1)));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..20 {
            let (l, order) = (l.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                l.acquire().await;
                order.lock().unwrap().push(i);
            }));
            // Make arrival order deterministic.
            tokio::task::yield_now().await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), (0..20).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_every_caller() {
        let l = RateLimiter::new(budget(6000, 100));
        l.pause(Duration::from_secs(3));
        let start = Instant::now();
        l.acquire().await;
        assert!(start.elapsed() >= Duration::from_secs(3));
        assert_eq!(l.stats().server_pauses, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_are_capped() {
        let l = RateLimiter::new(RateBudget {
            max_pause: Duration::from_secs(5),
            ..budget(6000, 100)
        });
        l.pause(Duration::from_secs(3600));
        let start = Instant::now();
        l.acquire().await;
        let e = start.elapsed();
        assert!(
            e >= Duration::from_secs(5) && e < Duration::from_secs(6),
            "{e:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_in_the_past_is_not_slept_on() {
        let l = RateLimiter::new(budget(6000, 100));
        let wall = SystemTime::now();
        let past = wall.duration_since(UNIX_EPOCH).unwrap().as_secs() - 100;
        l.observe(&left(0, Some(past)), wall);
        let start = Instant::now();
        l.acquire().await;
        let e = start.elapsed();
        assert!(
            e >= Duration::from_secs(1) && e < Duration::from_secs(2),
            "{e:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_permits_than_the_server_has_left() {
        let l = RateLimiter::new(budget(60, 50));
        l.observe(&left(2, None), SystemTime::now());
        let start = Instant::now();
        for _ in 0..3 {
            l.acquire().await;
        }
        assert!(start.elapsed() >= Duration::from_secs(1));
        let wall = SystemTime::now();
        let reset = wall.duration_since(UNIX_EPOCH).unwrap().as_secs() + 4;
        l.observe(&left(0, Some(reset)), wall);
        let start = Instant::now();
        l.acquire().await;
        assert!(
            start.elapsed() >= Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
    }
}
