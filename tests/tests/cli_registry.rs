//! The `agentry` client commands for workspaces, projects, API keys and the audit log,
//! driven as a user would: the real binary against a real server. Also what every
//! command shares: output formats, one-line errors with an exit status per class of
//! code, profiles, relative names and completion scripts.

mod cli_support;

use agentry_e2e::*;
use cli_support::{Cli, items, names};

backend_tests!(workspaces_projects_and_keys_round_trip, |app| async move {
    let root = Cli::new(app.addr, &app.root_key);
    let created = root
        .json(&[
            "workspaces",
            "create",
            "acme",
            "--display-name",
            "Acme",
            "--label",
            "tier=gold",
        ])
        .await;
    assert_eq!(created["name"], "workspaces/acme");
    assert_eq!(created["labels"]["tier"], "gold");
    let listed = root.json(&["workspaces", "list"]).await;
    assert_eq!(names(&listed, "workspaces"), ["workspaces/acme"]);
    let updated = root
        .json(&["workspaces", "update", "acme", "--description", "the shop"])
        .await;
    assert_eq!(
        (
            updated["description"].as_str(),
            updated["displayName"].as_str()
        ),
        (Some("the shop"), Some("Acme"))
    );

    let admin_key = root
        .json(&[
            "keys",
            "create",
            "--role",
            "admin",
            "-w",
            "acme",
            "--display-name",
            "ops",
        ])
        .await;
    let secret = admin_key["secret"]
        .as_str()
        .expect("the secret, once")
        .to_owned();
    assert_eq!(admin_key["apiKey"]["role"], "ROLE_ADMIN");

    // The admin works in its workspace through the environment's defaults.
    let admin = Cli::new(app.addr, &secret).env("AGENTRY_WORKSPACE", "acme");
    for id in ["web", "api", "docs"] {
        admin.json(&["projects", "create", id]).await;
    }
    let page = admin.json(&["projects", "list", "--limit", "2"]).await;
    assert_eq!(items(&page, "projects").len(), 2);
    let token = page["nextPageToken"]
        .as_str()
        .expect("a token after --limit");
    let rest = admin
        .json(&["projects", "list", "--page-token", token])
        .await;
    let mut all = names(&page, "projects");
    all.extend(names(&rest, "projects"));
    all.sort();
    assert_eq!(
        all,
        [
            "workspaces/acme/projects/api",
            "workspaces/acme/projects/docs",
            "workspaces/acme/projects/web"
        ]
    );
    let web = admin.json(&["projects", "get", "web"]).await;
    assert_eq!(web["name"], "workspaces/acme/projects/web");
    let full = admin
        .json(&["projects", "get", "workspaces/acme/projects/web"])
        .await;
    assert_eq!(full, web);
    admin
        .json(&["projects", "update", "web", "--display-name", "Website"])
        .await;
    assert_eq!(admin.json(&["projects", "delete", "docs"]).await, json!({}));

    let reader = admin.json(&["keys", "create", "--role", "reader"]).await;
    let reader_name = reader["apiKey"]["name"].as_str().unwrap().to_owned();
    let keys = admin.json(&["keys", "list"]).await;
    assert!(names(&keys, "apiKeys").contains(&reader_name));
    let reader_cli =
        Cli::new(app.addr, reader["secret"].as_str().unwrap()).env("AGENTRY_WORKSPACE", "acme");
    reader_cli.json(&["projects", "get", "web"]).await;
    let key_id = reader_name.rsplit('/').next().unwrap();
    admin.json(&["keys", "delete", key_id]).await;
    let revoked = reader_cli.fails(&["projects", "get", "web"], 6).await;
    assert!(revoked.starts_with("error: UNAUTHENTICATED"), "{revoked}");

    // The audit log through the CLI: newest first, filtered.
    let audit = admin
        .json(&["audit", "list", "--method", "CreateProject"])
        .await;
    let resources: Vec<&str> = items(&audit, "auditRecords")
        .iter()
        .map(|r| r["resource"].as_str().unwrap())
        .collect();
    assert_eq!(
        resources,
        [
            "workspaces/acme/projects/docs",
            "workspaces/acme/projects/api",
            "workspaces/acme/projects/web"
        ]
    );
    let under_web = admin
        .json(&[
            "audit",
            "list",
            "--resource",
            "projects/web",
            "--since",
            "1h",
        ])
        .await;
    let methods: Vec<&str> = items(&under_web, "auditRecords")
        .iter()
        .map(|r| r["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["UpdateProject", "CreateProject"]);
    let by_root = admin.json(&["audit", "list", "--principal", "root"]).await;
    assert!(
        items(&by_root, "auditRecords")
            .iter()
            .all(|r| r["principal"] == "root")
    );
    assert_eq!(items(&by_root, "auditRecords").len(), 3);
    reader_cli.fails(&["audit", "list"], 6).await;

    root.json(&["workspaces", "delete", "acme", "--force"])
        .await;
    root.fails(&["workspaces", "get", "acme"], 4).await;
});

backend_tests!(
    errors_are_one_line_with_an_exit_status_per_class,
    |app| async move {
        let acme = app.tenant("acme").await;
        let root = Cli::new(app.addr, &app.root_key);
        let admin = Cli::new(app.addr, &acme.admin_key).env("AGENTRY_WORKSPACE", "acme");

        let missing = admin.fails(&["projects", "get", "nope"], 4).await;
        assert_eq!(
            missing,
            "error: NOT_FOUND RESOURCE_NOT_FOUND: workspaces/acme/projects/nope not found"
        );
        let invalid = admin.fails(&["projects", "create", "Not_A_Slug"], 3).await;
        assert!(invalid.starts_with("error: INVALID_ARGUMENT"), "{invalid}");
        assert!(invalid.contains("project_id"), "names the field: {invalid}");
        admin.json(&["projects", "create", "web"]).await;
        let twice = admin.fails(&["projects", "create", "web"], 5).await;
        assert!(twice.starts_with("error: ALREADY_EXISTS"), "{twice}");
        let foreign = admin.fails(&["projects", "list", "-w", "globex"], 6).await;
        assert!(foreign.contains("WORKSPACE_MISMATCH"), "{foreign}");
        let not_root = admin.fails(&["workspaces", "list"], 6).await;
        assert!(not_root.contains("ROLE_NOT_ALLOWED"), "{not_root}");
        let nobody = Cli::new(app.addr, "agk_not_a_key");
        nobody.fails(&["workspaces", "list"], 6).await;

        // Local mistakes: 1 for a bad file or a missing default, 2 for usage.
        let no_file = admin
            .fails(&["agents", "create", "-f", "/nonexistent.yaml"], 1)
            .await;
        assert!(no_file.contains("/nonexistent.yaml"), "{no_file}");
        let no_workspace = root.fails(&["projects", "list"], 1).await;
        assert!(no_workspace.contains("--workspace"), "{no_workspace}");
        let usage = root.run(&["projects", "frobnicate"]).await;
        assert_eq!(usage.code, 2, "{}", usage.stderr);

        // Nothing listening: 8, like any UNAVAILABLE.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let away = Cli::new(format!("127.0.0.1:{port}"), &app.root_key);
        let unavailable = away.fails(&["workspaces", "list"], 8).await;
        assert!(
            unavailable.starts_with("error: UNAVAILABLE"),
            "{unavailable}"
        );
    }
);

backend_tests!(output_is_json_yaml_or_a_table, |app| async move {
    let acme = app.tenant("acme").await;
    acme.project("web").await;
    let admin = Cli::new(app.addr, &acme.admin_key).env("AGENTRY_WORKSPACE", "acme");

    // Not a terminal: JSON by default, the proto3 JSON mapping of the response.
    let json = admin.run(&["projects", "list"]).await;
    let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(value["projects"][0]["displayName"], "Project web");
    assert!(
        value["projects"][0]["createTime"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );

    let yaml = admin.run(&["projects", "list", "-o", "yaml"]).await;
    assert!(yaml.stdout.starts_with("projects:\n"), "{}", yaml.stdout);
    assert!(
        yaml.stdout.contains("name: workspaces/acme/projects/web"),
        "{}",
        yaml.stdout
    );

    let table = admin.run(&["projects", "-o", "table", "list"]).await;
    let table = admin
        .run(&["projects", "list", "--output", "table"])
        .await
        .stdout
        + &table.stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("DISPLAY NAME"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("workspaces/acme/projects/web"),
        "{table}"
    );
    assert!(!table.contains('\u{1b}'), "no colours off a terminal");

    let key = admin
        .run(&["keys", "create", "--role", "reader", "-o", "table"])
        .await;
    assert!(
        key.stdout.contains("ROLE") && key.stdout.contains("READER"),
        "{}",
        key.stdout
    );
    assert!(
        key.stdout.contains("agk_"),
        "the secret is printed: {}",
        key.stdout
    );
});

backend_tests!(profiles_hold_connections_and_defaults, |app| async move {
    let acme = app.tenant("acme").await;
    acme.project("web").await;
    // No address or key in the environment: only the profile provides them.
    let cli = Cli::new("", "");
    let address = app.addr.to_string();
    cli.run(&[
        "profile",
        "add",
        "wrong",
        "--address",
        "127.0.0.1:1",
        "--workspace",
        "acme",
    ])
    .await;
    let added = cli
        .run(&[
            "profile",
            "add",
            "local",
            "--address",
            &address,
            "--api-key",
            &acme.admin_key,
            "--workspace",
            "acme",
            "--project",
            "web",
        ])
        .await;
    assert_eq!(added.code, 0, "{}", added.stderr);
    // The first profile became current; `use` switches.
    cli.fails(&["projects", "list"], 8).await;
    assert_eq!(cli.run(&["profile", "use", "local"]).await.code, 0);
    let listed = cli.json(&["projects", "list"]).await;
    assert_eq!(names(&listed, "projects"), ["workspaces/acme/projects/web"]);
    assert_eq!(
        cli.json(&["projects", "get"]).await["name"],
        "workspaces/acme/projects/web"
    );

    let list = cli.run(&["profile", "list"]).await;
    assert!(
        list.stdout.contains("local") && list.stdout.contains(&address),
        "{}",
        list.stdout
    );
    assert!(
        !list.stdout.contains(&acme.admin_key),
        "keys stay out of listings"
    );
    let file = std::fs::read_to_string(cli.path().join("cli.toml")).unwrap();
    assert!(file.contains("current = \"local\""), "{file}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(cli.path().join("cli.toml"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the file holds keys: owner only");
    }
    // Flags and the environment win over the profile.
    cli.fails(&["projects", "--profile", "wrong", "list"], 8)
        .await;
    let flag = cli.run(&["projects", "list", "-w", "globex"]).await;
    assert_eq!(flag.code, 6, "{}", flag.stderr);
    cli.fails(&["projects", "list", "--profile", "ghost"], 1)
        .await;
    assert_eq!(cli.run(&["profile", "delete", "wrong"]).await.code, 0);
});

#[tokio::test]
async fn completion_scripts_for_bash_and_zsh() {
    let cli = Cli::new("127.0.0.1:1", "");
    let bash = cli.run(&["completion", "bash"]).await;
    assert_eq!(bash.code, 0);
    assert!(bash.stdout.contains("complete -F") && bash.stdout.contains("workspaces"));
    assert!(
        bash.stdout.contains("set-status"),
        "every subcommand is in it"
    );
    let zsh = cli.run(&["completion", "zsh"]).await;
    assert!(
        zsh.stdout.starts_with("#compdef agentry"),
        "{}",
        &zsh.stdout[..40]
    );
}

#[tokio::test]
async fn tls_and_mutual_tls_like_the_server() {
    use agentry_e2e::pki::Pki;
    let pki = Pki::new("cli");
    let server = pki.server("server");
    let client = pki.client("client");
    let (cert, key, ca) = (server.cert.clone(), server.key.clone(), pki.ca_file());
    let app = spawn_app_with(Backend::Sqlite, move |config| {
        config.tls_cert_file = Some(cert);
        config.tls_key_file = Some(key);
        config.tls_client_ca_file = Some(ca);
    })
    .await;
    let ca = pki.ca_file().display().to_string();
    let cli = Cli::new(format!("localhost:{}", app.addr.port()), &app.root_key)
        .env("AGENTRY_TLS_CA", &ca);
    // Mutual TLS: without a client certificate the handshake fails (UNAVAILABLE).
    cli.fails(&["workspaces", "list"], 8).await;
    let (cert, key) = (
        client.cert.display().to_string(),
        client.key.display().to_string(),
    );
    let listed = cli
        .json(&["workspaces", "list", "--tls-cert", &cert, "--tls-key", &key])
        .await;
    assert_eq!(listed, json!({}));
    // The same from a profile, against the address by IP with the name given.
    let by_ip = Cli::new("", "");
    let address = app.addr.to_string();
    let added = by_ip
        .run(&[
            "profile",
            "add",
            "tls",
            "--address",
            &address,
            "--api-key",
            &app.root_key,
            "--tls-ca",
            &ca,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-server-name",
            "localhost",
        ])
        .await;
    assert_eq!(added.code, 0, "{}", added.stderr);
    by_ip.json(&["workspaces", "create", "acme"]).await;
    // Plaintext to a TLS listener fails as unreachable.
    let plain = Cli::new(app.addr, &app.root_key);
    plain.fails(&["workspaces", "list"], 8).await;
    app.shutdown().await;
}
