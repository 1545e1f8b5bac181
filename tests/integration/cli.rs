//! The real `bffgate` binary: user administration against a real Redis, configuration
//! errors, and `bffgate demo` answering a login.

use std::{
    io::Write as _,
    process::{Command, Output, Stdio},
};

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_bffgate");

fn bffgate(redis: Option<&TestRedis>, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("BFFGATE_CONFIG")
        .env_remove("BFFGATE_REDIS__URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(redis) = redis {
        cmd.env("BFFGATE_REDIS__URL", &redis.url)
            .env("BFFGATE_REDIS__KEY_PREFIX", &redis.prefix);
    }
    let mut child = cmd.spawn().expect("bffgate runs");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("bffgate exits")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that the command succeeded (showing its standard error if not); its standard
/// output.
fn succeeded(out: &Output) -> String {
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// Asserts that the command failed; its standard error.
fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "{}", text(&out.stdout));
    text(&out.stderr)
}

/// `[cookie]` and `[jwt]` sections with keys (files in `dir`) that every instance on one
/// store must share.
fn shared_keys(dir: &tempfile::TempDir) -> String {
    use base64::Engine as _;
    let pem = dir.path().join("shared-signing.pem");
    if !pem.exists() {
        let der = bffgate::tokens::generate_ed25519_pkcs8().unwrap();
        std::fs::write(&pem, bffgate::tokens::pkcs8_pem(&der)).unwrap();
    }
    let key = base64::engine::general_purpose::STANDARD.encode([5u8; 64]);
    format!(
        "\n[cookie]\nkey = \"{key}\"\n\n[jwt]\nsigning_key_file = \"{}\"\n",
        pem.display()
    )
}

fn assert_contains(text: &str, needle: &str) {
    assert!(text.contains(needle), "no {needle:?} in: {text}");
}

#[actix_web::test]
async fn users_added_by_the_cli_can_log_in_until_disabled() {
    let redis = TestRedis::new();
    let add = bffgate(
        Some(&redis),
        &[
            "user",
            "add",
            "Bob@Example.com",
            "--role",
            "admin",
            "--role",
            "ops",
            "--password-stdin",
        ],
        Some(&format!("{PASSWORD}\n")),
    );
    assert_contains(&succeeded(&add), "added bob@example.com");

    let again = bffgate(
        Some(&redis),
        &["user", "add", "bob@example.com", "--password-stdin"],
        Some(PASSWORD),
    );
    assert_contains(&failed(&again), "already exists");

    let list = bffgate(Some(&redis), &["user", "list"], None);
    let listed = text(&list.stdout);
    assert!(
        listed.contains("bob@example.com")
            && listed.contains("admin,ops")
            && listed.contains("active"),
        "{listed}"
    );

    let config = redis.config();
    let gw = TestGateway::start(config, "someone-else@example.com").await;
    let browser = browser();
    let body = login(&gw, &browser, "bob@example.com").await;
    assert_eq!(body["user"]["roles"], serde_json::json!(["admin", "ops"]));

    let passwd = bffgate(
        Some(&redis),
        &[
            "user",
            "passwd",
            "bob@example.com",
            "--password-stdin",
            "--keep-sessions",
        ],
        Some("a brand new password\n"),
    );
    succeeded(&passwd);
    let old = login_request(&gw, "bob@example.com", PASSWORD);
    assert_eq!(status(old).await, 401);

    let disable = bffgate(Some(&redis), &["user", "disable", "bob@example.com"], None);
    assert_contains(&succeeded(&disable), "1 session(s) revoked");
    assert_eq!(status(browser.get(gw.url("/auth/session"))).await, 401);
    let list = bffgate(Some(&redis), &["user", "list"], None);
    assert!(text(&list.stdout).contains("disabled"));

    let enable = bffgate(Some(&redis), &["user", "enable", "bob@example.com"], None);
    assert!(enable.status.success());
    let new = login_request(&gw, "bob@example.com", "a brand new password");
    assert_eq!(status(new).await, 200);
}

#[test]
fn user_commands_refuse_bad_input_clearly() {
    let redis = TestRedis::new();
    let no_stdin_flag = bffgate(Some(&redis), &["user", "add", "c@example.com"], None);
    assert_contains(&failed(&no_stdin_flag), "--password-stdin");
    let short = bffgate(
        Some(&redis),
        &["user", "add", "c@example.com", "--password-stdin"],
        Some("short"),
    );
    assert_contains(&text(&short.stderr), "password must be");
    let bad_email = bffgate(
        Some(&redis),
        &["user", "add", "not-an-email", "--password-stdin"],
        Some(PASSWORD),
    );
    assert_contains(&text(&bad_email.stderr), "not a valid email");
    let missing = bffgate(
        Some(&redis),
        &["user", "disable", "nobody@example.com"],
        None,
    );
    assert_contains(&text(&missing.stderr), "no user nobody@example.com");
}

#[test]
fn user_commands_without_redis_say_why() {
    let out = bffgate(None, &["user", "list"], None);
    assert_contains(&failed(&out), "need a [redis] store");
}

#[test]
fn unreachable_redis_is_reported_by_user_commands() {
    let port = free_port();
    let out = Command::new(BIN)
        .args(["user", "list"])
        .env("BFFGATE_REDIS__URL", format!("redis://127.0.0.1:{port}"))
        .env("BFFGATE_REDIS__TIMEOUT", "500ms")
        .output()
        .unwrap();
    assert_contains(&failed(&out), "store unavailable");
}

#[test]
fn config_check_names_an_unknown_key_and_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[session]\nidle_timout = \"1d\"\n").unwrap();
    let out = bffgate(
        None,
        &["config", "check", "--config", bad.to_str().unwrap()],
        None,
    );
    assert_contains(&failed(&out), "idle_timout");

    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "[redis]\nurl = \"redis://:hunter2@127.0.0.1:6390\"\n{}",
            shared_keys(&dir)
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["config", "check"])
        .env("BFFGATE_CONFIG", &good)
        .output()
        .unwrap();
    let printed = succeeded(&out);
    assert!(
        printed.contains("[redacted]") && !printed.contains("hunter2"),
        "{printed}"
    );
}

#[test]
fn example_config_is_valid() {
    // As the README has a new user do it: keys generated into keys/, beside the config.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    let generate = Command::new(BIN)
        .current_dir(dir.path())
        .args([
            "keys",
            "generate",
            "--cookie-key-out",
            "keys/cookie.key",
            "--signing-key-out",
            "keys/ed25519.pem",
        ])
        .output()
        .unwrap();
    succeeded(&generate);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/bffgate.example.toml");
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .args(["config", "check", "--config", path])
        .env_remove("BFFGATE_CONFIG")
        .env_remove("BFFGATE_REDIS__URL")
        .output()
        .unwrap();
    succeeded(&out);
}

#[actix_web::test]
async fn demo_serves_a_seeded_user() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut demo = ChildProcess::spawn(
        Command::new(BIN)
            .args(["demo", "--listen", &listen])
            .env_remove("BFFGATE_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "bffgate demo",
    );
    demo.wait_until_http_ok(&format!("http://{listen}/healthz"))
        .await;
    let client = browser();
    let login = client
        .post(format!("http://{listen}/auth/login"))
        .json(&serde_json::json!({ "email": "demo@example.com", "password": "bffgate-demo" }));
    assert_eq!(status(login).await, 200);
    let session = client.get(format!("http://{listen}/auth/session"));
    assert_eq!(status(session).await, 200);
    // The in-process demo API behind /api verifies the gateway's token through its JWKS.
    let me: serde_json::Value = json(client.get(format!("http://{listen}/api/me"))).await;
    assert_eq!(me["email"], "demo@example.com");
}

#[actix_web::test]
async fn sessions_are_listed_and_revoked_by_the_admin_cli() {
    let redis = TestRedis::new();
    let config = redis.config();
    let gw = TestGateway::start(config, "gina@example.com").await;
    let mut cookies = Vec::new();
    for name in ["laptop-browser/1", "phone-browser/2", "tablet-browser/3"] {
        let res = login_request(&gw, "gina@example.com", PASSWORD)
            .header("user-agent", name)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        cookies.push(set_cookie_value(&res));
    }

    let list = bffgate(
        Some(&redis),
        &["sessions", "list", "Gina@Example.com"],
        None,
    );
    let table = succeeded(&list);
    let header = table.lines().next().unwrap();
    for column in ["id", "created", "last used", "ip", "user agent"] {
        assert!(header.contains(column), "{header}");
    }
    for (cookie, name) in cookies.iter().zip(["laptop-browser/1", "phone-browser/2"]) {
        let row = table
            .lines()
            .find(|l| l.starts_with(&family_of(cookie)))
            .unwrap_or_else(|| panic!("no row for a session: {table}"));
        assert!(row.contains("127.0.0.1") && row.contains(name), "{row}");
    }

    // One session by id: only that cookie stops working.
    let one = bffgate(
        Some(&redis),
        &["sessions", "revoke", "--session", &family_of(&cookies[0])],
        None,
    );
    succeeded(&one);
    assert_eq!(session_status(&gw, &cookies[0]).await, 401);
    assert_eq!(session_status(&gw, &cookies[1]).await, 200);
    let again = bffgate(
        Some(&redis),
        &["sessions", "revoke", "--session", &family_of(&cookies[0])],
        None,
    );
    assert_contains(&failed(&again), "no live session");

    // Every session of the user.
    let all = bffgate(
        Some(&redis),
        &["sessions", "revoke", "--user", "gina@example.com"],
        None,
    );
    assert_contains(&succeeded(&all), "revoked 2 session(s)");
    assert_eq!(session_status(&gw, &cookies[1]).await, 401);
    assert_eq!(session_status(&gw, &cookies[2]).await, 401);

    let neither = bffgate(Some(&redis), &["sessions", "revoke"], None);
    assert!(!neither.status.success());
}

#[test]
fn keys_generate_prints_keys_the_configuration_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("signing.pem");
    let generate_into = |pem: &std::path::Path| {
        bffgate(
            None,
            &[
                "keys",
                "generate",
                "--signing-key-out",
                pem.to_str().unwrap(),
            ],
            None,
        )
    };
    let printed = succeeded(&generate_into(&pem));
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&pem).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the signing key is private");
    }
    // What it printed is configuration: paste it into a file and check it.
    let config = dir.path().join("bffgate.toml");
    std::fs::write(&config, &printed).unwrap();
    let check = bffgate(
        None,
        &["config", "check", "--config", config.to_str().unwrap()],
        None,
    );
    assert!(check.status.success(), "{}\n{printed}", text(&check.stderr));
    let cookie_key = printed
        .lines()
        .find_map(|l| l.strip_prefix("key = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap();
    assert!(
        !text(&check.stdout).contains(cookie_key),
        "config check redacts the key"
    );
    // Two runs give different keys; a second run refuses to overwrite the key file.
    let other = bffgate(None, &["keys", "generate"], None);
    assert!(other.status.success());
    assert!(!text(&other.stdout).contains(cookie_key));
    assert!(text(&other.stdout).contains("BEGIN PRIVATE KEY"));
    assert!(!generate_into(&pem).status.success());
}

#[test]
fn config_check_reads_secret_files_and_prints_only_their_paths() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let key = base64::engine::general_purpose::STANDARD.encode([9u8; 64]);
    let key_file = dir.path().join("cookie_key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let url_file = dir.path().join("redis_url");
    std::fs::write(&url_file, "redis://bffgate-acl-user@127.0.0.1:6390\n").unwrap();
    let password_file = dir.path().join("redis_password");
    std::fs::write(&password_file, "hunter2\n").unwrap();
    let pem = dir.path().join("signing.pem");
    std::fs::write(
        &pem,
        bffgate::tokens::pkcs8_pem(&bffgate::tokens::generate_ed25519_pkcs8().unwrap()),
    )
    .unwrap();
    let check = |extra: &[(&str, &std::path::Path)]| {
        let mut cmd = Command::new(BIN);
        cmd.args(["config", "check"])
            .env_remove("BFFGATE_CONFIG")
            .env_remove("BFFGATE_REDIS__URL")
            .env("BFFGATE_COOKIE__KEY_FILE", &key_file)
            .env("BFFGATE_JWT__SIGNING_KEY_FILE", &pem)
            .env("BFFGATE_REDIS__URL_FILE", &url_file)
            .env("BFFGATE_REDIS__PASSWORD_FILE", &password_file);
        for (name, value) in extra {
            cmd.env(name, value);
        }
        cmd.output().unwrap()
    };
    let out = check(&[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(
        printed.contains(key_file.to_str().unwrap())
            && printed.contains(password_file.to_str().unwrap()),
        "{printed}"
    );
    for secret in [key.as_str(), "hunter2", "bffgate-acl-user"] {
        assert!(!printed.contains(secret), "{secret} in {printed}");
        assert!(!text(&out.stderr).contains(secret));
    }

    // An unreadable file: the error names the variable and the path.
    let missing = dir.path().join("missing");
    let out = check(&[("BFFGATE_PUBLIC_ORIGIN_FILE", &missing)]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("BFFGATE_PUBLIC_ORIGIN_FILE") && err.contains(missing.to_str().unwrap()),
        "{err}"
    );
}

#[test]
fn a_shared_store_without_shared_keys_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let redis_only = dir.path().join("redis-only.toml");
    std::fs::write(&redis_only, "[redis]\nurl = \"redis://127.0.0.1:6390\"\n").unwrap();
    for command in [&["config", "check"][..], &["serve"]] {
        let mut args = command.to_vec();
        args.extend(["--config", redis_only.to_str().unwrap()]);
        let err = failed(&bffgate(None, &args, None));
        assert_contains(&err, "cookie.key");
        assert_contains(&err, "jwt.signing_key_file");
    }
    // The cookie key alone is not enough.
    let cookie_only = dir.path().join("cookie-only.toml");
    let keys = shared_keys(&dir);
    let cookie_section = keys.split("[jwt]").next().unwrap();
    std::fs::write(
        &cookie_only,
        format!("[redis]\nurl = \"redis://127.0.0.1:6390\"\n{cookie_section}"),
    )
    .unwrap();
    let err = failed(&bffgate(
        None,
        &["config", "check", "--config", cookie_only.to_str().unwrap()],
        None,
    ));
    assert!(
        !err.contains("cookie.key") && err.contains("jwt.signing_key_file"),
        "{err}"
    );

    // Key files from `keys generate` satisfy it; the memory store never needed them.
    let cookie_key = dir.path().join("cookie.key");
    let pem = dir.path().join("ed25519.pem");
    succeeded(&bffgate(
        None,
        &[
            "keys",
            "generate",
            "--cookie-key-out",
            cookie_key.to_str().unwrap(),
            "--signing-key-out",
            pem.to_str().unwrap(),
        ],
        None,
    ));
    let out = Command::new(BIN)
        .args(["config", "check", "--config", redis_only.to_str().unwrap()])
        .env_remove("BFFGATE_CONFIG")
        .env("BFFGATE_COOKIE__KEY_FILE", &cookie_key)
        .env("BFFGATE_JWT__SIGNING_KEY_FILE", &pem)
        .output()
        .unwrap();
    succeeded(&out);
    succeeded(&bffgate(None, &["config", "check"], None));
}

#[actix_web::test]
async fn a_password_change_ends_the_users_sessions_unless_told_to_keep_them() {
    let redis = TestRedis::new();
    let gw = TestGateway::start(redis.config(), "carla@example.com").await;
    let before = login_cookie_of(&gw, "carla@example.com").await;
    let passwd = |keep: bool, password: &str| {
        let mut args = vec!["user", "passwd", "carla@example.com", "--password-stdin"];
        if keep {
            args.push("--keep-sessions");
        }
        bffgate(Some(&redis), &args, Some(&format!("{password}\n")))
    };
    assert_contains(
        &succeeded(&passwd(false, "a brand new password")),
        "1 session(s) revoked",
    );
    assert_eq!(session_status(&gw, &before).await, 401);
    assert_eq!(
        gw.family_state(&before).await,
        bffgate::store::FamilyState::Revoked {
            reason: "password_changed".into()
        }
    );
    // The operator who wants them kept says so.
    let kept = login_request(&gw, "carla@example.com", "a brand new password");
    let kept = set_cookie_value(&kept.send().await.unwrap());
    assert_contains(
        &succeeded(&passwd(true, "another new password")),
        "sessions kept",
    );
    assert_eq!(session_status(&gw, &kept).await, 200);
}

#[test]
fn a_session_id_may_begin_with_a_hyphen() {
    // Ids are base64url: one in 32 begins with `-`, which must not read as a flag.
    let redis = TestRedis::new();
    let out = bffgate(
        Some(&redis),
        &["sessions", "revoke", "--session", "-gAAAAAAAAAAAAAAAAAAAA"],
        None,
    );
    assert_contains(&failed(&out), "no live session -gAAAAAAAAAAAAAAAAAAAA");
}
