//! Which apps and stacks an archive task is using: one create or restore per app directory
//! and per stack at a time on this agent.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::ArchiveError;

/// The set of busy names (`app <name>`, `stack <name>`); cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct Busy(Arc<Mutex<HashSet<String>>>);

impl Busy {
    /// Marks `what` busy until the lock drops.
    pub fn lock(&self, what: String) -> Result<BusyLock, ArchiveError> {
        let mut busy = self.0.lock().expect("busy set poisoned");
        if !busy.insert(what.clone()) {
            return Err(ArchiveError::Busy { what });
        }
        Ok(BusyLock {
            busy: self.0.clone(),
            what,
        })
    }
}

/// An app directory or a stack in use by one create or restore.
pub(crate) struct BusyLock {
    busy: Arc<Mutex<HashSet<String>>>,
    what: String,
}

impl Drop for BusyLock {
    fn drop(&mut self) {
        if let Ok(mut busy) = self.busy.lock() {
            busy.remove(&self.what);
        }
    }
}
