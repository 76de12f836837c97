//! The counters of a [`StatsRepr`] in forms other programs read: JSON (`ferrite stats
//! --json`), the Prometheus text exposition format (the server's `[metrics]` endpoint), and
//! per-second rates between two snapshots (`ferrite stats --watch`). Pure functions: no I/O.

use std::fmt::Write;

use super::wire::{PortCounters, PortStatsRepr, StatsRepr, fmt_mac};

/// `s` as one JSON object: uptime, instance, first-frame time, every port with every counter
/// by name, and the refused control messages by reason.
pub fn json(s: &StatsRepr) -> serde_json::Value {
    let ports: Vec<serde_json::Value> = s
        .ports
        .iter()
        .map(|p| {
            let counters: serde_json::Map<String, serde_json::Value> = PortCounters::FIELDS
                .iter()
                .zip(p.counters.values())
                .map(|((name, _), v)| ((*name).to_string(), v.into()))
                .collect();
            serde_json::json!({
                "port": p.port,
                "kind": kind(p),
                "name": p.name,
                "mac": fmt_mac(p.mac),
                "counters": counters,
            })
        })
        .collect();
    let refused: serde_json::Map<String, serde_json::Value> = s
        .rejections
        .iter()
        .map(|(c, n)| (c.as_str().to_string(), (*n).into()))
        .collect();
    serde_json::json!({
        "instance": format!("{:016x}", s.instance),
        "uptime_ns": s.uptime_ns,
        "first_frame_ns": s.first_frame_ns,
        "ports": ports,
        "control_refused": refused,
    })
}

fn kind(p: &PortStatsRepr) -> &'static str {
    if p.app { "app" } else { "nic" }
}

/// Quotes a label value for the exposition format.
fn label(v: &str) -> String {
    let mut o = String::with_capacity(v.len() + 2);
    o.push('"');
    for c in v.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// `s` in the Prometheus text exposition format (version 0.0.4): one counter family per
/// port counter (`ferrite_port_<name>_total`, labelled by port number, name and kind),
/// the refused control messages by reason, uptime and whether a frame was forwarded yet.
pub fn prometheus(s: &StatsRepr) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# HELP ferrite_uptime_seconds Seconds since the server started.\n\
         # TYPE ferrite_uptime_seconds gauge\n\
         ferrite_uptime_seconds {}",
        s.uptime_ns as f64 / 1e9
    );
    let _ = writeln!(
        o,
        "# HELP ferrite_first_frame_seconds Seconds from the server's start to its first forwarded frame (absent before it).\n\
         # TYPE ferrite_first_frame_seconds gauge"
    );
    if let Some(ns) = s.first_frame_ns {
        let _ = writeln!(o, "ferrite_first_frame_seconds {}", ns as f64 / 1e9);
    }
    for (k, (name, help)) in PortCounters::FIELDS.iter().enumerate() {
        let _ = writeln!(
            o,
            "# HELP ferrite_port_{name}_total {help}\n# TYPE ferrite_port_{name}_total counter"
        );
        for p in &s.ports {
            let _ = writeln!(
                o,
                "ferrite_port_{name}_total{{port=\"{}\",name={},kind=\"{}\"}} {}",
                p.port,
                label(&p.name),
                kind(p),
                p.counters.values()[k]
            );
        }
    }
    let _ = writeln!(
        o,
        "# HELP ferrite_control_refused_total Control messages or connections refused, by reason.\n\
         # TYPE ferrite_control_refused_total counter"
    );
    for (c, n) in &s.rejections {
        let _ = writeln!(o, "ferrite_control_refused_total{{reason=\"{c}\"}} {n}");
    }
    o
}

/// Per-second rates from snapshot `a` to snapshot `b` (`secs` apart) of the ports present in
/// both, as a table: frames and Mbit/s each way, drops and errors.
pub fn rates(a: &StatsRepr, b: &StatsRepr, secs: f64) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:>4} {:<4} {:<16} {:>12} {:>10} {:>12} {:>10} {:>10} {:>10} {:>8}",
        "port",
        "kind",
        "name",
        "rx_pkts/s",
        "rx_Mbit/s",
        "tx_pkts/s",
        "tx_Mbit/s",
        "rx_drop/s",
        "tx_drop/s",
        "errors/s"
    );
    let secs = secs.max(1e-9);
    for q in &b.ports {
        let Some(p) = a
            .ports
            .iter()
            .find(|p| p.port == q.port && p.name == q.name)
        else {
            continue;
        };
        let (x, y) = (&p.counters, &q.counters);
        let per = |u: u64, v: u64| v.saturating_sub(u) as f64 / secs;
        let _ = writeln!(
            o,
            "{:>4} {:<4} {:<16} {:>12.0} {:>10.1} {:>12.0} {:>10.1} {:>10.0} {:>10.0} {:>8.0}",
            q.port,
            kind(q),
            q.name,
            per(x.rx_packets, y.rx_packets),
            per(x.rx_bytes, y.rx_bytes) * 8.0 / 1e6,
            per(x.tx_packets, y.tx_packets),
            per(x.tx_bytes, y.tx_bytes) * 8.0 / 1e6,
            per(x.rx_dropped, y.rx_dropped),
            per(x.tx_dropped, y.tx_dropped),
            per(x.errors, y.errors)
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::ErrorCode;

    fn snapshot(rx: u64) -> StatsRepr {
        StatsRepr {
            uptime_ns: 2_500_000_000,
            first_frame_ns: Some(1_000_000),
            instance: 0xabc,
            ports: vec![
                PortStatsRepr {
                    port: 0,
                    app: false,
                    name: "up\"link".into(),
                    mac: [2, 0, 0, 0, 0, 1],
                    counters: PortCounters {
                        rx_packets: rx,
                        rx_bytes: rx * 1000,
                        ..Default::default()
                    },
                },
                PortStatsRepr {
                    port: 3,
                    app: true,
                    name: "web".into(),
                    mac: [2, 0, 0, 0, 0, 2],
                    counters: PortCounters {
                        spoofed: 7,
                        ..Default::default()
                    },
                },
            ],
            rejections: vec![(ErrorCode::Busy, 2)],
        }
    }

    #[test]
    fn json_names_every_counter_of_every_port() {
        let v = json(&snapshot(5));
        assert_eq!(v["ports"][0]["counters"]["rx_packets"], 5);
        assert_eq!(v["ports"][0]["counters"]["rx_bytes"], 5000);
        assert_eq!(v["ports"][1]["kind"], "app");
        assert_eq!(v["ports"][1]["counters"]["spoofed"], 7);
        assert_eq!(v["ports"][1]["mac"], "02:00:00:00:00:02");
        assert_eq!(
            v["ports"][1]["counters"].as_object().map(|m| m.len()),
            Some(PortCounters::FIELDS.len())
        );
        assert_eq!(v["control_refused"]["busy"], 2);
        assert_eq!(v["first_frame_ns"], 1_000_000);
    }

    #[test]
    fn prometheus_text_has_a_family_per_counter_and_escaped_labels() {
        let t = prometheus(&snapshot(5));
        assert!(t.contains("# TYPE ferrite_port_rx_packets_total counter\n"));
        assert!(t.contains(
            "ferrite_port_rx_packets_total{port=\"0\",name=\"up\\\"link\",kind=\"nic\"} 5\n"
        ));
        assert!(t.contains("ferrite_port_spoofed_total{port=\"3\",name=\"web\",kind=\"app\"} 7\n"));
        assert!(t.contains("ferrite_control_refused_total{reason=\"busy\"} 2\n"));
        assert_eq!(
            t.matches("# TYPE ferrite_port_").count(),
            PortCounters::FIELDS.len()
        );
    }

    #[test]
    fn rates_are_per_second_differences() {
        let t = rates(&snapshot(100), &snapshot(300), 2.0);
        let line = t
            .lines()
            .find(|l| l.contains("up\"link"))
            .expect("port row");
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[3], "100", "200 frames in 2 s");
        assert_eq!(cols[4], "0.8", "200 kB in 2 s is 0.8 Mbit/s");
    }
}
