//! Application requests and the pure rules that place them on sensor
//! services: which services match, which are free, which conflict, and
//! what the application is told — *full*, *partial* with a waiting time,
//! or *unable*.
//!
//! Two requests conflict on a sensor service unless both only read it: a
//! read and a switch, or two actuations, never run on one service at once.
//! The later one waits for the earlier to end.

use std::collections::BTreeMap;

use fogbank_smanage::ConfigAction;
use fogbank_taas::Location;
use serde::{Deserialize, Serialize};

use crate::registry::Registry;

/// What an application asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestSpec {
    pub semantic_type: String,
    /// A location prefix, by whole segments.
    pub location: String,
    pub frequency_s: u16,
    pub period_s: u16,
    pub action: Action,
    /// For `set`.
    pub value: Option<i16>,
    /// How many sensor services; all that match when absent.
    pub count: Option<usize>,
    /// Where the data goes: an SDVS address, or the controller.
    pub destination: Option<u16>,
    pub accept_partial: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Read,
    On,
    Off,
    Set,
}

impl Action {
    /// The name the API and the store use.
    pub fn name(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::On => "on",
            Action::Off => "off",
            Action::Set => "set",
        }
    }
}

impl Action {
    pub fn wire(self) -> ConfigAction {
        match self {
            Action::Read => ConfigAction::Read,
            Action::On => ConfigAction::SwitchOn,
            Action::Off => ConfigAction::SwitchOff,
            Action::Set => ConfigAction::Set,
        }
    }

    pub fn conflicts_with(self, other: Action) -> bool {
        !(self == Action::Read && other == Action::Read)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    Offered,
    Queued,
    Running,
    Completed,
    Cancelled,
    Failed,
}

impl RequestState {
    /// The name the API and the store use.
    pub fn name(self) -> &'static str {
        match self {
            RequestState::Offered => "offered",
            RequestState::Queued => "queued",
            RequestState::Running => "running",
            RequestState::Completed => "completed",
            RequestState::Cancelled => "cancelled",
            RequestState::Failed => "failed",
        }
    }
}

impl RequestState {
    pub fn is_active(self) -> bool {
        matches!(self, RequestState::Queued | RequestState::Running)
    }

    pub fn is_over(self) -> bool {
        matches!(
            self,
            RequestState::Completed | RequestState::Cancelled | RequestState::Failed
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Full,
    Partial,
}

impl Outcome {
    /// The name the API and the store use.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Full => "full",
            Outcome::Partial => "partial",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssignmentState {
    /// Waiting for the service to be free.
    Pending,
    /// The instruction is installed in the SDVS.
    Programmed,
    /// The SDVS reported it complete.
    Completed,
    /// Its SDVS went down, or the instruction was removed before it ran.
    Lost,
    /// Cancelled with its request.
    Cancelled,
}

impl AssignmentState {
    /// The name the API and the store use.
    pub fn name(self) -> &'static str {
        match self {
            AssignmentState::Pending => "pending",
            AssignmentState::Programmed => "programmed",
            AssignmentState::Completed => "completed",
            AssignmentState::Lost => "lost",
            AssignmentState::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub sdvs: u16,
    pub service: u8,
    pub gateway: String,
    pub state: AssignmentState,
    /// Why it waits (pending): `conflict`, `full` or `low_battery`.
    pub waiting_for: Option<String>,
    /// Unix seconds it was programmed.
    pub programmed_at: Option<u64>,
    pub counter: u32,
    pub executed: bool,
    pub ttl_left: u16,
}

impl Assignment {
    pub fn new(sdvs: u16, service: u8, gateway: String, waiting_for: Option<&str>) -> Self {
        Assignment {
            sdvs,
            service,
            gateway,
            state: AssignmentState::Pending,
            waiting_for: waiting_for.map(str::to_owned),
            programmed_at: None,
            counter: 0,
            executed: false,
            ttl_left: 0,
        }
    }

    /// Holds its service against conflicting requests.
    pub fn holds(&self) -> bool {
        self.state == AssignmentState::Programmed
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: u16,
    pub spec: RequestSpec,
    pub state: RequestState,
    pub outcome: Outcome,
    /// Unix seconds.
    pub created: u64,
    pub finished: Option<u64>,
    pub assignments: Vec<Assignment>,
    /// Services asked for (`count`) beyond what exists.
    pub missing: usize,
    pub reason: Option<String>,
    pub readings: u64,
}

impl Request {
    /// When its programmed instructions end, at the latest.
    pub fn ends_at(&self) -> Option<u64> {
        self.assignments
            .iter()
            .filter_map(|a| a.programmed_at)
            .max()
            .map(|at| at + u64::from(self.spec.period_s))
    }
}

/// Every request the controller holds, by id.
pub type Requests = BTreeMap<u16, Request>;

/// Why nothing can serve a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unable {
    #[error("no SDVS up offers a sensor service of type {semantic_type:?} under {location:?}")]
    NoMatch {
        semantic_type: String,
        location: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Where a new request can run now and where it must wait.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub assignments: Vec<Assignment>,
    pub missing: usize,
    /// Seconds until the last pending service is expected free; `None`
    /// when nothing waits, or the wait has no known end (low battery).
    pub waiting_s: Option<u64>,
}

impl Plan {
    pub fn outcome(&self) -> Outcome {
        if self.missing == 0 && self.assignments.iter().all(|a| a.waiting_for.is_none()) {
            Outcome::Full
        } else {
            Outcome::Partial
        }
    }
}

/// What holds a service, and until when.
fn blocker(
    requests: &Requests,
    action: Action,
    sdvs: u16,
    service: u8,
    exclude: u16,
) -> Option<Option<u64>> {
    requests
        .values()
        .filter(|r| r.id != exclude && r.state.is_active())
        .filter(|r| r.spec.action.conflicts_with(action))
        .find(|r| {
            r.assignments
                .iter()
                .any(|a| a.holds() && a.sdvs == sdvs && a.service == service)
        })
        .map(|r| r.ends_at())
}

/// Why a service cannot take an instruction now, if it cannot, and the
/// expected end of the wait.
pub fn availability(
    registry: &Registry,
    requests: &Requests,
    action: Action,
    sdvs: u16,
    service: u8,
    exclude: u16,
) -> Result<(), (&'static str, Option<u64>)> {
    let Some(record) = registry.get(sdvs) else {
        return Err(("down", None));
    };
    if !record.up {
        return Err(("down", None));
    }
    if let Some(until) = blocker(requests, action, sdvs, service, exclude) {
        return Err(("conflict", until));
    }
    if record.full {
        let until = requests
            .values()
            .filter(|r| r.state.is_active())
            .filter(|r| r.assignments.iter().any(|a| a.holds() && a.sdvs == sdvs))
            .filter_map(Request::ends_at)
            .min();
        return Err(("full", until));
    }
    if record.low_battery && action == Action::Read {
        return Err(("low_battery", None));
    }
    Ok(())
}

/// Places a request: the free matching services first (least busy
/// first), then the busy ones as pending, up to `count`.
pub fn plan(
    registry: &Registry,
    requests: &Requests,
    spec: &RequestSpec,
    now: u64,
) -> Result<Plan, Unable> {
    if spec.action == Action::Set && spec.value.is_none() {
        return Err(Unable::Invalid("a set needs a value".into()));
    }
    if spec.count == Some(0) {
        return Err(Unable::Invalid("count must be at least 1".into()));
    }
    let location = Location::new(&spec.location);
    let mut candidates: Vec<(u8, u16, u8)> = registry
        .sdvs
        .values()
        .filter(|s| s.up)
        .flat_map(|s| {
            s.matching(&spec.semantic_type, &location)
                .map(move |service| (s.busy, s.address, service))
        })
        .collect();
    if candidates.is_empty() {
        return Err(Unable::NoMatch {
            semantic_type: spec.semantic_type.clone(),
            location: spec.location.clone(),
        });
    }
    candidates.sort();
    let wanted = spec.count.unwrap_or(candidates.len());
    let mut free = Vec::new();
    let mut busy = Vec::new();
    let mut waiting_s: Option<u64> = None;
    let mut unbounded = false;
    for (_, sdvs, service) in &candidates {
        let gateway = registry
            .get(*sdvs)
            .map(|s| s.endpoint.to_string())
            .unwrap_or_default();
        match availability(registry, requests, spec.action, *sdvs, *service, 0) {
            Ok(()) => free.push(Assignment::new(*sdvs, *service, gateway, None)),
            Err((why, until)) => {
                busy.push((Assignment::new(*sdvs, *service, gateway, Some(why)), until));
            }
        }
    }
    let mut assignments: Vec<Assignment> = free.into_iter().take(wanted).collect();
    for (assignment, until) in busy {
        if assignments.len() >= wanted {
            break;
        }
        match until {
            Some(at) => waiting_s = Some(waiting_s.unwrap_or(0).max(at.saturating_sub(now))),
            None => unbounded = true,
        }
        assignments.push(assignment);
    }
    Ok(Plan {
        missing: wanted.saturating_sub(candidates.len()),
        assignments,
        waiting_s: if unbounded { None } else { waiting_s },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::SdvsRecord;

    fn registry() -> Registry {
        let mut registry = Registry::default();
        for (address, floor) in [(0x100, 1), (0x101, 2), (0x200, 1)] {
            let mut sdvs = SdvsRecord::new(address, "127.0.0.1:7602".parse().unwrap(), 0, 10_000);
            sdvs.location = format!("campus/building-a/floor-{floor}");
            sdvs.services = vec![
                (1, true, "temperature".into(), "sim".into()),
                (2, true, "switch".into(), "sim".into()),
            ];
            registry.sdvs.insert(address, sdvs);
        }
        registry
    }

    fn spec(semantic_type: &str, action: Action) -> RequestSpec {
        RequestSpec {
            semantic_type: semantic_type.into(),
            location: "campus/building-a".into(),
            frequency_s: 1,
            period_s: 10,
            action,
            value: None,
            count: None,
            destination: None,
            accept_partial: true,
        }
    }

    fn running(id: u16, plan: Plan, spec: RequestSpec, now: u64) -> Request {
        Request {
            id,
            spec,
            state: RequestState::Running,
            outcome: plan.outcome(),
            created: now,
            finished: None,
            assignments: plan
                .assignments
                .into_iter()
                .map(|mut a| {
                    a.state = AssignmentState::Programmed;
                    a.programmed_at = Some(now);
                    a
                })
                .collect(),
            missing: 0,
            reason: None,
            readings: 0,
        }
    }

    #[test]
    fn names_are_what_serde_writes() {
        for state in [
            RequestState::Offered,
            RequestState::Queued,
            RequestState::Running,
            RequestState::Completed,
            RequestState::Cancelled,
            RequestState::Failed,
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), state.name());
        }
        for state in [
            AssignmentState::Pending,
            AssignmentState::Programmed,
            AssignmentState::Completed,
            AssignmentState::Lost,
            AssignmentState::Cancelled,
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), state.name());
        }
        for action in [Action::Read, Action::On, Action::Off, Action::Set] {
            assert_eq!(serde_json::to_value(action).unwrap(), action.name());
        }
        for outcome in [Outcome::Full, Outcome::Partial] {
            assert_eq!(serde_json::to_value(outcome).unwrap(), outcome.name());
        }
    }

    #[test]
    fn every_match_is_full_and_an_unknown_type_is_unable() {
        let registry = registry();
        let none = Requests::new();
        let plan = plan(&registry, &none, &spec("temperature", Action::Read), 0).unwrap();
        assert_eq!(plan.outcome(), Outcome::Full);
        assert_eq!(plan.assignments.len(), 3);
        assert!(matches!(
            super::plan(&registry, &none, &spec("co2", Action::Read), 0),
            Err(Unable::NoMatch { .. })
        ));
    }

    #[test]
    fn a_count_beyond_what_exists_is_partial() {
        let registry = registry();
        let mut wanted = spec("temperature", Action::Read);
        wanted.count = Some(5);
        let plan = plan(&registry, &Requests::new(), &wanted, 0).unwrap();
        assert_eq!((plan.assignments.len(), plan.missing), (3, 2));
        assert_eq!(plan.outcome(), Outcome::Partial);
    }

    #[test]
    fn a_switch_off_waits_for_the_reads_of_its_services() {
        let registry = registry();
        let reads = spec("switch", Action::Read);
        let first = plan(&registry, &Requests::new(), &reads, 100).unwrap();
        let requests = Requests::from([(1, running(1, first, reads.clone(), 100))]);
        let off = plan(&registry, &requests, &spec("switch", Action::Off), 103).unwrap();
        assert_eq!(off.outcome(), Outcome::Partial);
        assert!(
            off.assignments
                .iter()
                .all(|a| a.waiting_for.as_deref() == Some("conflict"))
        );
        assert_eq!(off.waiting_s, Some(7));
        // Another read does not conflict with reads.
        let again = plan(&registry, &requests, &reads, 103).unwrap();
        assert_eq!(again.outcome(), Outcome::Full);
    }
}
