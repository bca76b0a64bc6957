//! Addresses and networks: CIDR blocks (for certificates' `source-address` and the proxy's
//! allowed targets) and the target allowlist itself. Pure; the caller resolves names.

use std::{fmt, net::IpAddr, ops::RangeInclusive, str::FromStr};

/// One address or CIDR block, IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    bits: u32,
}

impl Cidr {
    /// Whether `address` is inside the block. An IPv4 address may arrive IPv4-mapped in IPv6.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = match (self.network, address) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            _ => address,
        };
        match (self.network, address) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_match(
                u128::from(u32::from(n)),
                u128::from(u32::from(a)),
                self.bits,
                32,
            ),
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                prefix_match(u128::from(n), u128::from(a), self.bits, 128)
            }
            _ => false,
        }
    }
}

fn prefix_match(net: u128, address: u128, bits: u32, width: u32) -> bool {
    if bits == 0 {
        return true;
    }
    let shift = width - bits;
    (net >> shift) == (address >> shift)
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (address, bits) = match text.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR block"))?;
        let width = if network.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => width,
            Some(b) => b
                .parse::<u32>()
                .ok()
                .filter(|b| *b <= width)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {width}"))?,
        };
        Ok(Self { network, bits })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.bits)
    }
}

/// Whether `peer` is inside one of the comma-separated addresses or CIDR blocks (a
/// certificate's `source-address`). An entry that does not parse allows nothing.
pub fn source_address_allows(list: &str, peer: IpAddr) -> bool {
    list.split(',')
        .filter_map(|entry| entry.trim().parse::<Cidr>().ok())
        .any(|cidr| cidr.contains(peer))
}

/// One allowed target: a network and a port range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRule {
    network: Cidr,
    ports: RangeInclusive<u16>,
}

/// Where the proxy may connect: targets outside every rule are refused before any packet is
/// sent. Empty means anywhere (the chart's default, documented).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedTargets(Vec<TargetRule>);

impl AllowedTargets {
    /// Parse `CIDR[:PORTS]` entries (`10.0.0.0/8:22`, `[fd00::/8]:22-2222`, `192.0.2.7`, where
    /// PORTS is one port, a range, or `*`; no PORTS means any).
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        entries
            .iter()
            .filter(|e| !e.trim().is_empty())
            .map(|e| parse_rule(e.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether the proxy may connect to `address:port`.
    pub fn allows(&self, address: IpAddr, port: u16) -> bool {
        self.0.is_empty()
            || self
                .0
                .iter()
                .any(|r| r.network.contains(address) && r.ports.contains(&port))
    }

    /// The rules, for messages.
    pub fn describe(&self) -> String {
        if self.0.is_empty() {
            return "any".to_owned();
        }
        self.0
            .iter()
            .map(|r| format!("{}:{}-{}", r.network, r.ports.start(), r.ports.end()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn parse_rule(entry: &str) -> Result<TargetRule, String> {
    let bad = |why: &str| {
        format!(
            "allowed target {entry:?}: {why} (write CIDR[:PORTS], e.g. 10.0.0.0/8:22 or [fd00::/8]:22-2222)"
        )
    };
    let (network, ports) = if let Some(rest) = entry.strip_prefix('[') {
        let (network, after) = rest.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        let ports = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| bad("expected :PORTS after ]"))?,
            ),
        };
        (network, ports)
    } else if entry.matches(':').count() == 1 {
        let (network, ports) = entry.split_once(':').ok_or_else(|| bad("bad port"))?;
        (network, Some(ports))
    } else {
        (entry, None)
    };
    let network: Cidr = network.parse().map_err(|e: String| bad(&e))?;
    let port = |p: &str| p.parse::<u16>().map_err(|_| bad("ports are 1 to 65535"));
    let ports = match ports {
        None | Some("*") => 1..=u16::MAX,
        Some(range) => match range.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (port(lo)?, port(hi)?);
                if lo > hi {
                    return Err(bad("the port range is empty"));
                }
                lo..=hi
            }
            None => {
                let p = port(range)?;
                p..=p
            }
        },
    };
    Ok(TargetRule { network, ports })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn source_address_matching() {
        assert!(source_address_allows("192.168.1.0/24", ip("192.168.1.77")));
        assert!(!source_address_allows("192.168.1.0/24", ip("192.168.2.1")));
        assert!(source_address_allows("10.1.2.3", ip("10.1.2.3")));
        assert!(source_address_allows("0.0.0.0/0", ip("8.8.8.8")));
        assert!(source_address_allows("127.0.0.1", ip("::ffff:127.0.0.1")));
        assert!(source_address_allows("fd00::/8", ip("fd12::1")));
        assert!(!source_address_allows("fd00::/8", ip("fe80::1")));
        assert!(!source_address_allows("nonsense", ip("10.0.0.1")));
        assert!(!source_address_allows("10.0.0.0/33", ip("10.0.0.1")));
    }

    #[test]
    fn allowed_targets_match_network_and_port() {
        let any = AllowedTargets::parse(&[]).unwrap();
        assert!(any.allows(ip("203.0.113.9"), 2222));
        assert_eq!(any.describe(), "any");
        let rules = AllowedTargets::parse(&[
            "10.0.0.0/8:22".into(),
            "[fd00::/8]:22-2222".into(),
            "127.0.0.1".into(),
            "192.0.2.0/24:*".into(),
        ])
        .unwrap();
        assert!(rules.allows(ip("10.1.2.3"), 22));
        assert!(!rules.allows(ip("10.1.2.3"), 23));
        assert!(!rules.allows(ip("11.0.0.1"), 22));
        assert!(rules.allows(ip("fd00::1"), 2000));
        assert!(!rules.allows(ip("fd00::1"), 2223));
        assert!(rules.allows(ip("127.0.0.1"), 65535));
        assert!(rules.allows(ip("192.0.2.200"), 8022));
        assert_eq!(
            rules.describe(),
            "10.0.0.0/8:22-22,fd00::/8:22-2222,127.0.0.1/32:1-65535,192.0.2.0/24:1-65535"
        );
        for bad in [
            "10.0.0.0/8:0x16",
            "10.0.0.0/40:22",
            "[fd00::/8:22",
            "example.com:22",
            "10.0.0.1:30-20",
        ] {
            let error = AllowedTargets::parse(&[bad.into()]).unwrap_err();
            assert!(error.contains("CIDR[:PORTS]"), "{bad}: {error}");
        }
    }
}
