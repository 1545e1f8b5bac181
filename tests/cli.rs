//! The real `bffgate` binary: user administration against a real Redis, configuration
//! errors, and `bffgate demo` answering a login.

mod common;

use std::{
    io::Write as _,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::*;

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
    assert!(add.status.success(), "{}", text(&add.stderr));
    assert!(text(&add.stdout).contains("added bob@example.com"));

    let again = bffgate(
        Some(&redis),
        &["user", "add", "bob@example.com", "--password-stdin"],
        Some(PASSWORD),
    );
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("already exists"));

    let list = bffgate(Some(&redis), &["user", "list"], None);
    let listed = text(&list.stdout);
    assert!(
        listed.contains("bob@example.com")
            && listed.contains("admin,ops")
            && listed.contains("active"),
        "{listed}"
    );

    let config = with_redis(test_config(), &redis.url, &redis.prefix);
    let gw = TestGateway::start(config, "someone-else@example.com").await;
    let browser = browser();
    let body = login(&gw, &browser, "bob@example.com").await;
    assert_eq!(body["user"]["roles"], serde_json::json!(["admin", "ops"]));

    let passwd = bffgate(
        Some(&redis),
        &["user", "passwd", "bob@example.com", "--password-stdin"],
        Some("a brand new password\n"),
    );
    assert!(passwd.status.success(), "{}", text(&passwd.stderr));
    let old = login_request(&gw, "bob@example.com", PASSWORD)
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 401);

    let disable = bffgate(Some(&redis), &["user", "disable", "bob@example.com"], None);
    assert!(disable.status.success(), "{}", text(&disable.stderr));
    assert!(
        text(&disable.stdout).contains("1 session(s) revoked"),
        "{}",
        text(&disable.stdout)
    );
    assert_eq!(
        browser
            .get(gw.url("/auth/session"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let list = bffgate(Some(&redis), &["user", "list"], None);
    assert!(text(&list.stdout).contains("disabled"));

    let enable = bffgate(Some(&redis), &["user", "enable", "bob@example.com"], None);
    assert!(enable.status.success());
    let res = login_request(&gw, "bob@example.com", "a brand new password")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[test]
fn user_commands_refuse_bad_input_clearly() {
    let redis = TestRedis::new();
    let no_stdin_flag = bffgate(Some(&redis), &["user", "add", "c@example.com"], None);
    assert!(!no_stdin_flag.status.success());
    assert!(text(&no_stdin_flag.stderr).contains("--password-stdin"));
    let short = bffgate(
        Some(&redis),
        &["user", "add", "c@example.com", "--password-stdin"],
        Some("short"),
    );
    assert!(text(&short.stderr).contains("password must be"));
    let bad_email = bffgate(
        Some(&redis),
        &["user", "add", "not-an-email", "--password-stdin"],
        Some(PASSWORD),
    );
    assert!(text(&bad_email.stderr).contains("not a valid email"));
    let missing = bffgate(
        Some(&redis),
        &["user", "disable", "nobody@example.com"],
        None,
    );
    assert!(text(&missing.stderr).contains("no user nobody@example.com"));
}

#[test]
fn user_commands_without_redis_say_why() {
    let out = bffgate(None, &["user", "list"], None);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("need a [redis] store"),
        "{}",
        text(&out.stderr)
    );
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
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("store unavailable"),
        "{}",
        text(&out.stderr)
    );
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
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("idle_timout"),
        "{}",
        text(&out.stderr)
    );

    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[redis]\nurl = \"redis://:hunter2@127.0.0.1:6390\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["config", "check"])
        .env("BFFGATE_CONFIG", &good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(
        printed.contains("[redacted]") && !printed.contains("hunter2"),
        "{printed}"
    );
}

#[test]
fn example_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/bffgate.example.toml");
    let out = bffgate(None, &["config", "check", "--config", path], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// `bffgate demo` as a child process, killed on drop.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[actix_web::test]
async fn demo_serves_a_seeded_user() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _demo = Demo(
        Command::new(BIN)
            .args(["demo", "--listen", &listen])
            .env_remove("BFFGATE_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = browser();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(res) = client.get(format!("http://{listen}/healthz")).send().await {
            if res.status() == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "demo did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let res = client
        .post(format!("http://{listen}/auth/login"))
        .json(&serde_json::json!({ "email": "demo@example.com", "password": "bffgate-demo" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = client
        .get(format!("http://{listen}/auth/session"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The in-process demo API behind /api verifies the gateway's token through its JWKS.
    let me: serde_json::Value = client
        .get(format!("http://{listen}/api/me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["email"], "demo@example.com");
}
