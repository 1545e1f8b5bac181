//! Work that runs beside the server for as long as it has something to do, on a thread of its
//! own with its own runtime: no actix worker carries it, and it outlives none of them by
//! design (each job ends when what it serves is dropped). A leaf: imports nothing of the crate.

use std::future::Future;

/// Runs `job()`'s future to its end on a new thread named `name`. If no thread or runtime can
/// be had, logs `without` (what the gateway does instead) and runs nothing.
pub fn spawn<J, F>(name: &str, without: &'static str, job: J)
where
    J: FnOnce() -> F + Send + 'static,
    F: Future<Output = ()>,
{
    let spawned = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(job()),
                Err(e) => tracing::error!(error = %e, "no runtime: {without}"),
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "no thread: {without}");
    }
}
