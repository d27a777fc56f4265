//! Identity of a durable task that an agent runs for a saga step.

use berth_proto::v1 as pb;

/// `(saga id, step index, epoch)`: the same saga step under a newer claim has a higher epoch,
/// and an agent refuses an epoch lower than one it has already seen for that step.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskId {
    pub saga_id: String,
    pub step_index: u32,
    pub epoch: u64,
}

impl TaskId {
    /// The step this task belongs to, whatever the epoch.
    pub fn step_key(&self) -> (String, u32) {
        (self.saga_id.clone(), self.step_index)
    }
}

impl From<pb::TaskId> for TaskId {
    fn from(t: pb::TaskId) -> Self {
        Self {
            saga_id: t.saga_id,
            step_index: t.step_index,
            epoch: t.epoch,
        }
    }
}

impl From<TaskId> for pb::TaskId {
    fn from(t: TaskId) -> Self {
        Self {
            saga_id: t.saga_id,
            step_index: t.step_index,
            epoch: t.epoch,
        }
    }
}
