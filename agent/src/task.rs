//! Durable tasks the coordinator assigns for saga steps. This agent runs none yet: it refuses
//! every kind with a permanent failure so the saga does not wait for it.

use berth_proto::v1 as pb;
use berth_shared::TaskId;

/// The result that refuses `assignment`.
pub(crate) fn refuse(assignment: pb::TaskAssignment) -> pb::TaskResult {
    let task = assignment.id.clone().map(TaskId::from);
    tracing::warn!(?task, kind = %assignment.kind, "refusing a task of an unsupported kind");
    pb::TaskResult {
        id: assignment.id,
        ok: false,
        output_json: String::new(),
        error: format!(
            "task kind {:?} is not supported by this agent yet",
            assignment.kind
        ),
        retryable: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_names_the_kind_and_is_permanent() {
        let id = pb::TaskId {
            saga_id: "s1".into(),
            step_index: 2,
            epoch: 3,
        };
        let r = refuse(pb::TaskAssignment {
            id: Some(id.clone()),
            kind: "warm_snapshot".into(),
            inputs_json: "{}".into(),
        });
        assert_eq!(r.id, Some(id));
        assert!(!r.ok && !r.retryable);
        assert_eq!(
            r.error,
            "task kind \"warm_snapshot\" is not supported by this agent yet"
        );
    }
}
