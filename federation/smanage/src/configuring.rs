//! The configuring table: the instructions that make an SDVS sample or
//! actuate its sensor services. [`ConfiguringTable::tick`] says what is
//! due at a given second — samples and actuations to run, requests
//! complete, instructions expired — and the caller does the I/O.
//!
//! An instruction starts when installed. A read samples at once and then
//! every `frequency` seconds while less than `period` has passed (once, if
//! `frequency` is 0); a switch or set acts once at once and holds the
//! service for `period`. It is *executed* when `period` has passed; when
//! every instruction of a request id has executed, the request is
//! complete. A TTL that runs out removes the instruction, executed or not.

use crate::entry::{CONFIGURING_ENTRY_LEN, ConfiguringEntry};
use crate::packet::ConfigStat;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub entry: ConfiguringEntry,
    /// Samples sent (reads) or actuations done.
    pub counter: u32,
    /// Unix seconds.
    pub start_time: u64,
    /// When the next action is due; `None` once the last one has run.
    pub next_at: Option<u64>,
    pub executed: bool,
    /// Unix seconds; `None` for TTL 0 (kept until removed).
    pub expires_at: Option<u64>,
}

impl Instruction {
    fn new(entry: ConfiguringEntry, now: u64) -> Self {
        Instruction {
            entry,
            counter: 0,
            start_time: now,
            next_at: Some(now),
            executed: false,
            expires_at: (entry.ttl != 0).then(|| now.saturating_add(u64::from(entry.ttl))),
        }
    }

    fn ends_at(&self) -> u64 {
        self.start_time.saturating_add(u64::from(self.entry.period))
    }

    pub fn running_time(&self, now: u64) -> u64 {
        now.min(self.ends_at()).saturating_sub(self.start_time)
    }

    pub fn ttl_left(&self, now: u64) -> u16 {
        self.expires_at.map_or(0, |at| {
            u16::try_from(at.saturating_sub(now)).unwrap_or(u16::MAX)
        })
    }

    pub fn stat(&self, now: u64) -> ConfigStat {
        ConfigStat {
            request_id: self.entry.request_id,
            service: self.entry.service,
            ttl_left: self.ttl_left(now),
            counter: self.counter,
            start_time: u32::try_from(self.start_time).unwrap_or(u32::MAX),
            running_time: u32::try_from(self.running_time(now)).unwrap_or(u32::MAX),
            executed: self.executed,
        }
    }
}

/// What a tick asks of the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Sample or actuate now, as the entry says.
    Act(ConfiguringEntry),
    /// Every instruction of this request id has executed: ReportCompletion.
    Completed { request_id: u16 },
    /// The instruction's TTL ran out, or it was cancelled:
    /// ReportConfigurationRemove.
    Removed { request_id: u16, service: u8 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the configuring table is full ({capacity} instructions)")]
pub struct TableFull {
    pub capacity: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfiguringTable {
    rows: Vec<Instruction>,
    capacity: usize,
    /// Request ids whose completion has been reported, so it is reported
    /// once.
    completed: Vec<u16>,
}

impl ConfiguringTable {
    pub fn new(capacity: usize) -> Self {
        ConfiguringTable {
            rows: Vec::new(),
            capacity,
            completed: Vec::new(),
        }
    }

    pub fn rows(&self) -> &[Instruction] {
        &self.rows
    }

    pub fn is_full(&self) -> bool {
        self.rows.len() >= self.capacity
    }

    /// The busy level a Hello reports: instructions not yet executed.
    pub fn busy_level(&self) -> u8 {
        let running = self.rows.iter().filter(|row| !row.executed).count();
        u8::try_from(running).unwrap_or(u8::MAX)
    }

    /// SetConfiguringInstruction. An entry for a request id and service
    /// already present replaces it, as ModifyConfiguration would.
    pub fn install(&mut self, entry: ConfiguringEntry, now: u64) -> Result<(), TableFull> {
        self.completed.retain(|id| *id != entry.request_id);
        if let Some(row) = self.find(entry.request_id, entry.service) {
            *row = Instruction::new(entry, now);
            return Ok(());
        }
        if self.is_full() {
            return Err(TableFull {
                capacity: self.capacity,
            });
        }
        self.rows.push(Instruction::new(entry, now));
        Ok(())
    }

    /// ModifyConfiguration: replaces the instruction with the same request
    /// id and service (installs it if there is none); TTL 0 cancels it.
    pub fn modify(&mut self, entry: ConfiguringEntry, now: u64) -> Result<Vec<Due>, TableFull> {
        if entry.ttl != 0 {
            return self.install(entry, now).map(|()| Vec::new());
        }
        let before = self.rows.len();
        self.rows.retain(|row| {
            (row.entry.request_id, row.entry.service) != (entry.request_id, entry.service)
        });
        Ok(if self.rows.len() < before {
            vec![Due::Removed {
                request_id: entry.request_id,
                service: entry.service,
            }]
        } else {
            Vec::new()
        })
    }

    fn find(&mut self, request_id: u16, service: u8) -> Option<&mut Instruction> {
        self.rows
            .iter_mut()
            .find(|row| (row.entry.request_id, row.entry.service) == (request_id, service))
    }

    /// Counts one sample sent or actuation done.
    pub fn record(&mut self, request_id: u16, service: u8) {
        if let Some(row) = self.find(request_id, service) {
            row.counter = row.counter.saturating_add(1);
        }
    }

    /// Everything due at `now`, in table order: actions first, then
    /// completions, then removals.
    pub fn tick(&mut self, now: u64) -> Vec<Due> {
        let mut due = Vec::new();
        for row in &mut self.rows {
            if let Some(at) = row.next_at.filter(|at| *at <= now) {
                due.push(Due::Act(row.entry));
                let frequency = u64::from(row.entry.frequency);
                let next = at.saturating_add(frequency.max(1));
                row.next_at =
                    (frequency != 0 && !row.entry.action.is_actuation() && next < row.ends_at())
                        .then_some(next);
                // A late tick does not make up missed samples.
                if let Some(next) = row.next_at.filter(|next| *next <= now) {
                    let behind = (now - next) / frequency + 1;
                    row.next_at = Some(next.saturating_add(behind.saturating_mul(frequency)))
                        .filter(|n| *n < row.ends_at());
                }
            }
            if !row.executed && row.next_at.is_none() && now >= row.ends_at() {
                row.executed = true;
            }
        }
        let mut finished: Vec<u16> = self
            .rows
            .iter()
            .filter(|row| row.executed)
            .map(|row| row.entry.request_id)
            .collect();
        finished.sort_unstable();
        finished.dedup();
        for request_id in finished {
            let all_done = self
                .rows
                .iter()
                .filter(|row| row.entry.request_id == request_id)
                .all(|row| row.executed);
            if all_done && !self.completed.contains(&request_id) {
                self.completed.push(request_id);
                due.push(Due::Completed { request_id });
            }
        }
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.rows)
            .into_iter()
            .partition(|row| row.expires_at.is_some_and(|at| at <= now));
        self.rows = kept;
        for row in gone {
            due.push(Due::Removed {
                request_id: row.entry.request_id,
                service: row.entry.service,
            });
        }
        let rows = &self.rows;
        self.completed
            .retain(|id| rows.iter().any(|row| row.entry.request_id == *id));
        due
    }

    /// The table as bytes, so that an SDVS's instructions outlive a restart
    /// of its gateway: a version byte, the rows (entry, counter, start,
    /// next action, executed, expiry), the request ids already reported
    /// complete.
    pub fn to_bytes(&self) -> Vec<u8> {
        let time = |t: Option<u64>| t.unwrap_or(u64::MAX).to_be_bytes();
        let mut out = vec![1];
        out.extend_from_slice(&(self.rows.len() as u16).to_be_bytes());
        for row in &self.rows {
            row.entry.write(&mut out);
            out.extend_from_slice(&row.counter.to_be_bytes());
            out.extend_from_slice(&row.start_time.to_be_bytes());
            out.extend_from_slice(&time(row.next_at));
            out.push(u8::from(row.executed));
            out.extend_from_slice(&time(row.expires_at));
        }
        out.extend_from_slice(&(self.completed.len() as u16).to_be_bytes());
        for id in &self.completed {
            out.extend_from_slice(&id.to_be_bytes());
        }
        out
    }

    /// The table [`ConfiguringTable::to_bytes`] wrote, or `None` for bytes
    /// it did not write.
    pub fn from_bytes(capacity: usize, bytes: &[u8]) -> Option<Self> {
        let mut at = 0;
        let mut take = |n: usize| {
            let slice = bytes.get(at..at + n)?;
            at += n;
            Some(slice)
        };
        if take(1)? != [1] {
            return None;
        }
        let u16_at = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
        let u64_at = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
        let time = |t: u64| (t != u64::MAX).then_some(t);
        let rows = u16_at(take(2)?);
        let mut table = ConfiguringTable::new(capacity);
        for _ in 0..rows {
            let entry =
                ConfiguringEntry::decode(take(CONFIGURING_ENTRY_LEN)?.try_into().ok()?).ok()?;
            let counter = u32::from_be_bytes(take(4)?.try_into().ok()?);
            let start_time = u64_at(take(8)?);
            let next_at = time(u64_at(take(8)?));
            let executed = match take(1)? {
                [0] => false,
                [1] => true,
                _ => return None,
            };
            let expires_at = time(u64_at(take(8)?));
            table.rows.push(Instruction {
                entry,
                counter,
                start_time,
                next_at,
                executed,
                expires_at,
            });
        }
        let completed = u16_at(take(2)?);
        for _ in 0..completed {
            table.completed.push(u16_at(take(2)?));
        }
        (at == bytes.len()).then_some(table)
    }

    /// RequestConfigStats: one request id's instructions, or all for 0xFFFF.
    pub fn stats(&self, request_id: u16, now: u64) -> Vec<ConfigStat> {
        self.rows
            .iter()
            .filter(|row| request_id == 0xFFFF || row.entry.request_id == request_id)
            .map(|row| row.stat(now))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::ConfigAction;
    use crate::header::Address;
    use proptest::prelude::*;

    fn read(
        request_id: u16,
        service: u8,
        frequency: u16,
        period: u16,
        ttl: u16,
    ) -> ConfiguringEntry {
        ConfiguringEntry {
            request_id,
            service,
            frequency,
            period,
            destination: Address::CONTROLLER,
            action: ConfigAction::Read,
            value: 0,
            ttl,
        }
    }

    fn acts(due: &[Due]) -> usize {
        due.iter().filter(|d| matches!(d, Due::Act(_))).count()
    }

    #[test]
    fn a_read_every_second_for_ten_seconds_samples_ten_times_then_completes() {
        let mut table = ConfiguringTable::new(32);
        table.install(read(7, 1, 1, 10, 60), 1000).unwrap();
        let mut samples = 0;
        let mut completed_at = None;
        for now in 1000..1015 {
            let due = table.tick(now);
            samples += acts(&due);
            if due.contains(&Due::Completed { request_id: 7 }) {
                completed_at = Some(now);
            }
        }
        assert_eq!(samples, 10);
        assert_eq!(completed_at, Some(1010));
        let stat = table.stats(7, 1014)[0];
        assert!(stat.executed);
        assert_eq!(stat.running_time, 10);
        assert_eq!(stat.ttl_left, 46);
        assert_eq!(table.busy_level(), 0);
    }

    #[test]
    fn completion_waits_for_every_instruction_of_the_request() {
        let mut table = ConfiguringTable::new(32);
        table.install(read(7, 1, 0, 2, 60), 0).unwrap();
        table.install(read(7, 2, 0, 5, 60), 0).unwrap();
        assert_eq!(table.busy_level(), 2);
        let early: Vec<Due> = (0..=4).flat_map(|now| table.tick(now)).collect();
        assert!(!early.contains(&Due::Completed { request_id: 7 }));
        assert_eq!(table.tick(5), vec![Due::Completed { request_id: 7 }]);
        assert_eq!(table.tick(6), vec![]);
    }

    #[test]
    fn ttl_removes_and_modify_with_ttl_zero_cancels() {
        let mut table = ConfiguringTable::new(32);
        table.install(read(1, 1, 1, 100, 3), 0).unwrap();
        table.install(read(2, 1, 1, 100, 50), 0).unwrap();
        let due: Vec<Due> = (0..=3).flat_map(|now| table.tick(now)).collect();
        assert!(due.contains(&Due::Removed {
            request_id: 1,
            service: 1
        }));
        assert_eq!(table.rows().len(), 1);
        let cancelled = table.modify(read(2, 1, 1, 100, 0), 4).unwrap();
        assert_eq!(
            cancelled,
            vec![Due::Removed {
                request_id: 2,
                service: 1
            }]
        );
        assert!(table.rows().is_empty());
        assert_eq!(table.modify(read(2, 1, 1, 100, 0), 4).unwrap(), vec![]);
    }

    #[test]
    fn a_full_table_refuses_and_replacing_is_not_adding() {
        let mut table = ConfiguringTable::new(2);
        table.install(read(1, 1, 1, 10, 60), 0).unwrap();
        table.install(read(1, 2, 1, 10, 60), 0).unwrap();
        assert!(table.is_full());
        assert_eq!(
            table.install(read(2, 1, 1, 10, 60), 0),
            Err(TableFull { capacity: 2 })
        );
        table.install(read(1, 2, 5, 10, 60), 3).unwrap();
        assert_eq!(table.rows()[1].entry.frequency, 5);
        assert_eq!(table.rows()[1].start_time, 3);
    }

    #[test]
    fn an_actuation_acts_once_and_holds_for_its_period() {
        let mut table = ConfiguringTable::new(4);
        let off = ConfiguringEntry {
            action: ConfigAction::SwitchOff,
            ..read(3, 1, 1, 5, 60)
        };
        table.install(off, 0).unwrap();
        let all: Vec<Due> = (0..10).flat_map(|now| table.tick(now)).collect();
        assert_eq!(acts(&all), 1);
        assert!(all.contains(&Due::Completed { request_id: 3 }));
    }

    #[test]
    fn a_late_tick_does_not_burst() {
        let mut table = ConfiguringTable::new(4);
        table.install(read(1, 1, 1, 100, 0), 0).unwrap();
        assert_eq!(acts(&table.tick(0)), 1);
        assert_eq!(acts(&table.tick(30)), 1);
        assert_eq!(acts(&table.tick(30)), 0);
        assert_eq!(acts(&table.tick(31)), 1);
    }

    #[test]
    fn times_at_the_end_of_the_clock_do_not_overflow() {
        // Found by fuzzing a stored table: a start time near u64::MAX.
        let bytes = [
            0x01, 0x00, 0x01, 0x26, 0x00, 0x01, 0x0c, 0x00, 0x01, 0x05, 0x05, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00,
            0x00, 0x00, 0x07, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00,
            0x00, 0x0a, 0x00, 0x00, 0x0a, 0x8b, 0xeb, 0x8b,
        ];
        let mut table = ConfiguringTable::from_bytes(32, &bytes).expect("the stored table");
        table.tick(u64::from(u32::MAX));
        table.stats(0xFFFF, u64::MAX);
        let mut table = ConfiguringTable::new(4);
        table
            .install(read(1, 1, 65535, 65535, 65535), u64::MAX - 10)
            .unwrap();
        for now in [u64::MAX - 10, u64::MAX - 1, u64::MAX] {
            table.tick(now);
            table.stats(0xFFFF, now);
        }
    }

    #[test]
    fn a_table_survives_its_bytes() {
        let mut table = ConfiguringTable::new(8);
        table.install(read(1, 1, 1, 10, 60), 100).unwrap();
        table.install(read(2, 3, 0, 0, 0), 100).unwrap();
        table.tick(100);
        table.record(1, 1);
        let bytes = table.to_bytes();
        assert_eq!(ConfiguringTable::from_bytes(8, &bytes), Some(table.clone()));
        assert_eq!(
            ConfiguringTable::from_bytes(8, &bytes[..bytes.len() - 1]),
            None
        );
        assert_eq!(ConfiguringTable::from_bytes(8, b"garbage"), None);
    }

    proptest! {
        // Samples never exceed what frequency and period allow.
        #[test]
        fn samples_are_bounded_by_the_schedule(frequency in 0u16..5, period in 0u16..30, step in 1u64..4) {
            let mut table = ConfiguringTable::new(1);
            table.install(read(1, 1, frequency, period, 0), 0).unwrap();
            let mut samples = 0;
            let mut now = 0;
            while now < 40 {
                samples += acts(&table.tick(now));
                now += step;
            }
            let most = if frequency == 0 { 1 } else { u64::from(period).div_ceil(u64::from(frequency)).max(1) };
            prop_assert!(samples as u64 <= most && samples >= 1);
            prop_assert!(table.rows()[0].executed);
        }
    }
}
