//! Who is in the local cloud and how current our copy of each member's
//! catalog is. Pure bookkeeping — no I/O — so the rules that decide when to
//! apply a delta, when to fetch a snapshot and when a gateway is down are
//! tested on their own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use parking_lot::RwLock;

/// What to do with a catalog message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing: our copy is current, or a snapshot is already on its way.
    Nothing,
    /// Apply the delta: it follows on from our copy.
    Apply,
    /// Our copy is behind or from another run of the gateway: fetch its
    /// snapshot from `PeerId`.
    Fetch(PeerId),
    /// The message claims a gateway id another live peer holds.
    Impostor,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub gateway: String,
    pub peer: PeerId,
    pub up: bool,
    /// Catalog run and version our copy is at; `None` before the first
    /// snapshot and after the member was down.
    pub copy: Option<(u64, u64)>,
    pub things: usize,
    /// Readings it has stored since it started, as its last beacon said.
    pub readings_ingested: u64,
    pub last_heard: Instant,
    pub addresses: Vec<Multiaddr>,
    fetching: bool,
}

/// Why a gateway cannot be forgotten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForgetError {
    #[error("no gateway {0} is known to the local cloud")]
    Unknown(String),
    #[error("gateway {0} is up; only a gateway that is down can be forgotten")]
    StillUp(String),
}

/// A member that came up or went down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Up(String),
    Down(String),
}

/// The gateway each known peer speaks for: a mirror of the members, kept by
/// [`Members`], shared with the tasks that read other gateways' readings
/// streams outside the swarm loop.
pub type Speakers = Arc<RwLock<HashMap<PeerId, String>>>;

/// `peer` no longer speaks for `gateway` — unless it has since taken
/// another id, which it keeps.
fn no_longer_speaks(speakers: &mut HashMap<PeerId, String>, peer: &PeerId, gateway: &str) {
    if speakers.get(peer).is_some_and(|g| g == gateway) {
        speakers.remove(peer);
    }
}

#[derive(Debug, Default)]
pub struct Members {
    members: HashMap<String, Member>,
    speakers: Speakers,
}

impl Members {
    pub fn get(&self, gateway: &str) -> Option<&Member> {
        self.members.get(gateway)
    }

    pub fn all(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// The peer that serves calls for `gateway`, if it is up.
    pub fn peer_of(&self, gateway: &str) -> Option<PeerId> {
        self.members.get(gateway).filter(|m| m.up).map(|m| m.peer)
    }

    /// Who speaks for which gateway, kept current as members come, change
    /// identity and are forgotten.
    pub fn speakers(&self) -> Speakers {
        self.speakers.clone()
    }

    /// Notes that `peer`, speaking as `gateway`, was heard now. Returns
    /// `None` for an impostor (another live peer holds that gateway id),
    /// else whether the member just came up.
    fn heard(&mut self, gateway: &str, peer: PeerId, now: Instant) -> Option<bool> {
        match self.members.get_mut(gateway) {
            Some(member) if member.peer != peer && member.up => None,
            Some(member) => {
                if member.peer != peer {
                    // The gateway came back with a new identity (its data
                    // dir was replaced): what we knew is from another life.
                    let mut speakers = self.speakers.write();
                    no_longer_speaks(&mut speakers, &member.peer, gateway);
                    speakers.insert(peer, gateway.to_owned());
                    member.peer = peer;
                    member.copy = None;
                    member.addresses.clear();
                }
                member.last_heard = now;
                let came_up = !member.up;
                member.up = true;
                Some(came_up)
            }
            None => {
                self.speakers.write().insert(peer, gateway.to_owned());
                self.members.insert(
                    gateway.to_owned(),
                    Member {
                        gateway: gateway.to_owned(),
                        peer,
                        up: true,
                        copy: None,
                        things: 0,
                        readings_ingested: 0,
                        last_heard: now,
                        addresses: Vec::new(),
                        fetching: false,
                    },
                );
                Some(true)
            }
        }
    }

    /// A message from `peer` as `gateway`: its member, and `Up` if it just
    /// came up; `None` for an impostor.
    fn message(
        &mut self,
        gateway: &str,
        peer: PeerId,
        now: Instant,
    ) -> Option<(&mut Member, Option<Transition>)> {
        let came_up = self.heard(gateway, peer, now)?;
        let member = self.members.get_mut(gateway)?;
        Some((member, came_up.then(|| Transition::Up(gateway.to_owned()))))
    }

    fn fetch(member: &mut Member) -> Verdict {
        if member.fetching {
            Verdict::Nothing
        } else {
            member.fetching = true;
            Verdict::Fetch(member.peer)
        }
    }

    /// A beacon: the member's catalog is at `(incarnation, version)`.
    pub fn on_beacon(
        &mut self,
        gateway: &str,
        peer: PeerId,
        incarnation: u64,
        version: u64,
        things: usize,
        now: Instant,
    ) -> (Verdict, Option<Transition>) {
        let Some((member, transition)) = self.message(gateway, peer, now) else {
            return (Verdict::Impostor, None);
        };
        member.things = things;
        let verdict = if member.copy == Some((incarnation, version)) {
            Verdict::Nothing
        } else {
            Self::fetch(member)
        };
        (verdict, transition)
    }

    /// A delta from `from` to `to`. Applied only if it follows on from our
    /// copy; anything else means we missed something.
    pub fn on_delta(
        &mut self,
        gateway: &str,
        peer: PeerId,
        incarnation: u64,
        from: u64,
        to: u64,
        now: Instant,
    ) -> (Verdict, Option<Transition>) {
        let Some((member, transition)) = self.message(gateway, peer, now) else {
            return (Verdict::Impostor, None);
        };
        let verdict = match member.copy {
            _ if member.fetching => Verdict::Nothing,
            Some((run, version)) if run == incarnation && version == from => {
                member.copy = Some((incarnation, to));
                Verdict::Apply
            }
            Some((run, version)) if run == incarnation && to <= version => Verdict::Nothing,
            _ => Self::fetch(member),
        };
        (verdict, transition)
    }

    /// A snapshot arrived: our copy is now at its version.
    pub fn on_snapshot(
        &mut self,
        gateway: &str,
        peer: PeerId,
        incarnation: u64,
        version: u64,
        things: usize,
        now: Instant,
    ) -> Option<Transition> {
        let (member, transition) = self.message(gateway, peer, now)?;
        member.fetching = false;
        member.copy = Some((incarnation, version));
        member.things = things;
        transition
    }

    /// A connection to `peer` is up. A member heard of through others, of
    /// which we hold no copy, is fetched now rather than at its next
    /// beacon: the beacon that named it found it unconnected.
    pub fn connected(&mut self, peer: &PeerId) -> Verdict {
        match self.members.values_mut().find(|m| m.peer == *peer) {
            Some(member) if member.copy.is_none() => Self::fetch(member),
            _ => Verdict::Nothing,
        }
    }

    /// A snapshot request failed: the next beacon asks again.
    pub fn snapshot_failed(&mut self, peer: &PeerId) {
        for member in self.members.values_mut().filter(|m| m.peer == *peer) {
            member.fetching = false;
        }
    }

    /// What a member's beacon said it has ingested.
    pub fn set_ingested(&mut self, gateway: &str, readings: u64) {
        if let Some(member) = self.members.get_mut(gateway) {
            member.readings_ingested = readings;
        }
    }

    pub fn set_addresses(&mut self, peer: &PeerId, addresses: Vec<Multiaddr>) {
        for member in self.members.values_mut().filter(|m| m.peer == *peer) {
            member.addresses = addresses.clone();
        }
    }

    /// Forgets a member that is down, for good.
    pub fn forget(&mut self, gateway: &str) -> Result<(), ForgetError> {
        match self.members.get(gateway) {
            None => Err(ForgetError::Unknown(gateway.to_owned())),
            Some(member) if member.up => Err(ForgetError::StillUp(gateway.to_owned())),
            Some(_) => {
                if let Some(member) = self.members.remove(gateway) {
                    no_longer_speaks(&mut self.speakers.write(), &member.peer, gateway);
                }
                Ok(())
            }
        }
    }

    /// Members not heard from for `silence` are down.
    pub fn expire(&mut self, now: Instant, silence: Duration) -> Vec<Transition> {
        let mut down = Vec::new();
        for member in self.members.values_mut() {
            if member.up && now.duration_since(member.last_heard) > silence {
                Self::go_down(member);
                down.push(Transition::Down(member.gateway.clone()));
            }
        }
        down
    }

    /// The last connection to `peer` closed: its gateway is down now.
    pub fn disconnected(&mut self, peer: &PeerId) -> Vec<Transition> {
        let mut down = Vec::new();
        for member in self.members.values_mut() {
            if member.up && member.peer == *peer {
                Self::go_down(member);
                down.push(Transition::Down(member.gateway.clone()));
            }
        }
        down
    }

    fn go_down(member: &mut Member) {
        member.up = false;
        // Whatever it did while we could not hear it must be fetched again.
        member.copy = None;
        member.fetching = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        PeerId::random()
    }

    #[test]
    fn a_new_member_is_fetched_once_then_followed_by_deltas() {
        let mut members = Members::default();
        let a = peer();
        let now = Instant::now();
        let (verdict, transition) = members.on_beacon("gw-a", a, 1, 5, 3, now);
        assert_eq!(verdict, Verdict::Fetch(a));
        assert_eq!(transition, Some(Transition::Up("gw-a".into())));
        // A second beacon while the snapshot is on its way asks nothing more.
        assert_eq!(
            members.on_beacon("gw-a", a, 1, 5, 3, now).0,
            Verdict::Nothing
        );
        members.on_snapshot("gw-a", a, 1, 5, 3, now);
        assert_eq!(
            members.on_beacon("gw-a", a, 1, 5, 3, now).0,
            Verdict::Nothing
        );
        assert_eq!(members.on_delta("gw-a", a, 1, 5, 7, now).0, Verdict::Apply);
        assert_eq!(members.get("gw-a").unwrap().copy, Some((1, 7)));
        // A repeat of an applied delta changes nothing.
        assert_eq!(
            members.on_delta("gw-a", a, 1, 5, 7, now).0,
            Verdict::Nothing
        );
    }

    #[test]
    fn a_gap_or_a_restart_means_a_new_snapshot() {
        let mut members = Members::default();
        let a = peer();
        let now = Instant::now();
        members.on_beacon("gw-a", a, 1, 5, 3, now);
        members.on_snapshot("gw-a", a, 1, 5, 3, now);
        assert_eq!(
            members.on_delta("gw-a", a, 1, 6, 8, now).0,
            Verdict::Fetch(a)
        );
        members.on_snapshot("gw-a", a, 1, 8, 3, now);
        // The gateway restarted: versions start again under a new run.
        assert_eq!(
            members.on_delta("gw-a", a, 2, 0, 1, now).0,
            Verdict::Fetch(a)
        );
        members.snapshot_failed(&a);
        assert_eq!(
            members.on_beacon("gw-a", a, 2, 1, 3, now).0,
            Verdict::Fetch(a)
        );
    }

    #[test]
    fn a_member_without_a_copy_is_fetched_once_connected() {
        let mut members = Members::default();
        let (a, stranger) = (peer(), peer());
        let now = Instant::now();
        // Heard through another member: the fetch fails for want of a
        // connection, and the connection fetches.
        assert_eq!(
            members.on_beacon("gw-a", a, 1, 5, 3, now).0,
            Verdict::Fetch(a)
        );
        members.snapshot_failed(&a);
        assert_eq!(members.connected(&a), Verdict::Fetch(a));
        assert_eq!(
            members.connected(&a),
            Verdict::Nothing,
            "already on its way"
        );
        members.on_snapshot("gw-a", a, 1, 5, 3, now);
        assert_eq!(members.connected(&a), Verdict::Nothing, "a copy is held");
        assert_eq!(members.connected(&stranger), Verdict::Nothing);
    }

    #[test]
    fn silence_and_disconnection_bring_members_down_and_a_beacon_back() {
        let mut members = Members::default();
        let (a, b) = (peer(), peer());
        let start = Instant::now();
        members.on_beacon("gw-a", a, 1, 0, 0, start);
        members.on_snapshot("gw-a", a, 1, 0, 0, start);
        members.on_beacon("gw-b", b, 1, 0, 0, start);
        let later = start + Duration::from_secs(3);
        members.on_beacon("gw-b", b, 1, 0, 0, later);
        assert_eq!(
            members.expire(later, Duration::from_millis(2500)),
            vec![Transition::Down("gw-a".into())]
        );
        assert_eq!(members.peer_of("gw-a"), None);
        let (verdict, transition) = members.on_beacon("gw-a", a, 1, 0, 0, later);
        assert_eq!(transition, Some(Transition::Up("gw-a".into())));
        assert_eq!(
            verdict,
            Verdict::Fetch(a),
            "a member back from silence is fetched again"
        );
        assert_eq!(
            members.disconnected(&b),
            vec![Transition::Down("gw-b".into())]
        );
        assert!(members.disconnected(&b).is_empty());
        assert_eq!(
            members.forget("gw-a"),
            Err(ForgetError::StillUp("gw-a".into()))
        );
        assert_eq!(members.forget("gw-b"), Ok(()));
        assert_eq!(
            members.forget("gw-b"),
            Err(ForgetError::Unknown("gw-b".into()))
        );
        assert!(members.get("gw-b").is_none());
    }

    #[test]
    fn a_live_gateway_id_cannot_be_claimed_by_another_peer() {
        let mut members = Members::default();
        let (a, mallory) = (peer(), peer());
        let now = Instant::now();
        members.on_beacon("gw-a", a, 1, 0, 0, now);
        assert_eq!(
            members.on_beacon("gw-a", mallory, 1, 0, 0, now).0,
            Verdict::Impostor
        );
        assert_eq!(members.peer_of("gw-a"), Some(a));
        // Once the old peer is down, a new identity may take the id over.
        members.disconnected(&a);
        assert_eq!(
            members.on_beacon("gw-a", mallory, 9, 0, 0, now).0,
            Verdict::Fetch(mallory)
        );
        assert_eq!(members.peer_of("gw-a"), Some(mallory));
    }

    #[test]
    fn speakers_mirror_who_speaks_for_which_gateway() {
        let mut members = Members::default();
        let speakers = members.speakers();
        let (a, b, a_again) = (peer(), peer(), peer());
        let now = Instant::now();
        members.on_beacon("gw-a", a, 1, 0, 0, now);
        members.on_beacon("gw-b", b, 1, 0, 0, now);
        let speaker = |peer: &PeerId| speakers.read().get(peer).cloned();
        assert_eq!(speaker(&a).as_deref(), Some("gw-a"));
        assert_eq!(speaker(&b).as_deref(), Some("gw-b"));
        // An impostor speaks for no one.
        members.on_beacon("gw-a", a_again, 1, 0, 0, now);
        assert_eq!(speaker(&a_again), None);
        // A new identity after the old one went down takes its place.
        members.disconnected(&a);
        members.on_beacon("gw-a", a_again, 2, 0, 0, now);
        assert_eq!(speaker(&a), None);
        assert_eq!(speaker(&a_again).as_deref(), Some("gw-a"));
        // A forgotten gateway's peer speaks for no one either.
        members.disconnected(&b);
        assert_eq!(members.forget("gw-b"), Ok(()));
        assert_eq!(speaker(&b), None);
        assert_eq!(speakers.read().len(), 1);
        // A peer that came back under another id speaks for that one, even
        // once its old id is forgotten.
        members.disconnected(&a_again);
        members.on_beacon("gw-c", a_again, 1, 0, 0, now);
        assert_eq!(members.forget("gw-a"), Ok(()));
        assert_eq!(speaker(&a_again).as_deref(), Some("gw-c"));
    }
}
