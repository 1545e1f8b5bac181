//! A TCP fault proxy between the gateway and Redis, on a free loopback port, with its own
//! thread and runtime (a test that blocks its own thread cannot stall it). The fault is
//! switched at run time ([`FaultProxy::set`]) and every connection feels the switch at once,
//! idle ones included (the gateway pools its connections):
//!
//! - [`Fault::Pass`]: bytes flow both ways.
//! - [`Fault::Delay`]: each chunk waits before it is passed on.
//! - [`Fault::Drop`]: every connection is closed (FIN), new ones are closed as accepted.
//! - [`Fault::Reset`]: the same with a reset (`SO_LINGER` 0, then close: RST).
//! - [`Fault::BlackHole`]: connections stay open and are read, but nothing is passed on or
//!   answered (a partition); a connection that lost bytes this way is closed when the fault
//!   ends, since it can no longer be in step with Redis.
#![allow(dead_code)]

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{oneshot, watch},
};

/// What the proxy does to the traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Pass,
    Delay(Duration),
    Drop,
    Reset,
    BlackHole,
}

/// The fault now, and how many times connections were told to close (a `Drop` or `Reset`
/// switched straight back to `Pass` must still close every connection: a watch channel
/// keeps only the last value).
#[derive(Clone, Copy, Debug)]
struct Mode {
    fault: Fault,
    closes: u64,
}

/// The running proxy; stopped (every connection closed) on drop.
pub struct FaultProxy {
    pub port: u16,
    mode: watch::Sender<Mode>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy in front of `target`, passing traffic.
    pub fn start(target: SocketAddr) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("proxy addr").port();
        let (mode, modes) = watch::channel(Mode {
            fault: Fault::Pass,
            closes: 0,
        });
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{port}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("proxy listener");
                    tokio::select! {
                        _ = stopped => {}
                        () = accept(listener, target, modes) => {}
                    }
                });
                // Dropping the runtime drops every connection task, closing their sockets.
            })
            .expect("proxy thread");
        Self {
            port,
            mode,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Switches the fault; existing connections feel it at once.
    pub fn set(&self, fault: Fault) {
        self.mode.send_modify(|mode| {
            mode.fault = fault;
            if matches!(fault, Fault::Drop | Fault::Reset) {
                mode.closes += 1;
            }
        });
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept(listener: TcpListener, target: SocketAddr, modes: watch::Receiver<Mode>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(connection(client, target, modes.clone()));
    }
}

/// Closes `stream` with a reset rather than a FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn connection(client: TcpStream, target: SocketAddr, mut modes: watch::Receiver<Mode>) {
    let _ = client.set_nodelay(true);
    let mode = *modes.borrow_and_update();
    match mode.fault {
        Fault::Drop => return,
        Fault::Reset => return reset(client),
        _ => {}
    }
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    pump(client, server, modes, mode.closes).await;
}

/// Moves bytes both ways under the current fault until either side closes or the fault
/// closes the connection.
async fn pump(
    mut client: TcpStream,
    mut server: TcpStream,
    mut modes: watch::Receiver<Mode>,
    closes: u64,
) {
    let mut up = vec![0u8; 16 * 1024];
    let mut down = vec![0u8; 16 * 1024];
    // Whether the black hole swallowed bytes: the two sides are out of step for good.
    let mut lost = false;
    loop {
        tokio::select! {
            changed = modes.changed() => {
                if changed.is_err() {
                    return;
                }
                let mode = *modes.borrow_and_update();
                if mode.closes != closes {
                    // Closed by a `Drop` or `Reset`, even one already switched back.
                    if mode.fault == Fault::Reset {
                        reset(client);
                    }
                    return;
                }
                match mode.fault {
                    Fault::Drop | Fault::Reset => return,
                    Fault::BlackHole => {}
                    Fault::Pass | Fault::Delay(_) if lost => return,
                    Fault::Pass | Fault::Delay(_) => {}
                }
            }
            read = client.read(&mut up) => {
                let Ok(n @ 1..) = read else { return };
                match pass(&modes, &mut server, &up[..n]).await {
                    Passed::Yes => {}
                    Passed::Swallowed => lost = true,
                    Passed::Closed => return,
                }
            }
            read = server.read(&mut down) => {
                let Ok(n @ 1..) = read else { return };
                match pass(&modes, &mut client, &down[..n]).await {
                    Passed::Yes => {}
                    Passed::Swallowed => lost = true,
                    Passed::Closed => return,
                }
            }
        }
    }
}

enum Passed {
    Yes,
    Swallowed,
    Closed,
}

/// Passes `chunk` on to `to` as the current fault allows.
async fn pass(modes: &watch::Receiver<Mode>, to: &mut TcpStream, chunk: &[u8]) -> Passed {
    let fault = modes.borrow().fault;
    match fault {
        Fault::Pass => {}
        Fault::Delay(d) => tokio::time::sleep(d).await,
        Fault::BlackHole => return Passed::Swallowed,
        // The switch is seen by the select loop at its next turn.
        Fault::Drop | Fault::Reset => return Passed::Closed,
    }
    match to.write_all(chunk).await {
        Ok(()) => Passed::Yes,
        Err(_) => Passed::Closed,
    }
}
