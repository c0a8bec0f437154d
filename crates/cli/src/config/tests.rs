use super::*;

#[test]
#[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
fn layers_apply_in_order_and_unknown_keys_are_refused() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "c.toml",
            "listen = \"127.0.0.1:9000\"\ndata_dir = \"/from/file\"\n",
        )?;
        jail.set_env("ARTIFACTSTORE_DATA_DIR", "/from/env");
        jail.set_env("ARTIFACTSTORE_URL", "http://ignored-by-serve");
        let flags = ServeFlags {
            max_upload_size: Some(5),
            ..Default::default()
        };
        let c = load(Some(Path::new("c.toml")), &flags).expect("loads");
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("/from/env"));
        assert_eq!(c.max_upload_size, 5);
        let flags = ServeFlags {
            data_dir: Some("/from/flag".into()),
            ..Default::default()
        };
        assert_eq!(
            load(Some(Path::new("c.toml")), &flags).unwrap().data_dir,
            PathBuf::from("/from/flag")
        );

        jail.set_env("ARTIFACTSTORE_S3_BUCKET", "from-env");
        jail.set_env("ARTIFACTSTORE_BACKEND", "s3");
        let c = load(Some(Path::new("c.toml")), &ServeFlags::default()).unwrap();
        assert_eq!(c.backend, Backend::S3);
        assert_eq!(c.s3.bucket.as_deref(), Some("from-env"));

        jail.create_file(
            "plain.toml",
            "[s3]\nsecret_access_key = \"canary-plain-value\"\n",
        )?;
        let err = format!(
            "{:#}",
            load(Some(Path::new("plain.toml")), &ServeFlags::default()).unwrap_err()
        );
        assert!(err.contains("secret_access_key_ref"), "{err}");
        assert!(!err.contains("canary-plain-value"), "{err}");

        jail.create_file("bad.toml", "listen = \"127.0.0.1:9000\"\nlisten_port = 5\n")?;
        let err = format!(
            "{:#}",
            load(Some(Path::new("bad.toml")), &ServeFlags::default()).unwrap_err()
        );
        assert!(err.contains("listen_port"), "{err}");
        Ok(())
    });
}

fn s3(toml: &str) -> S3Settings {
    let cfg: ServeConfig = Figment::from(Serialized::defaults(ServeConfig::default()))
        .merge(Toml::string(toml))
        .extract()
        .unwrap_or_else(|e| panic!("{toml}: {e}"));
    cfg.s3
}

fn env_ref(name: &str) -> SecretRef {
    SecretRef::Env(name.into())
}

#[test]
fn auto_picks_the_first_configured_source_in_the_documented_order() {
    let pick = |toml: &str| s3(toml).credential_source().unwrap().0.name();
    let keys = "access_key_id_ref = \"env:AK\"\nsecret_access_key_ref = \"env:SK\"\n";
    let all = format!(
        "[s3]\nweb_identity_token_file = \"/t\"\ncontainer_credentials_url = \"http://c\"\n\
         credential_process = \"p\"\ncredentials_file = \"/f\"\nrole_arn = \"arn:r\"\n\
         endpoint_url = \"http://s3\"\n{keys}"
    );
    assert_eq!(pick(&all), "web-identity");
    let all = all.replace("web_identity_token_file = \"/t\"\n", "");
    assert_eq!(pick(&all), "container");
    let all = all.replace("container_credentials_url = \"http://c\"\n", "");
    assert_eq!(pick(&all), "process");
    let all = all.replace("credential_process = \"p\"\n", "");
    assert_eq!(pick(&all), "file");
    let all = all.replace("credentials_file = \"/f\"\n", "");
    assert_eq!(pick(&all), "assume-role");
    let all = all.replace("role_arn = \"arn:r\"\n", "");
    assert_eq!(pick(&all), "static");
}

#[test]
fn each_source_gets_exactly_its_settings_with_defaults() {
    let (source, ignored) =
        s3("[s3]\naccess_key_id_ref = \"env:AK\"\nsecret_access_key_ref = \"file:/sk\"\n")
            .credential_source()
            .unwrap();
    assert_eq!(
        source,
        CredentialSourceConfig::Static(StaticKeys {
            access_key_id: env_ref("AK"),
            secret_access_key: SecretRef::File("/sk".into()),
            session_token: None,
        })
    );
    assert!(ignored.is_empty());

    let (source, _) = s3(
        "[s3]\ncredentials_source = \"web-identity\"\nendpoint_url = \"http://s3\"\n\
                          web_identity_token_file = \"/t\"\n",
    )
    .credential_source()
    .unwrap();
    assert_eq!(
        source,
        CredentialSourceConfig::WebIdentity {
            token_file: "/t".into(),
            role_arn: None,
            session_name: "artifactstore".into(),
            sts_endpoint: "http://s3".into(),
            duration_secs: None,
        },
        "the STS defaults to the S3 endpoint"
    );

    let (source, _) = s3("[s3]\ncredentials_source = \"assume-role\"\nsts_endpoint_url = \"http://sts\"\n\
                          role_arn = \"arn:r\"\nrole_session_name = \"me\"\naccess_key_id_ref = \"env:AK\"\n\
                          secret_access_key_ref = \"env:SK\"\nsession_policy = \"{}\"\ncredentials_duration_secs = 900\n")
    .credential_source()
    .unwrap();
    assert_eq!(
        source,
        CredentialSourceConfig::AssumeRole {
            base: StaticKeys {
                access_key_id: env_ref("AK"),
                secret_access_key: env_ref("SK"),
                session_token: None,
            },
            role_arn: "arn:r".into(),
            session_name: "me".into(),
            sts_endpoint: "http://sts".into(),
            duration_secs: Some(900),
            session_policy: Some("{}".into()),
        }
    );

    let (source, _) = s3("[s3]\ncredential_process = \"p\"\n")
        .credential_source()
        .unwrap();
    assert_eq!(
        source,
        CredentialSourceConfig::Process {
            command: "p".into(),
            timeout: Duration::from_secs(30),
        }
    );
}

#[test]
fn a_missing_setting_is_named_with_its_variable() {
    let err = |toml: &str| s3(toml).credential_source().unwrap_err();
    let e = err("[s3]\ncredentials_source = \"container\"\n");
    assert!(
        e.contains("s3.container_credentials_url (ARTIFACTSTORE_S3_CONTAINER_CREDENTIALS_URL)"),
        "{e}"
    );
    assert!(e.contains("container"), "{e}");
    let e = err("[s3]\naccess_key_id_ref = \"env:AK\"\n");
    assert!(e.contains("ARTIFACTSTORE_S3_SECRET_ACCESS_KEY_REF"), "{e}");
    let e = err("[s3]\ncredentials_source = \"web-identity\"\nweb_identity_token_file = \"/t\"\n");
    assert!(e.contains("ARTIFACTSTORE_S3_STS_ENDPOINT_URL"), "{e}");
    let e = err("[s3]\ncredentials_source = \"assume-role\"\nendpoint_url = \"http://s3\"\n");
    assert!(e.contains("s3.role_arn"), "{e}");
}

#[test]
fn an_explicit_source_reports_the_settings_it_ignores() {
    // As scripts/vend-fixture.sh does: static keys stay exported, web identity chosen.
    let (source, ignored) = s3("[s3]\ncredentials_source = \"web-identity\"\nendpoint_url = \"http://s3\"\n\
                                web_identity_token_file = \"/t\"\nrole_arn = \"arn:r\"\n\
                                access_key_id_ref = \"env:AK\"\nsecret_access_key_ref = \"env:SK\"\n\
                                credential_process_timeout_secs = 5\n")
    .credential_source()
    .unwrap();
    assert_eq!(source.name(), "web-identity");
    assert_eq!(
        ignored,
        [
            "access_key_id_ref",
            "secret_access_key_ref",
            "credential_process_timeout_secs"
        ]
    );
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
fn credential_settings_keep_their_environment_names_and_refs_are_typed() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("ARTIFACTSTORE_S3_CREDENTIALS_SOURCE", "container");
        jail.set_env(
            "ARTIFACTSTORE_S3_CONTAINER_CREDENTIALS_URL",
            "http://vend/v1/c",
        );
        jail.set_env(
            "ARTIFACTSTORE_S3_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            "/tok",
        );
        jail.set_env("ARTIFACTSTORE_S3_CREDENTIALS_REFRESH_WINDOW_SECS", "7");
        let c = load(None, &ServeFlags::default()).unwrap();
        assert_eq!(c.s3.credentials_refresh_window_secs, Some(7));
        assert_eq!(
            c.s3.credential_source().unwrap().0,
            CredentialSourceConfig::Container {
                url: "http://vend/v1/c".into(),
                authorization_token_file: Some("/tok".into()),
            }
        );
        jail.set_env("ARTIFACTSTORE_S3_SECRET_ACCESS_KEY_REF", "canary-not-a-ref");
        let err = format!("{:#}", load(None, &ServeFlags::default()).unwrap_err());
        assert!(err.contains("env:NAME or file:/path"), "{err}");
        // figment names the key as the variable spelled it.
        assert!(
            err.to_lowercase().contains("s3.secret_access_key_ref"),
            "{err}"
        );
        assert!(!err.contains("canary-not-a-ref"), "{err}");
        Ok(())
    });
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
fn s3_timeouts_have_bounded_defaults_and_come_from_file_or_environment() {
    figment::Jail::expect_with(|jail| {
        let c = load(None, &ServeFlags::default()).unwrap();
        assert_eq!(
            (
                c.s3.connect_timeout_secs,
                c.s3.read_timeout_secs,
                c.s3.operation_timeout_secs
            ),
            (10, 60, 120)
        );
        jail.create_file("t.toml", "[s3]\noperation_timeout_secs = 30\n")?;
        jail.set_env("ARTIFACTSTORE_S3_READ_TIMEOUT_SECS", "5");
        let c = load(Some(Path::new("t.toml")), &ServeFlags::default()).unwrap();
        assert_eq!(
            (c.s3.read_timeout_secs, c.s3.operation_timeout_secs),
            (5, 30)
        );
        jail.set_env("ARTIFACTSTORE_S3_OPERATION_TIMEOUT_SECS", "7");
        let c = load(Some(Path::new("t.toml")), &ServeFlags::default()).unwrap();
        assert_eq!(c.s3.operation_timeout_secs, 7);
        Ok(())
    });
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
fn upload_limits_come_from_the_file_and_the_environment_and_zero_is_refused() {
    figment::Jail::expect_with(|jail| {
        let c = load(None, &ServeFlags::default()).unwrap();
        assert_eq!(
            (c.body_idle_timeout_secs, c.max_concurrent_uploads),
            (60, 1024)
        );
        jail.create_file(
            "c.toml",
            "body_idle_timeout_secs = 7\nmax_concurrent_uploads = 9\n",
        )?;
        let c = load(Some(Path::new("c.toml")), &ServeFlags::default()).unwrap();
        assert_eq!((c.body_idle_timeout_secs, c.max_concurrent_uploads), (7, 9));
        jail.set_env("ARTIFACTSTORE_BODY_IDLE_TIMEOUT_SECS", "3");
        jail.set_env("ARTIFACTSTORE_MAX_CONCURRENT_UPLOADS", "2");
        let c = load(Some(Path::new("c.toml")), &ServeFlags::default()).unwrap();
        assert_eq!((c.body_idle_timeout_secs, c.max_concurrent_uploads), (3, 2));
        jail.set_env("ARTIFACTSTORE_MAX_CONCURRENT_UPLOADS", "0");
        let err = format!("{:#}", load(None, &ServeFlags::default()).unwrap_err());
        assert!(err.contains("max_concurrent_uploads"), "{err}");
        jail.set_env("ARTIFACTSTORE_MAX_CONCURRENT_UPLOADS", "2");
        jail.set_env("ARTIFACTSTORE_BODY_IDLE_TIMEOUT_SECS", "0");
        let err = format!("{:#}", load(None, &ServeFlags::default()).unwrap_err());
        assert!(err.contains("body_idle_timeout_secs"), "{err}");
        Ok(())
    });
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
fn listener_limits_come_from_the_file_and_the_environment_and_zero_is_refused() {
    figment::Jail::expect_with(|jail| {
        let c = load(None, &ServeFlags::default()).unwrap();
        assert_eq!(
            (
                c.header_read_timeout_secs,
                c.keep_alive_timeout_secs,
                c.max_connections
            ),
            (10, 60, 4096)
        );
        jail.create_file(
            "l.toml",
            "header_read_timeout_secs = 2\nkeep_alive_timeout_secs = 3\nmax_connections = 4\n",
        )?;
        let c = load(Some(Path::new("l.toml")), &ServeFlags::default()).unwrap();
        assert_eq!(c.listener_limits().unwrap(), Limits::new(2, 3, 4).unwrap());
        jail.set_env("ARTIFACTSTORE_HEADER_READ_TIMEOUT_SECS", "5");
        jail.set_env("ARTIFACTSTORE_KEEP_ALIVE_TIMEOUT_SECS", "6");
        jail.set_env("ARTIFACTSTORE_MAX_CONNECTIONS", "7");
        let c = load(Some(Path::new("l.toml")), &ServeFlags::default()).unwrap();
        assert_eq!(c.listener_limits().unwrap(), Limits::new(5, 6, 7).unwrap());
        for key in [
            "header_read_timeout_secs",
            "keep_alive_timeout_secs",
            "max_connections",
        ] {
            let var = format!("ARTIFACTSTORE_{}", key.to_uppercase());
            jail.set_env(&var, "0");
            let err = format!("{:#}", load(None, &ServeFlags::default()).unwrap_err());
            assert!(err.contains(&format!("{key} = 0 is out of range")), "{err}");
            jail.set_env(&var, "5");
        }
        jail.set_env("ARTIFACTSTORE_MAX_CONNECTIONS", "100000000");
        assert!(load(None, &ServeFlags::default()).is_err());
        Ok(())
    });
}

#[test]
#[allow(clippy::result_large_err)]
fn auditing_is_on_with_auth_or_a_path_and_comes_from_file_or_environment() {
    figment::Jail::expect_with(|jail| {
        let audit = |file: &str| load(Some(Path::new(file)), &ServeFlags::default());
        jail.create_file("open.toml", "data_dir = \"/d\"\n")?;
        assert_eq!(audit("open.toml").unwrap().audit_path(), None);
        jail.create_file("auth.toml", "data_dir = \"/d\"\n[auth]\n")?;
        assert_eq!(
            audit("auth.toml").unwrap().audit_path(),
            Some(PathBuf::from("/d/audit.log"))
        );
        jail.create_file("off.toml", "[auth]\n[audit]\nenabled = false\n")?;
        assert_eq!(audit("off.toml").unwrap().audit_path(), None);
        jail.set_env("ARTIFACTSTORE_AUDIT_PATH", "/var/log/as/audit.log");
        jail.set_env("ARTIFACTSTORE_AUDIT_CHAIN_KEY_REF", "env:CHAIN_KEY");
        let c = audit("open.toml").unwrap();
        assert_eq!(c.audit_path(), Some(PathBuf::from("/var/log/as/audit.log")));
        assert_eq!(c.audit.chain_key_ref, Some(env_ref("CHAIN_KEY")));
        jail.set_env("ARTIFACTSTORE_AUDIT_WINDOW_SECS", "0");
        let e = audit("open.toml").unwrap_err().to_string();
        assert!(e.contains("audit.window_secs"), "{e}");
        Ok(())
    });
}

#[test]
#[allow(clippy::result_large_err)]
fn downloads_are_proxied_unless_s3_redirects_and_the_expiry_is_bounded() {
    use artifactstore_server::Downloads;
    figment::Jail::expect_with(|jail| {
        let c = load(None, &ServeFlags::default()).unwrap();
        assert_eq!(
            (c.s3.download, c.s3.redirect_expiry_secs),
            (S3Download::Proxy, 60)
        );
        assert_eq!(c.downloads(), Downloads::Proxy);
        jail.create_file(
            "r.toml",
            "backend = \"s3\"\n[s3]\ndownload = \"redirect\"\nredirect_expiry_secs = 30\n",
        )?;
        let c = load(Some(Path::new("r.toml")), &ServeFlags::default()).unwrap();
        assert_eq!(
            c.downloads(),
            Downloads::Redirect {
                expires_in: Duration::from_secs(30)
            }
        );
        // The fs store has no URLs to hand out.
        let flags = ServeFlags {
            backend: Some(Backend::Fs),
            ..Default::default()
        };
        let c = load(Some(Path::new("r.toml")), &flags).unwrap();
        assert_eq!(c.downloads(), Downloads::Proxy);

        jail.set_env("ARTIFACTSTORE_S3_REDIRECT_EXPIRY_SECS", "2");
        jail.set_env("ARTIFACTSTORE_S3_DOWNLOAD", "proxy");
        let c = load(Some(Path::new("r.toml")), &ServeFlags::default()).unwrap();
        assert_eq!(
            (c.s3.download, c.s3.redirect_expiry_secs),
            (S3Download::Proxy, 2)
        );
        for bad in ["0", "3601"] {
            jail.set_env("ARTIFACTSTORE_S3_REDIRECT_EXPIRY_SECS", bad);
            let err = format!("{:#}", load(None, &ServeFlags::default()).unwrap_err());
            assert!(
                err.contains("s3.redirect_expiry_secs must be 1..=3600"),
                "{err}"
            );
        }
        jail.set_env("ARTIFACTSTORE_S3_REDIRECT_EXPIRY_SECS", "60");
        jail.set_env("ARTIFACTSTORE_S3_DOWNLOAD", "presigned");
        let env_err = format!("{:#}", load(None, &ServeFlags::default()).unwrap_err());
        jail.clear_env();
        jail.create_file("bad.toml", "[s3]\ndownload = \"presigned\"\n")?;
        let file_err = format!(
            "{:#}",
            load(Some(Path::new("bad.toml")), &ServeFlags::default()).unwrap_err()
        );
        // The key (upper case when it came from the environment), the value, and the
        // values allowed.
        for err in [env_err, file_err] {
            for want in ["s3.download", "presigned", "`proxy`", "`redirect`"] {
                assert!(err.to_lowercase().contains(want), "{want}: {err}");
            }
        }
        Ok(())
    });
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
fn the_browser_is_on_unless_the_file_the_environment_or_no_ui_turns_it_off() {
    figment::Jail::expect_with(|jail| {
        assert!(load(None, &ServeFlags::default()).unwrap().ui);
        jail.create_file("bad.toml", "ui = \"sometimes\"\n")?;
        assert!(load(Some(Path::new("bad.toml")), &ServeFlags::default()).is_err());
        jail.create_file("c.toml", "ui = false\n")?;
        let file = Some(Path::new("c.toml"));
        assert!(!load(file, &ServeFlags::default()).unwrap().ui);
        jail.set_env("ARTIFACTSTORE_UI", "true");
        assert!(
            load(file, &ServeFlags::default()).unwrap().ui,
            "env over file"
        );
        let no_ui = ServeFlags {
            ui: Some(false),
            ..Default::default()
        };
        assert!(!load(file, &no_ui).unwrap().ui, "--no-ui over env");
        jail.set_env("ARTIFACTSTORE_UI", "false");
        assert!(!load(None, &ServeFlags::default()).unwrap().ui);
        Ok(())
    });
}
