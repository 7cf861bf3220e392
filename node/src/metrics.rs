//! Counters exposed at `/metrics` in the Prometheus text format.
//!
//! Hand-written rather than a metrics crate: the set is small, and the
//! exposition format is a few lines of text.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Responses by status class, and time spent serving.
#[derive(Default)]
pub struct HttpMetrics {
    by_class: [AtomicU64; 5],
    micros: AtomicU64,
}

impl HttpMetrics {
    pub fn record(&self, status: u16, elapsed: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        self.micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }
}

/// Builds one exposition document.
#[derive(Default)]
pub struct Exposition(String);

impl Exposition {
    pub fn metric(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        samples: &[(&str, f64)],
    ) -> &mut Self {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            if labels.is_empty() {
                let _ = writeln!(self.0, "{name} {value}");
            } else {
                let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
            }
        }
        self
    }

    /// A metric with one unlabelled sample.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) -> &mut Self {
        self.metric(name, "gauge", help, &[("", value)])
    }

    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> &mut Self {
        self.metric(name, "counter", help, &[("", value as f64)])
    }

    /// A counter with one sample per value of the label `label`.
    pub fn counter_by<'a>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        values: impl IntoIterator<Item = (&'a str, u64)>,
    ) -> &mut Self {
        let labels: Vec<(String, f64)> = values
            .into_iter()
            .map(|(value, n)| (format!("{label}=\"{value}\""), n as f64))
            .collect();
        let samples: Vec<(&str, f64)> = labels.iter().map(|(l, n)| (l.as_str(), *n)).collect();
        self.metric(name, "counter", help, &samples)
    }

    /// The S-MANAGE agent: SDVSs, packets by type, drops by reason.
    pub fn smanage(&mut self, agent: &fogbank_sdvs::Agent) -> &mut Self {
        self.gauge(
            "fogbank_smanage_sdvs",
            "Software-defined virtual sensors this gateway runs (one per device).",
            agent.sdvs_count() as f64,
        )
        .packet_counters("fogbank_smanage", &agent.counters())
    }

    /// An S-MANAGE endpoint's packet counters, the gateway's agent's or the
    /// controller's: `{prefix}_{received,sent,malformed,dropped}_total`.
    pub fn packet_counters(
        &mut self,
        prefix: &str,
        counters: &fogbank_smanage::PacketCounters,
    ) -> &mut Self {
        let each = |map: &std::collections::BTreeMap<&'static str, u64>| {
            map.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>()
        };
        self.counter_by(
            &format!("{prefix}_received_total"),
            "S-MANAGE packets received, by type.",
            "type",
            each(&counters.received),
        )
        .counter_by(
            &format!("{prefix}_sent_total"),
            "S-MANAGE packets sent, by type.",
            "type",
            each(&counters.sent),
        )
        .counter_by(
            &format!("{prefix}_malformed_total"),
            "S-MANAGE datagrams dropped as malformed, by reason.",
            "reason",
            counters.malformed_by_every_reason(),
        )
        .counter_by(
            &format!("{prefix}_dropped_total"),
            "S-MANAGE packets dropped, by reason (ttl, entry, loop, stranger, no_route, table_full, …).",
            "reason",
            each(&counters.dropped),
        )
    }

    /// The SIP agent: addresses of record by state, subscriptions, and
    /// what it sent and refused.
    pub fn sip(&mut self, view: &fogbank_sip::AgentView) -> &mut Self {
        let mut by_state = [("registering", 0.0), ("registered", 0.0), ("failed", 0.0)];
        for r in &view.registrations {
            let i = match r.state {
                fogbank_sip::RegistrationState::Registering => 0,
                fogbank_sip::RegistrationState::Registered => 1,
                fogbank_sip::RegistrationState::Failed { .. } => 2,
            };
            by_state[i].1 += 1.0;
        }
        let labels: Vec<(String, f64)> = by_state
            .iter()
            .map(|(s, n)| (format!("state=\"{s}\""), *n))
            .collect();
        let samples: Vec<(&str, f64)> = labels.iter().map(|(l, n)| (l.as_str(), *n)).collect();
        self.metric(
            "fogbank_sip_registrations",
            "gauge",
            "SIP addresses of record, by state.",
            &samples,
        )
        .gauge(
            "fogbank_sip_subscriptions",
            "fogbank-thing subscriptions this gateway is the notifier of.",
            view.subscriptions.len() as f64,
        )
        .gauge(
            "fogbank_sip_registrar_reachable",
            "1 while the registrar answers OPTIONS.",
            f64::from(u8::from(view.registrar_reachable)),
        )
        .counter_by(
            "fogbank_sip_events_total",
            "SIP requests sent and refused, by kind (notifications, messages_sent, publications, forbidden, …).",
            "kind",
            view.counters.iter().copied(),
        )
    }

    pub fn cloud(&mut self, stats: &fogbank_cloud::CloudStats) -> &mut Self {
        self.metric(
            "fogbank_cloud_gateways",
            "gauge",
            "Other gateways of the local cloud.",
            &[
                ("state=\"up\"", stats.gateways_up as f64),
                ("state=\"down\"", stats.gateways_down as f64),
            ],
        )
        .gauge(
            "fogbank_cloud_following",
            "Other gateways' thing services whose readings local consumers follow.",
            stats.following as f64,
        )
        .gauge(
            "fogbank_cloud_followed",
            "This gateway's thing services that other gateways follow.",
            stats.followed as f64,
        )
        .counter(
            "fogbank_cloud_readings_sent_total",
            "Readings sent to other gateways.",
            stats.readings_sent,
        )
        .counter(
            "fogbank_cloud_readings_received_total",
            "Readings received from other gateways.",
            stats.readings_received,
        )
        .counter(
            "fogbank_cloud_readings_dropped_total",
            "Readings for another gateway that did not keep up, dropped.",
            stats.readings_dropped,
        )
        .counter(
            "fogbank_cloud_connections_refused_total",
            "Incoming local-cloud connections that failed the handshake (no cluster key?).",
            stats.connections_refused,
        )
    }

    pub fn services(&mut self, services: &[fogbank_services::ServiceInfo]) -> &mut Self {
        let running = services
            .iter()
            .filter(|s| s.state == fogbank_services::State::Running)
            .count();
        self.metric(
            "fogbank_services",
            "gauge",
            "Extended services installed, by whether they run.",
            &[
                ("state=\"running\"", running as f64),
                ("state=\"other\"", (services.len() - running) as f64),
            ],
        )
        .counter(
            "fogbank_service_calls_total",
            "Calls into extended services.",
            services.iter().map(|s| s.calls).sum(),
        )
        .counter(
            "fogbank_service_errors_total",
            "Failed calls and starts of extended services.",
            services.iter().map(|s| s.errors).sum(),
        )
        .counter(
            "fogbank_service_restarts_total",
            "Restarts of failed extended services.",
            services.iter().map(|s| u64::from(s.restarts)).sum(),
        )
    }

    pub fn coap(&mut self, endpoint: &fogbank_coap_protocol::endpoint::Endpoint) -> &mut Self {
        let stats = endpoint.stats();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        self.gauge(
            "fogbank_coap_observers",
            "Applications observing thing services over CoAP.",
            endpoint.observer_count() as f64,
        )
        .counter(
            "fogbank_coap_datagrams_total",
            "CoAP datagrams received.",
            load(&stats.datagrams),
        )
        .counter(
            "fogbank_coap_malformed_total",
            "CoAP datagrams dropped (or reset) as malformed.",
            load(&stats.malformed),
        )
        .counter(
            "fogbank_coap_duplicates_total",
            "Repeated CoAP messages answered from the deduplication cache.",
            load(&stats.duplicates),
        )
        .counter(
            "fogbank_coap_requests_total",
            "CoAP requests served.",
            load(&stats.requests),
        )
        .counter(
            "fogbank_coap_notifications_sent_total",
            "Observe notifications sent to applications.",
            load(&stats.notifications_sent),
        )
        .counter(
            "fogbank_coap_notifications_received_total",
            "Observe notifications received from devices.",
            load(&stats.notifications_received),
        )
        .counter(
            "fogbank_coap_retransmissions_total",
            "Confirmable messages sent again for want of an ACK.",
            load(&stats.retransmissions),
        );
        let (uploads, upload_bytes) = endpoint.uploads_held();
        self.gauge(
            "fogbank_coap_uploads",
            "Unfinished block-wise (Block1) uploads held.",
            uploads as f64,
        )
        .gauge(
            "fogbank_coap_upload_bytes",
            "Bytes of unfinished block-wise (Block1) uploads held.",
            upload_bytes as f64,
        );
        self.counter_by(
            "fogbank_coap_refused_total",
            "CoAP uploads and observations refused to keep the endpoint's state bounded, by reason.",
            "reason",
            stats.refusals(),
        )
    }

    pub fn http(&mut self, http: &HttpMetrics) -> &mut Self {
        let labels = [
            "code=\"1xx\"",
            "code=\"2xx\"",
            "code=\"3xx\"",
            "code=\"4xx\"",
            "code=\"5xx\"",
        ];
        let samples: Vec<(&str, f64)> = labels
            .iter()
            .zip(&http.by_class)
            .map(|(l, c)| (*l, c.load(Ordering::Relaxed) as f64))
            .collect();
        self.metric(
            "fogbank_http_responses_total",
            "counter",
            "HTTP responses by status class.",
            &samples,
        );
        let refused = actix_http::h1::server_error_answers().map(|(status, count)| {
            let reason = match status.as_u16() {
                400 => "unparsable",
                408 => "head_timeout",
                431 => "head_too_large",
                _ => "server_error",
            };
            (reason, count)
        });
        self.counter_by(
            "fogbank_http_refused_total",
            "Requests the HTTP server answered with an error on its own, before the API saw them, by reason.",
            "reason",
            refused,
        );
        self.metric(
            "fogbank_http_request_seconds_total",
            "counter",
            "Time spent serving HTTP requests.",
            &[("", http.micros.load(Ordering::Relaxed) as f64 / 1e6)],
        )
    }

    pub fn finish(self) -> String {
        self.0
    }
}

/// Resident set size of this process, from /proc.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
