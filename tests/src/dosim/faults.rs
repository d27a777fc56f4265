//! Injectable faults, per operation: an error status, a slow answer, a dropped connection or a
//! 429, before the simulator acts on the request or after (the work done, the answer lost).

use std::time::Duration;

/// What goes wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer this status with DigitalOcean's error body.
    Status(u16),
    /// Answer this much later (a client with a shorter timeout sees a timeout).
    Delay(Duration),
    /// Close the connection without an answer.
    Drop,
    /// Answer 429 with `retry-after: secs`.
    RateLimited { retry_after_secs: u64 },
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The operationId it applies to (`droplets_get`); `None`: every operation.
    pub op: Option<String>,
    pub kind: FaultKind,
    /// After the simulator did the work (a lost answer to a create that happened).
    pub after_processing: bool,
    /// How many requests it hits; `None`: all of them until cleared.
    pub times: Option<u32>,
}

impl Fault {
    fn new(op: &str, kind: FaultKind) -> Self {
        Self {
            op: (op != "*").then(|| op.to_owned()),
            kind,
            after_processing: false,
            times: Some(1),
        }
    }

    /// `op` answers `status` (`"*"`: every operation). Once, unless `.times(n)` / `.always()`.
    pub fn status(op: &str, status: u16) -> Self {
        Self::new(op, FaultKind::Status(status))
    }

    pub fn delay(op: &str, delay: Duration) -> Self {
        Self::new(op, FaultKind::Delay(delay))
    }

    pub fn drop_connection(op: &str) -> Self {
        Self::new(op, FaultKind::Drop)
    }

    pub fn rate_limited(op: &str, retry_after_secs: u64) -> Self {
        Self::new(op, FaultKind::RateLimited { retry_after_secs })
    }

    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    pub fn always(mut self) -> Self {
        self.times = None;
        self
    }

    /// Do the work first, then fail the answer.
    pub fn after_processing(mut self) -> Self {
        self.after_processing = true;
        self
    }
}

/// The faults waiting to hit.
#[derive(Debug, Default)]
pub struct Faults {
    pending: Vec<Fault>,
}

impl Faults {
    pub fn add(&mut self, fault: Fault) {
        self.pending.push(fault);
    }

    pub fn clear(&mut self) {
        self.pending.clear();
    }

    /// The first fault for `op` at this stage, used up by one.
    pub fn take(&mut self, op: &str, after_processing: bool) -> Option<FaultKind> {
        let i = self.pending.iter().position(|f| {
            f.after_processing == after_processing
                && f.op.as_deref().is_none_or(|o| o == op)
                && f.times != Some(0)
        })?;
        let f = &mut self.pending[i];
        let kind = f.kind.clone();
        if let Some(n) = &mut f.times {
            *n -= 1;
            if *n == 0 {
                self.pending.remove(i);
            }
        }
        Some(kind)
    }
}
