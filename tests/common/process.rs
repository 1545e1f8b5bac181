//! A child process owned by one test: spawned, waited on until a readiness check passes (never
//! a fixed sleep), stopped with SIGTERM, and killed on drop whatever happened in between.
//! `redis-server`, `bffgate serve`, `bffgate demo` and ChromeDriver all run in one; and
//! [`eventually`], the one poll loop for any other condition a test waits for.
#![allow(dead_code)]

use std::{
    future::Future,
    process::{Child, Command, ExitStatus},
    time::{Duration, Instant},
};

/// How often readiness and exit are polled.
const POLL: Duration = Duration::from_millis(20);

/// Polls `check` until it holds; fails with "timed out waiting for {what}" after `patience`.
pub async fn eventually<F: Future<Output = bool>>(
    what: &str,
    patience: Duration,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + patience;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] for a synchronous check, from synchronous code.
pub fn eventually_blocking(what: &str, patience: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}

/// A spawned process, killed (and reaped) on drop unless it has already exited.
pub struct ChildProcess {
    child: Child,
    what: String,
    exited: Option<ExitStatus>,
    end_children: bool,
}

impl ChildProcess {
    /// Spawns `command`; `what` names the process in failures.
    pub fn spawn(command: &mut Command, what: &str) -> Self {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Self {
            child,
            what: what.to_owned(),
            exited: None,
            end_children: false,
        }
    }

    /// On drop, first sends SIGTERM to the processes this one started (ChromeDriver's
    /// browsers, left behind by a test that failed before closing its session).
    pub fn ending_its_children_on_drop(mut self) -> Self {
        self.end_children = true;
        self
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Polls `ready` until it holds, for at most `patience`; fails at once if the process
    /// exits first.
    pub async fn wait_until_ready<F: Future<Output = bool>>(
        &mut self,
        patience: Duration,
        mut ready: impl FnMut() -> F,
    ) {
        let deadline = Instant::now() + patience;
        while !ready().await {
            self.assert_running_before(deadline);
            tokio::time::sleep(POLL).await;
        }
    }

    /// [`ChildProcess::wait_until_ready`] for a synchronous check, from synchronous tests.
    pub fn wait_until_ready_blocking(
        &mut self,
        patience: Duration,
        mut ready: impl FnMut() -> bool,
    ) {
        let deadline = Instant::now() + patience;
        while !ready() {
            self.assert_running_before(deadline);
            std::thread::sleep(POLL);
        }
    }

    /// Waits until `GET url` answers 200 (a `/healthz` or `/readyz`), for at most 30 s.
    pub async fn wait_until_http_ok(&mut self, url: &str) {
        let client = reqwest::Client::new();
        self.wait_until_ready(Duration::from_secs(30), || async {
            client
                .get(url)
                .send()
                .await
                .is_ok_and(|res| res.status() == 200)
        })
        .await;
    }

    fn assert_running_before(&mut self, deadline: Instant) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("{} exited before it was ready: {status}", self.what);
        }
        assert!(
            Instant::now() < deadline,
            "{} did not become ready",
            self.what
        );
    }

    /// Sends SIGTERM (the graceful stop) and returns at once.
    pub fn terminate(&self) {
        // A positive pid only: procps-ng 4.0.2's kill took `kill -SIG -PGID` for "every
        // process".
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "SIGTERM to {} failed", self.what);
    }

    /// Sends `signal` (a name such as `HUP`) and returns at once.
    pub fn signal(&self, signal: &str) {
        // A positive pid only, as in `terminate`.
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "SIG{signal} to {} failed", self.what);
    }

    /// Waits for the process to exit, for at most `limit`.
    pub fn wait_for_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exited = Some(status);
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {limit:?}",
                self.what
            );
            std::thread::sleep(POLL);
        }
    }

    /// SIGTERM, then waits (at most 30 s) for the exit: what a clean shutdown looks like.
    pub fn stop(&mut self) -> ExitStatus {
        self.terminate();
        self.wait_for_exit(Duration::from_secs(30))
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if self.exited.is_some() {
            return;
        }
        if self.end_children {
            // `-P`: the children of this pid. Never a process group (see `terminate`).
            let _ = Command::new("pkill")
                .args(["-TERM", "-P", &self.child.id().to_string()])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
