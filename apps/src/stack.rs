//! The app's TCP/IP stack: a smoltcp [`Interface`] configured from the app's address, and
//! the gratuitous ARP an app sends after each (re)connect so the switch relearns it at once.

use smoltcp::iface::{Config, Interface};
use smoltcp::phy::{Device, TxToken};
use smoltcp::time::Instant;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, HardwareAddress, IpAddress, IpCidr, Ipv4Address, Ipv4Cidr, Ipv6Cidr,
};

/// Where the app lives on the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    /// The app's MAC (stable across server restarts: the switch relearns it).
    pub mac: [u8; 6],
    /// The app's IPv4 address and prefix.
    pub ip: Ipv4Cidr,
    /// Default gateway, if any.
    pub gateway: Option<Ipv4Address>,
    /// The app's IPv6 address and prefix, if it speaks IPv6 (neighbours found with NDP).
    pub ip6: Option<Ipv6Cidr>,
}

/// Builds the interface for `net` over `device`.
pub fn interface<D: Device>(net: &NetConfig, device: &mut D, now: Instant, seed: u64) -> Interface {
    let mut cfg = Config::new(HardwareAddress::Ethernet(EthernetAddress(net.mac)));
    cfg.random_seed = seed;
    let mut iface = Interface::new(cfg, device, now);
    iface.update_ip_addrs(|addrs| {
        // At most two addresses; the vector has room for them (its capacity is a
        // compile-time constant, smoltcp's `iface-max-addr-count`, 2 by default).
        let _ = addrs.push(IpCidr::Ipv4(net.ip));
        if let Some(ip6) = net.ip6 {
            let _ = addrs.push(IpCidr::Ipv6(ip6));
        }
    });
    if let Some(gw) = net.gateway {
        let _ = iface.routes_mut().add_default_ipv4_route(gw);
    }
    iface
}

/// Bytes of a gratuitous ARP frame: Ethernet header and an IPv4-over-Ethernet ARP packet.
const GARP_LEN: usize = 14 + 28;

/// Sends a gratuitous ARP request (sender and target both the app's address, to broadcast)
/// through `device`. Returns whether a transmit buffer was available.
pub fn send_gratuitous_arp<D: Device>(net: &NetConfig, device: &mut D, now: Instant) -> bool {
    let Some(tx) = device.transmit(now) else {
        return false;
    };
    let mac = EthernetAddress(net.mac);
    let ip = net.ip.address();
    tx.consume(GARP_LEN, |buf| {
        let mut frame = EthernetFrame::new_unchecked(buf);
        EthernetRepr {
            src_addr: mac,
            dst_addr: EthernetAddress::BROADCAST,
            ethertype: EthernetProtocol::Arp,
        }
        .emit(&mut frame);
        let mut arp = ArpPacket::new_unchecked(frame.payload_mut());
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: mac,
            source_protocol_addr: ip,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: ip,
        }
        .emit(&mut arp);
    });
    true
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let mut mac = [0u8; 6];
    let mut n = 0;
    for (i, part) in s.split(':').enumerate() {
        if i >= 6 {
            return Err(format!("MAC {s:?} has more than six octets"));
        }
        mac[i] = u8::from_str_radix(part, 16)
            .map_err(|_| format!("MAC {s:?}: {part:?} is not a hex octet"))?;
        n += 1;
    }
    if n != 6 {
        return Err(format!("MAC {s:?} needs six octets like 02:00:00:00:00:01"));
    }
    if mac[0] & 1 != 0 {
        return Err(format!("MAC {s:?} is a multicast address"));
    }
    Ok(mac)
}

/// Whether `a` is the app's own address (for tests and logs).
pub fn is_own(net: &NetConfig, a: IpAddress) -> bool {
    a == IpAddress::Ipv4(net.ip.address())
        || net.ip6.is_some_and(|c| a == IpAddress::Ipv6(c.address()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_mac("02:00:00:00:00:0a"), Ok([2, 0, 0, 0, 0, 0x0a]));
        assert!(parse_mac("02:00:00:00:00").is_err());
        assert!(parse_mac("02:00:00:00:00:00:00").is_err());
        assert!(parse_mac("01:00:00:00:00:01").is_err());
        assert!(parse_mac("02:00:00:00:00:zz").is_err());
    }
}
