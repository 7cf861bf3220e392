//! Running here what is placed here: the loop that follows the replicated
//! records, the catalog and who is up, and starts, upgrades, checkpoints,
//! lets go of and removes services on this gateway to match.
//!
//! A service moves between two live gateways in two steps, so that it never
//! runs twice: the gateway it leaves stops it, writes a last checkpoint and
//! marks its run record let go; only then does the gateway it is placed on
//! take it (checkpoint loaded, outputs adopted with one move more, run
//! record held). When the gateway that ran it is down, the new one takes it
//! at once, from the last checkpoint it has. The outputs keep their ids —
//! `{home}.service.{name}.{output}` — and their history follows them
//! (`fogbank_taas::Hub::adopt`, then the old owner's release).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use fogbank_taas::replicated::{Blob, DRAINING, Record};
use fogbank_taas::{DeviceRef, Kind, ThingService};

use crate::placement::{self, Decision, View};
use crate::replica::{self, CHECKPOINT_EVERY, RunRecord, ServiceRecord};
use crate::shared::{LogLevel, Shared, State};
use crate::{Entry, Manifest, OUTPUT_ADAPTER, ServiceError, Services, output_id};

/// What a placement depends on: the records' and the catalog's
/// generations, the gateways up, and whether this one had settled.
pub(crate) type Seen = (u64, u64, Vec<String>, bool);

impl Services {
    /// Looks at the placement again if anything it depends on changed, and
    /// checkpoints the stores of services that changed theirs.
    pub(crate) fn tend(&self) {
        let settled = self.settled();
        // A placement made while settling took nothing: settling's end is
        // a change too.
        let view = (
            self.hub.records().generation(),
            self.hub.catalog_generation(),
            self.hub.gateways_up(),
            settled,
        );
        let changed = self.seen.lock().as_ref() != Some(&view);
        if changed && settled {
            self.place();
        }
        self.checkpoint_due();
    }

    /// Whether this gateway has been up long enough to place services.
    fn settled(&self) -> bool {
        self.settle_until.is_none_or(|t| Instant::now() >= t)
    }

    /// Places every service and makes this gateway run what is placed here.
    pub(crate) fn place(&self) {
        let _change = self.changes.lock();
        let settled = self.settled();
        let up = self.hub.gateways_up();
        let records = self.hub.records();
        *self.seen.lock() = Some((
            records.generation(),
            self.hub.catalog_generation(),
            up.clone(),
            settled,
        ));
        let up: BTreeSet<String> = up.into_iter().collect();
        let draining: BTreeSet<String> = records
            .with_prefix(DRAINING)
            .into_iter()
            .filter(|r| r.value.is_some())
            .filter_map(|r| r.key.strip_prefix(DRAINING).map(str::to_owned))
            .collect();
        let services = records.with_prefix(replica::SERVICE);
        let things: Vec<ThingService> = if services.is_empty() {
            Vec::new()
        } else {
            self.hub.select_things(|_| true)
        };
        let view = View {
            up: &up,
            draining: &draining,
            things: &things,
        };
        let me = self.hub.gateway().to_owned();
        for record in services {
            let Some(name) = record.key.strip_prefix(replica::SERVICE) else {
                continue;
            };
            let outcome = match parse(&record) {
                Ok(None) => {
                    self.retire(name);
                    Ok(())
                }
                Ok(Some((service, manifest))) => {
                    self.place_one(name, &record, service, manifest, &view, &me, settled)
                }
                Err(error) => Err(error),
            };
            if let Err(error) = outcome {
                tracing::warn!(service = %name, %error, "cannot place the service here");
                self.decisions.lock().insert(
                    name.to_owned(),
                    Decision {
                        gateway: None,
                        reason: format!("gateway {me}: {error}"),
                    },
                );
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn place_one(
        &self,
        name: &str,
        record: &Record,
        service: ServiceRecord,
        manifest: Manifest,
        view: &View,
        me: &str,
        settled: bool,
    ) -> Result<(), ServiceError> {
        if let Err(refused) = self.check_signature(&service, record) {
            if self.entries.lock().contains_key(name) {
                self.release(name)?;
            }
            return Err(refused);
        }
        // Every gateway keeps every component ready: the one that takes
        // over a service whose gateway died starts it without compiling.
        let pre = self.prepared(&service.digest, record)?;
        self.retired.lock().remove(name);
        let run = self.run_record(name);
        let runner = run
            .as_ref()
            .and_then(|(r, _)| r.runner().map(str::to_owned));
        let mut decision = placement::decide(&manifest, &service.home, runner.as_deref(), view);
        let here = decision.gateway.as_deref() == Some(me);
        let hosted = self.entries.lock().contains_key(name);
        match (here, hosted) {
            (true, true) => self.follow(name, record, service, manifest, pre)?,
            (true, false) if settled => match runner.filter(|r| r != me && view.up.contains(r)) {
                Some(other) => {
                    decision.reason =
                        format!("{}; waiting for {other} to let it go", decision.reason);
                }
                None => self.take(name, record, service, manifest, pre, run)?,
            },
            (false, true) => self.release(name)?,
            _ => {}
        }
        self.decisions.lock().insert(name.to_owned(), decision);
        Ok(())
    }

    /// Whether this gateway's trusted keys take the service, as the local
    /// cloud handed it over (its blob is checked against its digest on
    /// arrival, so the digest stands for the component).
    fn check_signature(
        &self,
        service: &ServiceRecord,
        record: &Record,
    ) -> Result<(), ServiceError> {
        let trusted = self.trusted.read();
        if trusted.is_empty() {
            return Ok(());
        }
        if record.blob.as_deref() != Some(service.digest.as_str()) {
            return Err(ServiceError::Invalid(format!(
                "its record names component {} but carries another",
                service.digest
            )));
        }
        let seen = format!(
            "{}\n{}\n{}",
            service.digest,
            service.signature.as_ref().map_or("", |s| s.value.as_str()),
            service.manifest
        );
        if self.verified.lock().contains(&seen) {
            return Ok(());
        }
        trusted.check(
            &service.digest,
            &service.manifest,
            service.signature.as_ref(),
        )?;
        self.verified.lock().insert(seen);
        Ok(())
    }

    /// The compiled component of a record, compiled now if it is new here.
    fn prepared(
        &self,
        digest: &str,
        record: &Record,
    ) -> Result<crate::ServicePre<crate::HostState>, ServiceError> {
        if let Some(pre) = self.prepared.lock().get(digest) {
            return Ok(pre.clone());
        }
        let blob = record.blob.as_deref().unwrap_or_default();
        let component = self
            .hub
            .blob(blob)?
            .ok_or_else(|| ServiceError::Invalid(format!("its component {digest} is not here")))?;
        self.prepare(digest, &component)
    }

    /// Starts running a service here: its store from the gateway that ran
    /// it last, its outputs adopted, its run record held.
    fn take(
        &self,
        name: &str,
        record: &Record,
        service: ServiceRecord,
        manifest: Manifest,
        pre: crate::ServicePre<crate::HostState>,
        run: Option<(RunRecord, Record)>,
    ) -> Result<(), ServiceError> {
        let me = self.hub.gateway();
        let store = self.hub.store();
        let from = match &run {
            Some((last, run_record)) if last.gateway != me => {
                let entries = match &run_record.blob {
                    Some(digest) => match self.hub.blob(digest)? {
                        Some(bytes) => crate::checkpoint::decode(&bytes).map_err(|e| {
                            ServiceError::Invalid(format!(
                                "its checkpoint from {}: {e}",
                                last.gateway
                            ))
                        })?,
                        None => Vec::new(),
                    },
                    None => Vec::new(),
                };
                store.replace_service_data(name, &entries)?;
                last.gateway.clone()
            }
            // Ran here last, or never ran: the store here is its own.
            _ => service.home.clone(),
        };
        // Its outputs keep their ids; one move more than the entry that
        // another gateway holds makes them ours everywhere.
        let held: Vec<(String, u32)> = manifest
            .outputs
            .iter()
            .filter_map(|o| output_id(&service.home, name, &o.name).ok())
            .filter_map(|id| {
                self.hub
                    .inspect_thing(&id, |t| (t.gateway.clone(), t.moves))
            })
            .collect();
        let most = held.iter().map(|(_, moves)| *moves).max().unwrap_or(0);
        let moves = if held.iter().any(|(owner, _)| owner != me) {
            most + 1
        } else {
            most
        };
        if service.home != me || moves > 0 {
            let device = DeviceRef {
                home: service.home.clone(),
                adapter: OUTPUT_ADAPTER.to_owned(),
                device: name.to_owned(),
            };
            self.hub.adopt(&device, &from, moves)?;
        }
        let shared = Arc::new(Shared::new(
            manifest,
            service.digest.clone(),
            service.home.clone(),
        ));
        let checkpointed = shared.store_writes.load(Ordering::Relaxed);
        self.write_run(name, true)?;
        self.announce_outputs(&shared, None, service.enabled)?;
        let mut entry = Entry {
            shared,
            pre,
            worker: None,
            enabled: service.enabled,
            installed_at: service.installed_at,
            stamp: record.stamp.clone(),
            checkpointed,
            checkpoint_at: Instant::now(),
        };
        if from != me && from != service.home {
            entry
                .shared
                .log(LogLevel::Info, format!("taken over from gateway {from}"));
        } else {
            entry.shared.log(
                LogLevel::Info,
                format!("version {} placed here", entry.shared.manifest.version),
            );
        }
        tracing::info!(service = %name, %from, moves, "running the service here");
        if entry.enabled {
            entry.worker = Some(self.start_worker(&entry)?);
        }
        self.entries.lock().insert(name.to_owned(), entry);
        Ok(())
    }

    /// Keeps a service that runs here in step with its record: an upgrade,
    /// a start, a stop.
    fn follow(
        &self,
        name: &str,
        record: &Record,
        service: ServiceRecord,
        manifest: Manifest,
        pre: crate::ServicePre<crate::HostState>,
    ) -> Result<(), ServiceError> {
        let mut entries = self.entries.lock();
        let Some(entry) = entries.get_mut(name) else {
            return Ok(());
        };
        if entry.stamp == record.stamp {
            return Ok(());
        }
        entry.stamp = record.stamp.clone();
        entry.installed_at = service.installed_at;
        if entry.shared.digest != service.digest || entry.shared.manifest != manifest {
            let shared = Arc::new(Shared::new(
                manifest,
                service.digest.clone(),
                service.home.clone(),
            ));
            shared.inherit_logs(&entry.shared);
            shared.store_writes.store(
                entry.shared.store_writes.load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
            if let Some(worker) = entry.worker.take() {
                worker.stop();
            }
            self.announce_outputs(&shared, Some(&entry.shared), service.enabled)?;
            shared.log(
                LogLevel::Info,
                format!("upgraded to version {}", shared.manifest.version),
            );
            entry.shared = shared;
            entry.pre = pre;
            entry.enabled = service.enabled;
            if entry.enabled {
                entry.worker = Some(self.start_worker(entry)?);
            }
            return Ok(());
        }
        entry.enabled = service.enabled;
        if service.enabled {
            let state = entry.shared.status().state;
            if entry.worker.is_none() || matches!(state, State::Failed | State::Stopped) {
                if let Some(worker) = entry.worker.take() {
                    worker.stop();
                }
                entry.shared.status.lock().restarts = 0;
                entry.worker = Some(self.start_worker(entry)?);
                crate::set_outputs_available(&self.hub, &entry.shared, true);
            }
        } else {
            if let Some(worker) = entry.worker.take() {
                worker.stop();
            }
            crate::set_outputs_available(&self.hub, &entry.shared, false);
            entry.shared.log(LogLevel::Info, "stopped".into());
        }
        Ok(())
    }

    /// Stops a service placed elsewhere now and lets it go: a last
    /// checkpoint, the run record marked let go.
    fn release(&self, name: &str) -> Result<(), ServiceError> {
        let Some(mut entry) = self.entries.lock().remove(name) else {
            return Ok(());
        };
        if let Some(worker) = entry.worker.take() {
            worker.stop();
        }
        crate::set_outputs_available(&self.hub, &entry.shared, false);
        self.write_run(name, false)?;
        tracing::info!(service = %name, "let go of the service: placed on another gateway");
        Ok(())
    }

    /// A removed service: stopped, its outputs withdrawn (those owned
    /// here), its store deleted.
    fn retire(&self, name: &str) {
        self.decisions.lock().remove(name);
        let entry = self.entries.lock().remove(name);
        if let Some(mut entry) = entry {
            if let Some(worker) = entry.worker.take() {
                worker.stop();
            }
            for output in &entry.shared.manifest.outputs {
                let Ok(id) = output_id(&entry.shared.home, name, &output.name) else {
                    continue;
                };
                if self
                    .hub
                    .inspect_thing(&id, |t| t.gateway == self.hub.gateway())
                    == Some(true)
                    && let Err(error) = self.hub.withdraw(&id)
                {
                    tracing::warn!(service = %name, %id, %error, "cannot withdraw an output");
                }
            }
            tracing::info!(service = %name, "removed here");
        }
        // Once per run is enough: nothing writes a removed service's store.
        if self.retired.lock().insert(name.to_owned())
            && let Err(error) = self.hub.store().delete_service(name)
        {
            tracing::warn!(service = %name, %error, "cannot delete the service's store");
        }
    }

    /// Writes the run record of `name` with a checkpoint of its store.
    pub(crate) fn write_run(&self, name: &str, held: bool) -> Result<(), ServiceError> {
        let run = RunRecord {
            gateway: self.hub.gateway().to_owned(),
            held,
        };
        let checkpoint = crate::checkpoint::encode(&self.hub.store().service_data(name)?);
        // A string and a bool: it serialises.
        let value = serde_json::to_string(&run).unwrap_or_default();
        self.hub.put_record(
            &format!("{}{name}", replica::RUN),
            Some(value),
            Blob::New(&checkpoint),
        )?;
        Ok(())
    }

    /// Checkpoints every service here whose store changed since its last
    /// checkpoint, at most once per [`CHECKPOINT_EVERY`].
    fn checkpoint_due(&self) {
        let due: Vec<(String, u64)> = self
            .entries
            .lock()
            .iter()
            .filter_map(|(name, entry)| {
                let writes = entry.shared.store_writes.load(Ordering::Relaxed);
                (writes != entry.checkpointed && entry.checkpoint_at.elapsed() >= CHECKPOINT_EVERY)
                    .then(|| (name.clone(), writes))
            })
            .collect();
        for (name, writes) in due {
            let _change = self.changes.lock();
            if !self.entries.lock().contains_key(&name) {
                continue;
            }
            match self.write_run(&name, true) {
                Ok(()) => {
                    if let Some(entry) = self.entries.lock().get_mut(&name) {
                        entry.checkpointed = writes;
                        entry.checkpoint_at = Instant::now();
                    }
                }
                Err(error) => tracing::warn!(service = %name, %error, "checkpoint failed"),
            }
        }
    }

    /// Announces the outputs of a service that runs here, and withdraws
    /// those only the version it replaces had.
    pub(crate) fn announce_outputs(
        &self,
        shared: &Shared,
        replaced: Option<&Shared>,
        available: bool,
    ) -> Result<(), ServiceError> {
        let manifest = &shared.manifest;
        for thing in output_things(shared, available)? {
            self.hub.announce(thing)?;
        }
        for old in replaced.iter().flat_map(|s| &s.manifest.outputs) {
            if manifest.output(&old.name).is_none() {
                self.hub
                    .withdraw(&output_id(&shared.home, &manifest.name, &old.name)?)?;
            }
        }
        Ok(())
    }

    pub(crate) fn start_worker(&self, entry: &Entry) -> Result<crate::Worker, ServiceError> {
        crate::Worker::start(
            entry.shared.clone(),
            entry.pre.clone(),
            self.hub.clone(),
            self.tokio(),
        )
        .map_err(|source| ServiceError::Thread {
            name: entry.shared.manifest.name.clone(),
            source,
        })
    }
}

/// A `service/` record: `None` when the service was removed.
fn parse(record: &Record) -> Result<Option<(ServiceRecord, Manifest)>, ServiceError> {
    let Some(value) = &record.value else {
        return Ok(None);
    };
    let service: ServiceRecord = serde_json::from_str(value)
        .map_err(|e| ServiceError::Invalid(format!("unreadable service record: {e}")))?;
    let manifest = Manifest::parse(&service.manifest)?;
    Ok(Some((service, manifest)))
}

/// The thing services a service's outputs are, as the catalog shows them.
pub(crate) fn output_things(
    shared: &Shared,
    available: bool,
) -> Result<Vec<ThingService>, ServiceError> {
    let manifest = &shared.manifest;
    manifest
        .outputs
        .iter()
        .map(|output| {
            let id = output_id(&shared.home, &manifest.name, &output.name)?;
            let mut thing = ThingService::new(
                id,
                Kind::Sensor,
                &output.semantic_type,
                output.unit.as_deref(),
            )
            .at(&output.location)
            .with_device_address(&format!("service:{}", manifest.name));
            thing.data_type = output.data_type();
            thing.available = available;
            thing.metadata.insert(
                "service-version".into(),
                serde_json::Value::String(manifest.version.clone()),
            );
            Ok(thing)
        })
        .collect()
}
