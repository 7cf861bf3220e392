//! One task per address of record, following the hub's catalog: tasks
//! start at a bounded rate (a gateway of 10,000 things must not flood the
//! core), stop when their thing goes, and all stop with the agent — each
//! given a moment to end its own way (un-REGISTER, un-PUBLISH).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::Instrument;

use crate::shared::Shared;

/// Tasks started per second, at most.
const START_RATE: u64 = 100;
/// How long a stopping agent waits for its tasks to end.
const END_WAIT: Duration = Duration::from_secs(3);

/// The user parts of this gateway's addresses of record: itself, then
/// (with `things`) each thing service it owns.
pub(crate) fn own_users(shared: &Shared, gateway: bool, things: bool) -> Vec<String> {
    let hub = &shared.hub;
    let mut users = Vec::new();
    if gateway {
        users.push(hub.gateway().to_owned());
    }
    if things {
        let mut own: Vec<String> = hub
            .select_things(|t| t.gateway == hub.gateway())
            .into_iter()
            .map(|t| t.id.as_str().to_owned())
            .collect();
        own.sort();
        users.extend(own);
    }
    users
}

/// Runs `task(user, stop)` for each user `wanted` lists, until the agent
/// stops; `gone(user)` is called when a user's task is told to stop
/// because its thing went away.
pub(crate) async fn follow<Fut>(
    shared: Arc<Shared>,
    name: &'static str,
    wanted: impl Fn(&Shared) -> Vec<String>,
    mut task: impl FnMut(String, watch::Receiver<bool>) -> Fut,
    mut gone: impl FnMut(&str),
) where
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut stopped = shared.stopped.clone();
    let mut tasks: BTreeMap<String, (watch::Sender<bool>, tokio::task::JoinHandle<()>)> =
        BTreeMap::new();
    let mut waiting: Vec<String> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / START_RATE));
    let mut generation = None;
    loop {
        tokio::select! {
            _ = crate::shared::stopping(&mut stopped) => break,
            _ = tick.tick() => {}
        }
        let now_generation = shared.hub.catalog_generation();
        if generation != Some(now_generation) {
            generation = Some(now_generation);
            let users = wanted(&shared);
            let left: Vec<String> = tasks
                .keys()
                .filter(|user| !users.contains(user))
                .cloned()
                .collect();
            for user in left {
                if let Some((stop, _)) = tasks.remove(&user) {
                    let _ = stop.send(true);
                }
                gone(&user);
            }
            waiting = users
                .into_iter()
                .filter(|user| !tasks.contains_key(user))
                .collect();
            waiting.reverse();
        }
        if let Some(user) = waiting.pop() {
            let (stop, stopping) = watch::channel(false);
            let span = tracing::debug_span!("sip", part = name, aor = %user);
            let handle = tokio::spawn(task(user.clone(), stopping).instrument(span));
            tasks.insert(user, (stop, handle));
        }
    }
    let count = tasks.len();
    let mut handles = Vec::new();
    for (_, (stop, handle)) in tasks {
        let _ = stop.send(true);
        handles.push(handle);
    }
    let _ = tokio::time::timeout(END_WAIT, async {
        for handle in handles {
            let _ = handle.await;
        }
    })
    .await;
    tracing::info!(part = name, count, "SIP tasks ended");
}
