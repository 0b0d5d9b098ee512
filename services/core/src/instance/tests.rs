use serde_json::json;

use super::*;
use crate::status::InstanceStatus::*;

const NOW: UnixMicros = 5_000_000;

fn new_instance() -> NewInstance {
    NewInstance {
        name: InstanceName {
            workspace: "w".into(),
            project: "p".into(),
            instance: "i".into(),
        },
        display_name: "I".into(),
        agent: AgentName {
            workspace: "w".into(),
            agent: "a".into(),
        },
        agent_revision: None,
        config: json!({"x": 1}),
        heartbeat_ttl_ms: 10,
        labels: Labels::new(),
    }
}

fn instance() -> Instance {
    Instance::new(&new_instance(), 2, json!({"x": 1, "d": 0}), NOW - 100)
}

#[test]
fn a_new_instance_is_idle_at_etag_one() {
    let i = instance();
    assert_eq!((i.status, i.etag, i.agent_revision), (Idle, 1, 2));
    assert_eq!(i.agent, "a");
    assert_eq!(i.heartbeat_expire_time(), None);
    assert_eq!(i.name().to_string(), "workspaces/w/projects/p/instances/i");
}

#[test]
fn the_quota_counts_live_instances() {
    let project = new_instance().name.project();
    check_instance_quota(&project, 2, 3).unwrap();
    let err = check_instance_quota(&project, 3, 3).unwrap_err();
    assert_eq!(err.reason(), "QUOTA_EXCEEDED");
}

#[test]
fn a_change_moves_the_etag_and_the_time_forward() {
    let mut i = instance();
    i.touch(0);
    assert_eq!((i.etag, i.update_time), (2, NOW - 99));
    i.touch(NOW);
    assert_eq!((i.etag, i.update_time), (3, NOW));
}

#[test]
fn set_status_follows_the_machine() {
    let mut i = instance();
    assert!(i.set_status(Initializing, "boot", NOW).unwrap());
    assert_eq!(
        (i.status, i.status_message.as_str(), i.etag),
        (Initializing, "boot", 2)
    );
    assert!(!i.set_status(Initializing, "boot", NOW).unwrap());
    assert_eq!(i.etag, 2);
    assert!(i.set_status(Initializing, "again", NOW).unwrap());
    let err = i.set_status(Busy, "", NOW).unwrap_err();
    assert_eq!(err.reason(), "INVALID_TRANSITION");
    assert_eq!(i.status, Initializing);
}

#[test]
fn a_heartbeat_restores_the_status_before_offline() {
    let mut i = instance();
    i.status = Offline;
    i.heartbeat(Some(Busy), NOW).unwrap();
    assert_eq!((i.status, i.etag), (Busy, 2));
    assert_eq!(i.last_heartbeat_time, Some(NOW));
    assert_eq!(i.heartbeat_expire_time(), Some(NOW + 10_000));
    let mut i = instance();
    i.status = Offline;
    i.heartbeat(None, NOW).unwrap();
    assert_eq!(i.status, Idle);
}

#[test]
fn a_heartbeat_of_a_live_instance_is_no_change() {
    let mut i = instance();
    i.status = Active;
    i.heartbeat(None, NOW).unwrap();
    assert_eq!((i.status, i.etag), (Active, 1));
}

#[test]
fn a_terminated_instance_takes_no_heartbeat_and_no_patch() {
    let mut i = instance();
    assert!(i.terminate(NOW));
    assert!(!i.terminate(NOW));
    assert_eq!(i.etag, 2);
    assert_eq!(i.heartbeat_expire_time(), None);
    let err = i.heartbeat(None, NOW).unwrap_err();
    assert_eq!(err.reason(), "INSTANCE_TERMINATED");
    let err = InstancePatch::default().apply(&mut i).unwrap_err();
    assert_eq!(err.reason(), "INSTANCE_TERMINATED");
}

#[test]
fn a_patch_of_plain_fields_resolves_nothing() {
    let mut i = instance();
    let patch = InstancePatch {
        display_name: Some("J".into()),
        heartbeat_ttl_ms: Some(99),
        ..Default::default()
    };
    assert_eq!(patch.apply(&mut i).unwrap(), None);
    assert_eq!((i.display_name.as_str(), i.heartbeat_ttl_ms), ("J", 99));
}

#[test]
fn a_patch_of_the_config_or_revision_resolves_it_again() {
    let mut i = instance();
    let patch = InstancePatch {
        config: Some(json!({"y": 2})),
        ..Default::default()
    };
    assert_eq!(patch.apply(&mut i).unwrap(), Some(Some(2)));
    assert_eq!(i.config, json!({"y": 2}));
    let latest = InstancePatch {
        agent_revision: Some(None),
        ..Default::default()
    };
    assert_eq!(latest.apply(&mut i).unwrap(), Some(None));
    let pinned = InstancePatch {
        agent_revision: Some(Some(1)),
        ..Default::default()
    };
    assert_eq!(pinned.apply(&mut i).unwrap(), Some(Some(1)));
}
