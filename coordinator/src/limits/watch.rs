//! How many `WatchSaga` streams each token has open, capped per token: a slot is taken when
//! a watch starts and given back when its stream ends, however it ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::LimitError;

/// Open watch streams per token id.
#[derive(Debug, Clone)]
pub struct WatchSlots {
    open: Arc<Mutex<HashMap<String, usize>>>,
    max: usize,
}

/// One open watch; dropping it gives the slot back.
#[derive(Debug)]
pub struct WatchGuard {
    open: Arc<Mutex<HashMap<String, usize>>>,
    token_id: String,
}

impl WatchSlots {
    pub fn new(max_per_token: usize) -> Self {
        WatchSlots {
            open: Arc::default(),
            max: max_per_token,
        }
    }

    /// Takes a slot for `token_id`, or says the token already has `max` watches open.
    pub fn acquire(&self, token_id: &str) -> Result<WatchGuard, LimitError> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(token_id.to_owned()).or_default();
        if *n >= self.max {
            return Err(LimitError::Watches { max: self.max });
        }
        *n += 1;
        Ok(WatchGuard {
            open: self.open.clone(),
            token_id: token_id.to_owned(),
        })
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.token_id) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.token_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_per_token_and_come_back() {
        let slots = WatchSlots::new(2);
        let a1 = slots.acquire("a").unwrap();
        let _a2 = slots.acquire("a").unwrap();
        assert_eq!(
            slots.acquire("a").unwrap_err(),
            LimitError::Watches { max: 2 }
        );
        let _b = slots.acquire("b").unwrap();
        drop(a1);
        let _a3 = slots.acquire("a").unwrap();
    }
}
