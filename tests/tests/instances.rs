//! Instances: configs merged over the revision's defaults and validated against its
//! schema, pinned revisions, heartbeat TTL bounds, the per-project quota and filters.

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

fn effective(instance: &pb::Instance) -> Value {
    from_struct(
        instance
            .effective_config
            .as_ref()
            .expect("effective_config is set"),
    )
}

backend_tests!(
    new_instance_is_idle_with_config_merged_over_defaults,
    |app| async move {
        let acme = setup(&app).await;
        let created = acme
            .try_instance("web", "bot", on_helper(&acme, json!({"temperature": 0.5})))
            .await
            .unwrap();
        assert_eq!(created.name, acme.instance_name("web", "bot"));
        assert_eq!(created.status, S::Idle as i32);
        assert_eq!(created.agent, acme.agent_name("helper"));
        assert_eq!(created.agent_revision, 1, "0 pins the latest revision");
        assert_eq!(
            from_struct(created.config.as_ref().unwrap()),
            json!({"temperature": 0.5})
        );
        assert_eq!(
            effective(&created),
            json!({"model": "small", "temperature": 0.5})
        );
        assert_eq!(created.heartbeat_ttl, seconds(30), "default heartbeat TTL");
        assert!(created.last_heartbeat_time.is_none());
        assert!(!created.etag.is_empty() && created.create_time.is_some());
        assert_eq!(acme.get_instance("web", "bot").await, created);
    }
);

backend_tests!(
    config_violating_the_schema_is_invalid_config,
    |app| async move {
        let acme = setup(&app).await;
        let result = acme
            .try_instance("web", "hot", on_helper(&acme, json!({"temperature": 5.0})))
            .await;
        assert_invalid(result, "INVALID_CONFIG", "instance.config/temperature");
        let result = acme
            .try_instance("web", "typed", on_helper(&acme, json!({"model": 3.0})))
            .await;
        assert_invalid(result, "INVALID_CONFIG", "instance.config/model");
        // A merge-patch null removes the default, so the required field goes missing.
        let result = acme
            .try_instance("web", "nomodel", on_helper(&acme, json!({"model": null})))
            .await;
        assert_status(result, Code::InvalidArgument, "INVALID_CONFIG");
        let list = acme
            .admin
            .clone()
            .list_instances(req::list_instances(&acme.project_name("web")))
            .await;
        assert!(list.must().instances.is_empty(), "nothing was written");
    }
);

backend_tests!(instance_pins_the_revision_it_asked_for, |app| async move {
    let acme = setup(&app).await;
    // Revision 2 allows temperatures up to 10 and defaults to a bigger model.
    let change = pb::Agent {
        name: acme.agent_name("helper"),
        config_schema: Some(to_struct(
            json!({"type": "object", "properties": {"temperature": {"maximum": 10}}}),
        )),
        default_config: Some(to_struct(json!({"model": "large"}))),
        ..Default::default()
    };
    let paths = ["config_schema", "default_config"];
    acme.admin
        .clone()
        .update_agent(req::update_agent(change, &paths))
        .await
        .must();

    let latest = acme
        .try_instance("web", "new", on_helper(&acme, json!({"temperature": 5.0})))
        .await
        .unwrap();
    assert_eq!(latest.agent_revision, 2);
    assert_eq!(
        effective(&latest),
        json!({"model": "large", "temperature": 5.0})
    );

    let pinned = |config| pb::Instance {
        agent_revision: 1,
        ..on_helper(&acme, config)
    };
    let result = acme
        .try_instance("web", "old", pinned(json!({"temperature": 5.0})))
        .await;
    assert_invalid(result, "INVALID_CONFIG", "instance.config/temperature");
    let old = acme
        .try_instance("web", "old", pinned(json!({})))
        .await
        .unwrap();
    assert_eq!(old.agent_revision, 1);
    assert_eq!(
        effective(&old),
        json!({"model": "small", "temperature": 1.0})
    );

    let result = acme
        .try_instance(
            "web",
            "future",
            pb::Instance {
                agent_revision: 3,
                ..on_helper(&acme, json!({}))
            },
        )
        .await;
    assert!(
        result.is_err(),
        "a revision that does not exist cannot be pinned: {result:?}"
    );
});

backend_tests!(update_instance_revalidates_config, |app| async move {
    let acme = setup(&app).await;
    let created = acme
        .try_instance("web", "bot", on_helper(&acme, json!({})))
        .await
        .unwrap();
    let update = |config| {
        req::update_instance(
            pb::Instance {
                config: Some(to_struct(config)),
                ..created.clone()
            },
            &["config"],
        )
    };
    let mut admin = acme.admin.clone();
    let bad = admin
        .update_instance(update(json!({"temperature": 3.0})))
        .await;
    assert_invalid(bad, "INVALID_CONFIG", "instance.config/temperature");
    assert_eq!(
        acme.get_instance("web", "bot").await,
        created,
        "a rejected update writes nothing"
    );

    let good = admin
        .update_instance(update(json!({"model": "tiny"})))
        .await
        .must();
    assert_eq!(
        effective(&good),
        json!({"model": "tiny", "temperature": 1.0})
    );
    assert_ne!(good.etag, created.etag);
    assert!(nanos(&good.update_time) > nanos(&created.update_time));
    assert_eq!(good.status, S::Idle as i32);

    let stale = admin
        .update_instance(update(json!({"model": "other"})))
        .await;
    let status = assert_status(stale, Code::Aborted, "ETAG_MISMATCH");
    assert_eq!(error_metadata(&status, "current_etag"), Some(good.etag));
});

backend_tests!(
    heartbeat_ttl_must_be_between_a_second_and_a_day,
    |app| async move {
        let acme = setup(&app).await;
        let ttl = |seconds, nanos| Some(prost_types::Duration { seconds, nanos });
        for heartbeat_ttl in [ttl(0, 500_000_000), ttl(86_401, 0), ttl(-1, 0)] {
            let instance = pb::Instance {
                heartbeat_ttl,
                ..on_helper(&acme, json!({}))
            };
            assert_status(
                acme.try_instance("web", "bot", instance).await,
                Code::InvalidArgument,
                "INVALID_ARGUMENT",
            );
        }
        for (id, secs) in [("fast", 1), ("slow", 86_400)] {
            let instance = pb::Instance {
                heartbeat_ttl: seconds(secs),
                ..on_helper(&acme, json!({}))
            };
            assert_eq!(
                acme.try_instance("web", id, instance)
                    .await
                    .unwrap()
                    .heartbeat_ttl,
                seconds(secs)
            );
        }
    }
);

backend_tests!(
    instance_quota_counts_live_instances_per_project,
    |app| async move {
        let quotas = pb::Quotas {
            max_instances_per_project: 2,
            ..Default::default()
        };
        let acme = app.tenant_with_quotas("acme", quotas).await;
        acme.project("web").await;
        acme.project("api").await;
        acme.agent("helper", schema_agent()).await;
        acme.try_instance("web", "one", on_helper(&acme, json!({})))
            .await
            .unwrap();
        acme.try_instance("web", "two", on_helper(&acme, json!({})))
            .await
            .unwrap();
        assert_quota_exceeded(
            acme.try_instance("web", "three", on_helper(&acme, json!({})))
                .await,
        );

        let mut admin = acme.admin.clone();
        let other = req::create_instance(
            &acme.project_name("api"),
            "one",
            on_helper(&acme, json!({})),
        );
        admin
            .create_instance(other)
            .await
            .expect("the quota is per project");

        admin
            .delete_instance(req::delete_instance(&acme.instance_name("web", "one")))
            .await
            .must();
        acme.try_instance("web", "three", on_helper(&acme, json!({})))
            .await
            .expect("a terminated instance frees its slot");
    }
);

backend_tests!(
    instance_of_a_missing_agent_or_project_is_not_found,
    |app| async move {
        let acme = setup(&app).await;
        let instance = pb::Instance {
            agent: acme.agent_name("nobody"),
            ..Default::default()
        };
        assert_status(
            acme.try_instance("web", "bot", instance).await,
            Code::NotFound,
            "RESOURCE_NOT_FOUND",
        );
        let request = req::create_instance(
            &acme.project_name("nope"),
            "bot",
            on_helper(&acme, json!({})),
        );
        let result = acme.admin.clone().create_instance(request).await;
        assert_status(result, Code::NotFound, "RESOURCE_NOT_FOUND");
        let bad_agent = pb::Instance {
            agent: "agents/helper".into(),
            ..Default::default()
        };
        assert_invalid(
            acme.try_instance("web", "bot", bad_agent).await,
            "INVALID_ARGUMENT",
            "instance.agent",
        );
    }
);

backend_tests!(
    list_instances_filters_by_status_and_agent,
    |app| async move {
        let acme = setup(&app).await;
        acme.agent("other", simple_agent()).await;
        for id in ["a", "b", "c"] {
            acme.try_instance("web", id, on_helper(&acme, json!({})))
                .await
                .unwrap();
        }
        acme.try_instance(
            "web",
            "d",
            pb::Instance {
                agent: acme.agent_name("other"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        for id in ["b", "d"] {
            acme.set_status("web", id, S::Initializing).await.unwrap();
            acme.set_status("web", id, S::Active).await.unwrap();
        }

        let mut admin = acme.admin.clone();
        let mut ids = async |filter: &str| -> Vec<String> {
            let request = pb::ListInstancesRequest {
                filter: filter.into(),
                ..req::list_instances(&acme.project_name("web"))
            };
            let instances = admin.list_instances(request).await.must().instances;
            instances
                .into_iter()
                .map(|i| i.name.rsplit('/').next().unwrap().to_owned())
                .collect()
        };
        assert_eq!(ids("").await, ["a", "b", "c", "d"]);
        assert_eq!(ids("status = ACTIVE").await, ["b", "d"]);
        let by_agent = format!("agent = \"{}\"", acme.agent_name("helper"));
        assert_eq!(ids(&by_agent).await, ["a", "b", "c"]);
        assert_eq!(ids(&format!("status = ACTIVE AND {by_agent}")).await, ["b"]);

        let bad = pb::ListInstancesRequest {
            filter: "status = SLEEPY OR 1=1".into(),
            ..req::list_instances(&acme.project_name("web"))
        };
        assert_status(
            acme.admin.clone().list_instances(bad).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
    }
);
