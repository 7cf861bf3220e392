//! Loops that run on a thread of their own, each with a current-thread
//! Tokio runtime: the S-MANAGE agent, the SD-IoT controller and the SIP
//! agent keep their sockets and timers off the HTTP workers this way.

/// Builds the runtime here — a runtime that cannot be built is the
/// caller's error, not a log line from a thread — then runs the future
/// `make` returns on a new thread named `name`. `make` is called on that
/// thread inside the runtime, so the future may hold I/O objects that
/// must be registered with it.
pub fn spawn_loop<F, Fut>(name: &str, make: F) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || runtime.block_on(async move { make().await }))
}
