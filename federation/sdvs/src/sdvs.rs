//! One software-defined virtual sensor: a device of this gateway as the
//! controller sees it — its address, its sensor services, its two tables,
//! and what it has already reported. Building packets lives here; sending
//! them is the agent's.

use std::collections::BTreeMap;

use fogbank_smanage::configuring::ConfiguringTable;
use fogbank_smanage::forwarding::ForwardingTable;
use fogbank_smanage::{Address, Body, Features, Packet, Report, SdvsStatus};
use fogbank_taas::ThingId;

/// Every packet an SDVS starts leaves with this TTL.
pub const INITIAL_TTL: u8 = 16;

#[derive(Debug, Clone)]
pub struct Sdvs {
    pub address: Address,
    /// `{adapter}.{device}`.
    pub device: String,
    pub services: BTreeMap<u8, ThingId>,
    /// What the controller was last told (ReportFeatures).
    pub features: Features,
    /// The device's `battery` thing service, if it has one.
    pub battery_thing: Option<ThingId>,
    /// The last battery level, 255 = mains.
    pub battery: u8,
    pub forwarding: ForwardingTable,
    pub configuring: ConfiguringTable,
    pub low_battery_reported: bool,
    next_message_id: u8,
}

impl Sdvs {
    pub fn new(address: Address, device: String, max_instructions: usize) -> Self {
        Sdvs {
            address,
            device,
            services: BTreeMap::new(),
            features: Features::default(),
            battery_thing: None,
            battery: SdvsStatus::MAINS,
            forwarding: ForwardingTable::default(),
            configuring: ConfiguringTable::new(max_instructions),
            low_battery_reported: false,
            next_message_id: 0,
        }
    }

    /// A packet this SDVS starts, towards the controller's endpoint.
    pub fn packet(&mut self, destination: Address, body: Body) -> Packet {
        let message_id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1);
        Packet {
            source: self.address,
            destination,
            next_hop: Address::CONTROLLER,
            ttl: INITIAL_TTL,
            message_id,
            body,
        }
    }

    /// An answer to a request: to its source, with its message id.
    pub fn answer(&self, request: &Packet, body: Body) -> Packet {
        Packet {
            source: self.address,
            destination: request.source,
            next_hop: Address::CONTROLLER,
            ttl: INITIAL_TTL,
            message_id: request.message_id,
            body,
        }
    }

    pub fn report(&mut self, report: Report) -> Packet {
        self.packet(Address::CONTROLLER, Body::Report(report))
    }

    pub fn hello(&mut self) -> Packet {
        let status = SdvsStatus {
            state: self.configuring.busy_level(),
            battery: self.battery,
        };
        self.packet(Address::CONTROLLER, Body::Hello(Some(status)))
    }

    pub fn thing(&self, service: u8) -> Option<&ThingId> {
        self.services.get(&service)
    }
}
