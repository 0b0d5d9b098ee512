//! The instance status machine of design §4 (docs/design.md) (SetInstanceStatus, DeleteInstance) and
//! heartbeat liveness: a lapsed TTL turns an instance OFFLINE, a heartbeat brings it back.

use std::time::Duration;

use agentry_e2e::*;
use pb::InstanceStatus as S;
use serde_json::Value;
use tonic::Code;

/// A tenant with project `web` and agent `helper` (the [`schema_agent`]).
async fn setup(app: &TestApp) -> Tenant {
    let acme = app.tenant("acme").await;
    acme.project("web").await;
    acme.agent("helper", schema_agent()).await;
    acme
}

fn on_helper(acme: &Tenant, config: Value) -> pb::Instance {
    pb::Instance {
        agent: acme.agent_name("helper"),
        config: Some(to_struct(config)),
        ..Default::default()
    }
}

backend_tests!(
    status_follows_the_instance_state_machine,
    |app| async move {
        let acme = setup(&app).await;
        acme.try_instance("web", "bot", on_helper(&acme, json!({})))
            .await
            .unwrap();
        let path = [
            S::Initializing,
            S::Active,
            S::Busy,
            S::Active,
            S::Busy,
            S::Error,
            S::Initializing,
            S::Error,
        ];
        for status in path {
            let after = acme
                .set_status("web", "bot", status)
                .await
                .unwrap_or_else(|e| panic!("→ {status:?}: {e:?}"));
            assert_eq!(after.status, status as i32);
        }
        let mut request = req::set_status(&acme.instance_name("web", "bot"), S::Initializing);
        request.status_message = "restarting".into();
        let restarted = acme.admin.clone().set_instance_status(request).await.must();
        assert_eq!(restarted.status_message, "restarting");
        assert_eq!(acme.get_instance("web", "bot").await, restarted);
        let idle_to_error = acme
            .try_instance("web", "other", on_helper(&acme, json!({})))
            .await
            .unwrap();
        assert_eq!(idle_to_error.status, S::Idle as i32);
        assert_eq!(
            acme.set_status("web", "other", S::Error)
                .await
                .unwrap()
                .status,
            S::Error as i32
        );
    }
);

backend_tests!(setting_the_current_status_is_a_no_op, |app| async move {
    let acme = setup(&app).await;
    acme.try_instance("web", "bot", on_helper(&acme, json!({})))
        .await
        .unwrap();
    acme.set_status("web", "bot", S::Initializing)
        .await
        .unwrap();
    let active = acme.set_status("web", "bot", S::Active).await.unwrap();
    let again = acme
        .set_status("web", "bot", S::Active)
        .await
        .expect("same status is allowed");
    assert_eq!(again.status, S::Active as i32);
    assert_eq!(again.etag, active.etag, "nothing changed");
});

backend_tests!(
    illegal_transitions_are_failed_precondition,
    |app| async move {
        let acme = setup(&app).await;
        acme.try_instance("web", "bot", on_helper(&acme, json!({})))
            .await
            .unwrap();
        let refused =
            |result| assert_status(result, Code::FailedPrecondition, "INVALID_TRANSITION");
        for skip in [S::Active, S::Busy] {
            refused(acme.set_status("web", "bot", skip).await);
        }
        acme.set_status("web", "bot", S::Initializing)
            .await
            .unwrap();
        refused(acme.set_status("web", "bot", S::Idle).await);
        refused(acme.set_status("web", "bot", S::Busy).await);
        acme.set_status("web", "bot", S::Error).await.unwrap();
        for from_error in [S::Active, S::Busy, S::Idle] {
            refused(acme.set_status("web", "bot", from_error).await);
        }
        assert_eq!(
            acme.get_instance("web", "bot").await.status,
            S::Error as i32
        );
    }
);

backend_tests!(
    server_owned_statuses_cannot_be_requested,
    |app| async move {
        let acme = setup(&app).await;
        acme.try_instance("web", "bot", on_helper(&acme, json!({})))
            .await
            .unwrap();
        for status in [S::Offline, S::Terminated, S::Unspecified] {
            assert_status(
                acme.set_status("web", "bot", status).await,
                Code::InvalidArgument,
                "INVALID_ARGUMENT",
            );
        }
        assert_eq!(acme.get_instance("web", "bot").await.status, S::Idle as i32);
    }
);

backend_tests!(set_status_with_a_stale_etag_is_aborted, |app| async move {
    let acme = setup(&app).await;
    let created = acme
        .try_instance("web", "bot", on_helper(&acme, json!({})))
        .await
        .unwrap();
    let initializing = acme
        .set_status("web", "bot", S::Initializing)
        .await
        .unwrap();
    let mut admin = acme.admin.clone();
    let stale = req::set_status(&created.name, S::Error).etag(&created.etag);
    let status = assert_status(
        admin.set_instance_status(stale).await,
        Code::Aborted,
        "ETAG_MISMATCH",
    );
    assert_eq!(
        error_metadata(&status, "current_etag"),
        Some(initializing.etag.clone())
    );
    let current = req::set_status(&created.name, S::Active).etag(&initializing.etag);
    assert_eq!(
        admin.set_instance_status(current).await.must().status,
        S::Active as i32
    );
});

backend_tests!(deleted_instance_is_terminated_for_good, |app| async move {
    let acme = setup(&app).await;
    let bot = acme
        .try_instance("web", "bot", on_helper(&acme, json!({})))
        .await
        .unwrap();
    let mut admin = acme.admin.clone();
    let stale = admin
        .delete_instance(req::delete_instance(&bot.name).etag("stale"))
        .await;
    assert_status(stale, Code::Aborted, "ETAG_MISMATCH");
    let deleted = admin
        .delete_instance(req::delete_instance(&bot.name).etag(&bot.etag))
        .await
        .must();
    assert_eq!(deleted.status, S::Terminated as i32);
    assert_eq!(
        acme.get_instance("web", "bot").await.status,
        S::Terminated as i32
    );
    for status in [S::Initializing, S::Error, S::Idle] {
        let result = acme.set_status("web", "bot", status).await;
        assert_status(result, Code::FailedPrecondition, "INVALID_TRANSITION");
    }
    assert_status(
        acme.heartbeat("web", "bot").await,
        Code::FailedPrecondition,
        "INSTANCE_TERMINATED",
    );
    assert_eq!(
        acme.get_instance("web", "bot").await.status,
        S::Terminated as i32
    );
});

backend_tests!(
    lapsed_heartbeat_goes_offline_and_a_heartbeat_restores_status,
    |app| async move {
        let acme = setup(&app).await;
        for id in ["beating", "silent"] {
            let instance = pb::Instance {
                heartbeat_ttl: seconds(1),
                ..on_helper(&acme, json!({}))
            };
            acme.try_instance("web", id, instance).await.unwrap();
            acme.set_status("web", id, S::Initializing).await.unwrap();
            acme.set_status("web", id, S::Active).await.unwrap();
        }
        let beaten = acme.heartbeat("web", "beating").await.unwrap();
        assert!(beaten.last_heartbeat_time.is_some());
        assert_eq!(beaten.status, S::Active as i32);

        let offline = eventually(Duration::from_millis(2500), || async {
            let now = acme.get_instance("web", "beating").await;
            (now.status == S::Offline as i32).then_some(now)
        })
        .await
        .expect("OFFLINE within 2.5 s of a lapsed 1 s TTL");
        assert_eq!(offline.last_heartbeat_time, beaten.last_heartbeat_time);
        assert_eq!(
            acme.get_instance("web", "silent").await.status,
            S::Active as i32,
            "never-beating instances are not tracked"
        );

        let back = acme.heartbeat("web", "beating").await.unwrap();
        assert_eq!(
            back.status,
            S::Active as i32,
            "a heartbeat restores the previous status"
        );
        assert!(nanos(&back.last_heartbeat_time) > nanos(&beaten.last_heartbeat_time));
        assert_eq!(
            acme.get_instance("web", "beating").await.status,
            S::Active as i32
        );
    }
);
