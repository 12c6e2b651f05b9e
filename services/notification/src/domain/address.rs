//! Which addresses a webhook may reach (server-side request forgery): checked at every
//! attempt after the name is resolved, so a name that later resolves to an internal address
//! is refused then. Refused unless the operator allows their network: loopback, private
//! (RFC 1918, unique-local IPv6), link-local (cloud metadata services live there:
//! 169.254.169.254, fd00:ec2::254), shared (100.64/10), unspecified, multicast, broadcast,
//! documentation and reserved ranges, and IPv4 embedded in IPv6 by the same rules.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The networks an operator allows besides the public internet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    allowed: Vec<IpNet>,
}

impl AddressPolicy {
    /// Only public addresses.
    pub fn public_only() -> Self {
        Self::default()
    }

    /// Public addresses and `allowed` networks.
    pub fn allowing(allowed: Vec<IpNet>) -> Self {
        Self { allowed }
    }

    /// Parses networks as an operator writes them: `127.0.0.0/8,::1/128` (empty: none).
    pub fn parse(list: &str) -> Result<Self, String> {
        let allowed = list
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| {
                n.parse::<IpNet>()
                    .map_err(|_| format!("`{n}` is not a network (for example 10.0.0.0/8)"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { allowed })
    }

    /// Why `ip` may not be reached, or None when it may.
    pub fn refusal(&self, ip: IpAddr) -> Option<String> {
        if self.allowed.iter().any(|net| net.contains(&ip)) {
            return None;
        }
        let internal = match ip {
            IpAddr::V4(v4) => internal_v4(v4),
            IpAddr::V6(v6) => internal_v6(v6),
        };
        internal.then(|| format!("{ip} is not a public address (allow its network to reach it)"))
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || a >= 240
        // Shared address space (carrier-grade NAT).
        || (a == 100 && (64..128).contains(&b))
        // IETF protocol assignments, benchmarking.
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || (a == 198 && (18..20).contains(&b))
}

fn internal_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return internal_v4(v4);
    }
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // Unique local fc00::/7, link-local fe80::/10, site-local fec0::/10.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first & 0xffc0) == 0xfec0
        // IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::/96), 6to4 (2002::/16) and
        // documentation (2001:db8::/32) carry or name addresses this check cannot see.
        || ip.segments()[..6] == [0; 6]
        || ip.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
        || first == 0x2002
        || (first == 0x2001 && ip.segments()[1] == 0xdb8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(policy: &AddressPolicy, ip: &str) -> bool {
        policy.refusal(ip.parse().expect("ip")).is_some()
    }

    #[test]
    fn internal_addresses_are_refused_unless_allowed() {
        let public = AddressPolicy::public_only();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::",
        ] {
            assert!(refused(&public, ip), "{ip}");
        }
        for ip in ["93.184.215.14", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(!refused(&public, ip), "{ip}");
        }
        let loopback = AddressPolicy::parse("127.0.0.0/8, ::1/128").expect("policy");
        assert!(!refused(&loopback, "127.0.0.1"));
        assert!(!refused(&loopback, "::1"));
        assert!(refused(&loopback, "10.0.0.1"));
        assert!(AddressPolicy::parse("10.0.0.0/33").is_err());
        assert_eq!(AddressPolicy::parse("").expect("empty"), public);
    }
}
