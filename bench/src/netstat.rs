//! The kernel's UDP drop counter, read around each run.
//!
//! QUIC runs over UDP: when a process does not drain its socket fast enough, the kernel drops
//! datagrams once the socket's receive buffer is full (`RcvbufErrors` in `/proc/net/snmp`), and
//! QUIC takes each loss as congestion. TCP (tonic) cannot lose data this way. The counter is
//! system-wide, so other programs using UDP at the same time add to it.

/// Where Linux keeps the counters.
const SNMP: &str = "/proc/net/snmp";

/// `RcvbufErrors` of the `Udp:` section of `/proc/net/snmp`-formatted text.
pub(crate) fn parse_rcvbuf_errors(snmp: &str) -> Option<u64> {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names = udp.next()?;
    let values = udp.next()?;
    let at = names
        .split_whitespace()
        .position(|name| name == "RcvbufErrors")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// UDP datagrams dropped so far for want of receive buffer space; `None` off Linux.
pub(crate) fn udp_rcvbuf_errors() -> Option<u64> {
    parse_rcvbuf_errors(&std::fs::read_to_string(SNMP).ok()?)
}

/// Drops between two readings (0 when either is unknown).
pub(crate) fn dropped(before: Option<u64>, after: Option<u64>) -> u64 {
    match (before, after) {
        (Some(b), Some(a)) => a.saturating_sub(b),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
Icmp: InMsgs InErrors\n\
Icmp: 10 0\n\
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors\n\
Udp: 17754603 1837 86293 17842888 86290 0 0\n\
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors\n\
UdpLite: 0 0 0 0 5 0 0\n";

    #[test]
    fn reads_the_udp_section_only() {
        assert_eq!(parse_rcvbuf_errors(SAMPLE), Some(86290));
        assert_eq!(parse_rcvbuf_errors("Udp: InDatagrams\nUdp: 5\n"), None);
        assert_eq!(parse_rcvbuf_errors(""), None);
    }

    #[test]
    fn deltas_never_go_negative() {
        assert_eq!(dropped(Some(10), Some(25)), 15);
        assert_eq!(dropped(Some(25), Some(10)), 0);
        assert_eq!(dropped(None, Some(10)), 0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_live_counter_is_readable() {
        assert!(udp_rcvbuf_errors().is_some());
    }
}
