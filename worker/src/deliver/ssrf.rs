//! The egress guard's address classifier: which IP addresses a tenant's URL
//! (or SMTP host, or OAuth token URL) may make the worker connect to.
//!
//! Only globally reachable unicast addresses pass. Everything that reaches the
//! worker's own machine, its network, its cloud's metadata service or a
//! special-purpose range is refused, in both IP versions and in every IPv6
//! form that embeds an IPv4 address (mapped, compatible, SIIT, NAT64, 6to4),
//! so `::ffff:127.0.0.1` is refused exactly like `127.0.0.1`. A development
//! allowlist (`FLOWTRACK_EGRESS_ALLOW`: addresses or CIDRs) lets tests and
//! local setups reach their own sinks.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is refused: its class, and the range that matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    /// What the range is, e.g. "loopback" or "cloud metadata service".
    pub class: &'static str,
    /// The range, e.g. "127.0.0.0/8".
    pub range: &'static str,
    /// The IPv6 form that carried an IPv4 address, when one did.
    pub via: Option<&'static str>,
}

impl fmt::Display for Denied {
    /// "a loopback address (127.0.0.0/8)", with the IPv6 form when one
    /// carried the IPv4 address.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let article = if self.class.starts_with(['a', 'e', 'i', 'o', 'u', 'I']) {
            "an"
        } else {
            "a"
        };
        write!(f, "{article} {} address ({}", self.class, self.range)?;
        match self.via {
            Some(via) => write!(f, ", in {via})"),
            None => write!(f, ")"),
        }
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8) -> u32 {
    u32::from_be_bytes([a, b, c, d])
}

/// Most specific first: the first match names the class.
const V4: &[(u32, u8, &str, &str)] = &[
    (
        v4(255, 255, 255, 255),
        32,
        "broadcast",
        "255.255.255.255/32",
    ),
    (
        v4(169, 254, 169, 254),
        32,
        "cloud metadata service",
        "169.254.169.254/32",
    ),
    (
        v4(169, 254, 170, 2),
        32,
        "cloud metadata service",
        "169.254.170.2/32",
    ),
    (
        v4(100, 100, 100, 200),
        32,
        "cloud metadata service",
        "100.100.100.200/32",
    ),
    (v4(0, 0, 0, 0), 8, "unspecified (this network)", "0.0.0.0/8"),
    (v4(10, 0, 0, 0), 8, "private (RFC 1918)", "10.0.0.0/8"),
    (
        v4(100, 64, 0, 0),
        10,
        "shared address space (CGNAT, RFC 6598)",
        "100.64.0.0/10",
    ),
    (v4(127, 0, 0, 0), 8, "loopback", "127.0.0.0/8"),
    (v4(169, 254, 0, 0), 16, "link-local", "169.254.0.0/16"),
    (v4(172, 16, 0, 0), 12, "private (RFC 1918)", "172.16.0.0/12"),
    (
        v4(192, 0, 0, 0),
        24,
        "IETF protocol assignments",
        "192.0.0.0/24",
    ),
    (
        v4(192, 0, 2, 0),
        24,
        "documentation (TEST-NET-1)",
        "192.0.2.0/24",
    ),
    (
        v4(192, 88, 99, 0),
        24,
        "6to4 relay anycast (deprecated)",
        "192.88.99.0/24",
    ),
    (
        v4(192, 168, 0, 0),
        16,
        "private (RFC 1918)",
        "192.168.0.0/16",
    ),
    (v4(198, 18, 0, 0), 15, "benchmarking", "198.18.0.0/15"),
    (
        v4(198, 51, 100, 0),
        24,
        "documentation (TEST-NET-2)",
        "198.51.100.0/24",
    ),
    (
        v4(203, 0, 113, 0),
        24,
        "documentation (TEST-NET-3)",
        "203.0.113.0/24",
    ),
    (v4(224, 0, 0, 0), 4, "multicast", "224.0.0.0/4"),
    (v4(240, 0, 0, 0), 4, "reserved", "240.0.0.0/4"),
];

const fn v6(s: [u16; 8]) -> u128 {
    let mut n = 0u128;
    let mut i = 0;
    while i < 8 {
        n = (n << 16) | s[i] as u128;
        i += 1;
    }
    n
}

/// IPv6 ranges refused outright (checked before the embedded-IPv4 forms).
const V6: &[(u128, u8, &str, &str)] = &[
    (v6([0, 0, 0, 0, 0, 0, 0, 0]), 128, "unspecified", "::/128"),
    (v6([0, 0, 0, 0, 0, 0, 0, 1]), 128, "loopback", "::1/128"),
    (
        v6([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254]),
        128,
        "cloud metadata service",
        "fd00:ec2::254/128",
    ),
    (
        v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0]),
        48,
        "local-use NAT64 (RFC 8215)",
        "64:ff9b:1::/48",
    ),
    (
        v6([0x100, 0, 0, 0, 0, 0, 0, 0]),
        64,
        "discard-only",
        "100::/64",
    ),
    (
        v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0]),
        32,
        "documentation",
        "2001:db8::/32",
    ),
    (
        v6([0x3fff, 0, 0, 0, 0, 0, 0, 0]),
        20,
        "documentation",
        "3fff::/20",
    ),
    (
        v6([0x2001, 2, 0, 0, 0, 0, 0, 0]),
        48,
        "benchmarking",
        "2001:2::/48",
    ),
    (
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0]),
        32,
        "Teredo tunnel",
        "2001::/32",
    ),
    (
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0]),
        23,
        "IETF protocol assignments",
        "2001::/23",
    ),
    (
        v6([0xfc00, 0, 0, 0, 0, 0, 0, 0]),
        7,
        "private (unique local)",
        "fc00::/7",
    ),
    (
        v6([0xfe80, 0, 0, 0, 0, 0, 0, 0]),
        10,
        "link-local",
        "fe80::/10",
    ),
    (
        v6([0xfec0, 0, 0, 0, 0, 0, 0, 0]),
        10,
        "site-local (deprecated)",
        "fec0::/10",
    ),
    (
        v6([0xff00, 0, 0, 0, 0, 0, 0, 0]),
        8,
        "multicast",
        "ff00::/8",
    ),
];

fn in_v4(addr: u32, net: u32, len: u8) -> bool {
    len == 0 || (addr ^ net) >> (32 - u32::from(len)) == 0
}

fn in_v6(addr: u128, net: u128, len: u8) -> bool {
    len == 0 || (addr ^ net) >> (128 - u32::from(len)) == 0
}

fn classify_v4(ip: Ipv4Addr) -> Option<Denied> {
    let n = u32::from(ip);
    V4.iter()
        .find(|(net, len, _, _)| in_v4(n, *net, *len))
        .map(|&(_, _, class, range)| Denied {
            class,
            range,
            via: None,
        })
}

/// The IPv4 address an IPv6 address carries, and the form that carries it.
pub fn embedded_v4(ip: Ipv6Addr) -> Option<(Ipv4Addr, &'static str)> {
    let n = u128::from(ip);
    let low = Ipv4Addr::from(n as u32);
    let forms: [(u128, u8, &str); 4] = [
        (
            v6([0, 0, 0, 0, 0, 0xffff, 0, 0]),
            96,
            "IPv4-mapped ::ffff:0:0/96",
        ),
        (
            v6([0, 0, 0, 0, 0xffff, 0, 0, 0]),
            96,
            "IPv4-translated ::ffff:0:0:0/96",
        ),
        (
            v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0]),
            96,
            "NAT64 64:ff9b::/96",
        ),
        (v6([0, 0, 0, 0, 0, 0, 0, 0]), 96, "IPv4-compatible ::/96"),
    ];
    for (net, len, form) in forms {
        if in_v6(n, net, len) {
            return Some((low, form));
        }
    }
    if in_v6(n, v6([0x2002, 0, 0, 0, 0, 0, 0, 0]), 16) {
        return Some((Ipv4Addr::from((n >> 80) as u32), "6to4 2002::/16"));
    }
    None
}

fn classify_v6(ip: Ipv6Addr) -> Option<Denied> {
    let n = u128::from(ip);
    if let Some(&(_, _, class, range)) = V6.iter().find(|(net, len, _, _)| in_v6(n, *net, *len)) {
        return Some(Denied {
            class,
            range,
            via: None,
        });
    }
    if let Some((inner, form)) = embedded_v4(ip) {
        if let Some(d) = classify_v4(inner) {
            return Some(Denied {
                via: Some(form),
                ..d
            });
        }
        // A public IPv4 address in a deprecated form is still no address a
        // request has any business using.
        if form.starts_with("IPv4-compatible") {
            return Some(Denied {
                class: "deprecated IPv4-compatible address",
                range: "::/96",
                via: None,
            });
        }
        return None;
    }
    if !in_v6(n, v6([0x2000, 0, 0, 0, 0, 0, 0, 0]), 3) {
        return Some(Denied {
            class: "reserved (not global unicast)",
            range: "outside 2000::/3",
            via: None,
        });
    }
    None
}

/// Why `ip` may not be connected to, or `None` when it is a public address.
pub fn classify(ip: IpAddr) -> Option<Denied> {
    match ip {
        IpAddr::V4(a) => classify_v4(a),
        IpAddr::V6(a) => classify_v6(a),
    }
}

/// One allowlist entry: an address or a CIDR range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(a)) => in_v4(u32::from(a), u32::from(net), self.len),
            (IpAddr::V6(net), IpAddr::V6(a)) => in_v6(u128::from(a), u128::from(net), self.len),
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (a, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let a = a.trim_start_matches('[').trim_end_matches(']');
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("\"{s}\" is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("\"{s}\": prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, len })
    }
}

/// Addresses the guard lets through although they are not public: for
/// development and tests only (`FLOWTRACK_EGRESS_ALLOW=127.0.0.1,::1`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist(pub Vec<Cidr>);

impl Allowlist {
    pub const ENV: &'static str = "FLOWTRACK_EGRESS_ALLOW";

    /// Comma- or space-separated addresses and CIDRs.
    pub fn parse(s: &str) -> Result<Self, String> {
        s.split([',', ' '])
            .filter(|p| !p.trim().is_empty())
            .map(str::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(Allowlist)
            .map_err(|e| format!("{}: {e}", Self::ENV))
    }

    /// The allowlist in the environment; empty when unset.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var(Self::ENV) {
            Ok(v) => Self::parse(&v),
            Err(_) => Ok(Allowlist::default()),
        }
    }

    /// Listed, in its own form or (for IPv6 forms of an IPv4 address) as
    /// the IPv4 address it carries.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let inner = match ip {
            IpAddr::V6(a) => embedded_v4(a).map(|(v4, _)| IpAddr::V4(v4)),
            IpAddr::V4(_) => None,
        };
        self.0
            .iter()
            .any(|c| c.contains(ip) || inner.is_some_and(|i| c.contains(i)))
    }
}

/// The guard's verdict on one address: `Ok` to connect, or why not.
pub fn check(ip: IpAddr, allow: &Allowlist) -> Result<(), Denied> {
    match classify(ip) {
        Some(d) if !allow.allows(ip) => Err(d),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn class(s: &str) -> Option<&'static str> {
        classify(ip(s)).map(|d| d.class)
    }

    /// One address in every refused class, in each form that reaches it.
    const DENIED: &[(&str, &str)] = &[
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::127.0.0.1", "loopback"),
        ("64:ff9b::7f00:1", "loopback"),
        ("::ffff:0:7f00:1", "loopback"),
        ("2002:7f00:1::", "loopback"),
        ("10.1.2.3", "private (RFC 1918)"),
        ("172.16.0.1", "private (RFC 1918)"),
        ("172.31.255.255", "private (RFC 1918)"),
        ("192.168.1.1", "private (RFC 1918)"),
        ("::ffff:10.0.0.1", "private (RFC 1918)"),
        ("64:ff9b::c0a8:101", "private (RFC 1918)"),
        ("fd12:3456::1", "private (unique local)"),
        ("fc00::1", "private (unique local)"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("::ffff:169.254.9.9", "link-local"),
        ("100.64.0.1", "shared address space (CGNAT, RFC 6598)"),
        ("100.127.255.254", "shared address space (CGNAT, RFC 6598)"),
        (
            "::ffff:100.64.0.1",
            "shared address space (CGNAT, RFC 6598)",
        ),
        ("169.254.169.254", "cloud metadata service"),
        ("::ffff:169.254.169.254", "cloud metadata service"),
        ("64:ff9b::a9fe:a9fe", "cloud metadata service"),
        ("fd00:ec2::254", "cloud metadata service"),
        ("100.100.100.200", "cloud metadata service"),
        ("0.0.0.0", "unspecified (this network)"),
        ("0.1.2.3", "unspecified (this network)"),
        ("::", "unspecified"),
        ("::ffff:0.0.0.0", "unspecified (this network)"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("ff05::1:3", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.10", "documentation (TEST-NET-1)"),
        ("198.51.100.7", "documentation (TEST-NET-2)"),
        ("203.0.113.9", "documentation (TEST-NET-3)"),
        ("2001:db8::1", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("198.19.255.255", "benchmarking"),
        ("2001:2::1", "benchmarking"),
        ("192.0.0.170", "IETF protocol assignments"),
        ("2001::1", "Teredo tunnel"),
        ("64:ff9b:1::1", "local-use NAT64 (RFC 8215)"),
        ("fec0::1", "site-local (deprecated)"),
        ("100::1", "discard-only"),
        ("::8.8.8.8", "deprecated IPv4-compatible address"),
        ("4000::1", "reserved (not global unicast)"),
    ];

    #[test]
    fn every_denied_class_and_its_ipv6_forms_are_refused() {
        for (addr, expected) in DENIED {
            assert_eq!(class(addr), Some(*expected), "{addr}");
            assert!(
                check(ip(addr), &Allowlist::default()).is_err(),
                "{addr} passed"
            );
        }
    }

    #[test]
    fn public_addresses_pass() {
        for addr in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.1.1",
            "192.169.0.1",
            "198.17.255.255",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(classify(ip(addr)), None, "{addr}");
        }
    }

    #[test]
    fn the_refusal_names_the_class_range_and_form() {
        let d = classify(ip("::ffff:169.254.169.254")).unwrap();
        assert_eq!(
            d.to_string(),
            "a cloud metadata service address (169.254.169.254/32, in IPv4-mapped ::ffff:0:0/96)"
        );
        assert_eq!(
            classify(ip("10.0.0.1")).unwrap().to_string(),
            "a private (RFC 1918) address (10.0.0.0/8)"
        );
    }

    #[test]
    fn the_allowlist_lets_listed_addresses_through_and_nothing_else() {
        let allow = Allowlist::parse("127.0.0.1, ::1 10.8.0.0/16,[fd00::]/8").unwrap();
        for ok in [
            "127.0.0.1",
            "::1",
            "::ffff:127.0.0.1",
            "10.8.3.4",
            "fd99::1",
        ] {
            assert_eq!(check(ip(ok), &allow), Ok(()), "{ok}");
        }
        for no in [
            "127.0.0.2",
            "10.9.0.1",
            "fe80::1",
            "169.254.169.254",
            "fc00::1",
        ] {
            assert!(check(ip(no), &allow).is_err(), "{no}");
        }
        assert!(Allowlist::parse("").unwrap().0.is_empty());
        for bad in ["localhost", "10.0.0.0/33", "::1/129", "1.2.3"] {
            let e = Allowlist::parse(bad).unwrap_err();
            assert!(e.starts_with("FLOWTRACK_EGRESS_ALLOW"), "{e}");
        }
    }

    fn v4_in(net: u32, len: u8) -> impl Strategy<Value = Ipv4Addr> {
        let host_bits = 32 - u32::from(len);
        any::<u32>().prop_map(move |r| {
            let mask = if host_bits == 32 {
                u32::MAX
            } else {
                (1u32 << host_bits) - 1
            };
            Ipv4Addr::from((net & !mask) | (r & mask))
        })
    }

    proptest! {
        /// Every address of every refused IPv4 range is refused, and so is
        /// each IPv6 form carrying it.
        #[test]
        fn refused_v4_ranges_are_refused_in_every_form(
            (i, a) in (0..V4.len()).prop_flat_map(|i| (Just(i), v4_in(V4[i].0, V4[i].1)))
        ) {
            let _ = i;
            let d = classify(IpAddr::V4(a));
            prop_assert!(d.is_some(), "{a} passed");
            let n = u32::from(a) as u128;
            for form in [
                a.to_ipv6_mapped(),
                Ipv6Addr::from(n),
                Ipv6Addr::from(v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0]) | n),
                Ipv6Addr::from(v6([0, 0, 0, 0, 0xffff, 0, 0, 0]) | n),
                Ipv6Addr::from(v6([0x2002, 0, 0, 0, 0, 0, 0, 0]) | (n << 80)),
            ] {
                prop_assert!(classify(IpAddr::V6(form)).is_some(), "{form} ({a}) passed");
            }
        }

        /// A public IPv4 address passes as itself, mapped and through NAT64.
        #[test]
        fn public_v4_passes_in_its_routable_forms(a in any::<u32>().prop_map(Ipv4Addr::from)) {
            prop_assume!(classify(IpAddr::V4(a)).is_none());
            prop_assert!(!a.is_loopback() && !a.is_private() && !a.is_link_local()
                         && !a.is_multicast() && !a.is_broadcast() && !a.is_unspecified()
                         && !a.is_documentation());
            prop_assert_eq!(classify(IpAddr::V6(a.to_ipv6_mapped())), None);
            let nat64 = Ipv6Addr::from(v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0]) | u32::from(a) as u128);
            prop_assert_eq!(classify(IpAddr::V6(nat64)), None);
        }

        /// Whatever passes is global: never one of std's special classes.
        #[test]
        fn nothing_special_passes_v6(n in any::<u128>()) {
            let a = Ipv6Addr::from(n);
            if classify(IpAddr::V6(a)).is_none() {
                prop_assert!(!a.is_loopback() && !a.is_unspecified() && !a.is_multicast());
                prop_assert!((a.segments()[0] & 0xfe00) != 0xfc00, "{a}");
                prop_assert!((a.segments()[0] & 0xffc0) != 0xfe80, "{a}");
                prop_assert!((a.segments()[0] & 0xe000) == 0x2000, "{a}");
            }
        }

        /// Allowlisting a loopback or private address lets exactly that
        /// address (and its IPv6 forms) through.
        #[test]
        fn allowlisted_address_passes_neighbours_do_not(a in v4_in(v4(127, 0, 0, 0), 8)) {
            let allow = Allowlist::parse(&a.to_string()).unwrap();
            prop_assert_eq!(check(IpAddr::V4(a), &allow), Ok(()));
            prop_assert_eq!(check(IpAddr::V6(a.to_ipv6_mapped()), &allow), Ok(()));
            let other = Ipv4Addr::from(u32::from(a) ^ 1);
            prop_assert!(check(IpAddr::V4(other), &allow).is_err());
        }
    }
}
