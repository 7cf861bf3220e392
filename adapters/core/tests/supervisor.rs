//! A plugin that panics or stops is restarted with growing backoff, and
//! commands reach whichever instance is running.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, Context, Handler, Recipient};
use fogbank_adapter::{Actuate, AdapterContext, AdapterSupervisor, Backoff, GetStatus, Plugin};
use fogbank_taas::{
    ActuationError, ActuationResult, CommandState, Hub, HubOptions, Kind, ThingId, ThingService,
    Value,
};
use parking_lot::Mutex;

struct Flaky {
    starts: Arc<Mutex<Vec<Instant>>>,
}

struct FlakyActor {
    context: AdapterContext,
}

impl Actor for FlakyActor {
    type Context = Context<Self>;
    fn started(&mut self, _: &mut Self::Context) {
        let id = self.context.thing_id("dev", "cmd").unwrap();
        self.context
            .announce(ThingService::new(id, Kind::Actuator, "text", None))
            .unwrap();
    }
}

impl Handler<Actuate> for FlakyActor {
    type Result = ActuationResult;
    fn handle(&mut self, Actuate(command): Actuate, ctx: &mut Self::Context) -> ActuationResult {
        match command.value {
            Value::String(ref s) if s == "panic" => panic!("the plugin crashed on purpose"),
            Value::String(ref s) if s == "stop" => {
                ctx.stop();
                Err(ActuationError::Restarting)
            }
            value => Ok(Some(value)),
        }
    }
}

impl Plugin for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }
    fn start(&self, context: AdapterContext) -> Recipient<Actuate> {
        self.starts.lock().push(Instant::now());
        FlakyActor { context }.start().recipient()
    }
}

async fn command(hub: &Hub, id: &ThingId, text: &str) -> CommandState {
    let ticket = hub.actuate(id, Value::String(text.into())).unwrap();
    ticket.outcome.await.unwrap()
}

async fn wait_for_starts(starts: &Mutex<Vec<Instant>>, n: usize) {
    for _ in 0..200 {
        if starts.lock().len() >= n {
            return;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "the plugin was not restarted: {} starts",
        starts.lock().len()
    );
}

#[actix_rt::test]
async fn crashed_plugins_restart_with_backoff_and_take_commands_again() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open("gw", dir.path(), HubOptions::default()).unwrap();
    let starts = Arc::new(Mutex::new(Vec::new()));
    let backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_secs(5),
        reset_after: Duration::from_secs(60),
        check_every: Duration::from_millis(5),
    };
    let supervisor = AdapterSupervisor::new(
        Box::new(Flaky {
            starts: starts.clone(),
        }),
        hub.clone(),
        backoff,
    )
    .start();
    actix_rt::time::sleep(Duration::from_millis(20)).await;
    let id = ThingId::parse("gw.flaky.dev.cmd").unwrap();

    assert_eq!(
        command(&hub, &id, "hello").await,
        CommandState::Succeeded {
            confirmed: Some("hello".into())
        }
    );

    // A panic inside a handler: the command fails, the plugin comes back.
    assert!(matches!(
        command(&hub, &id, "panic").await,
        CommandState::Failed { .. }
    ));
    wait_for_starts(&starts, 2).await;
    assert_eq!(
        command(&hub, &id, "again").await,
        CommandState::Succeeded {
            confirmed: Some("again".into())
        }
    );

    // A plugin that stops itself is restarted too, after a longer backoff.
    assert!(matches!(
        command(&hub, &id, "stop").await,
        CommandState::Failed { .. }
    ));
    wait_for_starts(&starts, 3).await;
    let times = starts.lock().clone();
    let first_gap = times[1] - times[0];
    let second_gap = times[2] - times[1];
    assert!(first_gap >= Duration::from_millis(50), "{first_gap:?}");
    assert!(
        second_gap >= Duration::from_millis(100),
        "backoff doubles: {second_gap:?}"
    );

    let status = supervisor.send(GetStatus).await.unwrap();
    assert!(status.running);
    assert_eq!(status.restarts, 2);
}
