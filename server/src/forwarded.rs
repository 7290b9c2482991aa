//! The client's address behind trusted proxies (`--trusted-proxy`). Behind a load balancer
//! every connection comes from the balancer's address, so per-address limits and log lines
//! would count the balancer, not the clients. For a connection from a trusted proxy, the
//! client is the rightmost address of `X-Forwarded-For` that is not itself a trusted proxy
//! (each proxy appends the address it received the request from, so everything left of the
//! first untrusted hop may be forged by the client). A connection from any other address is
//! that address, whatever its headers say.

use std::net::IpAddr;
use std::str::FromStr;

/// A trusted proxy: one address, or a network in CIDR form (`10.0.0.0/8`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyNet {
    addr: IpAddr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an IP address or a network like 10.0.0.0/8")]
pub struct BadProxyNet(String);

impl FromStr for ProxyNet {
    type Err = BadProxyNet;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadProxyNet(text.to_owned());
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let addr = addr.to_canonical();
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(bad)?,
            None => bits,
        };
        Ok(Self { addr, prefix })
    }
}

impl ProxyNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                same_prefix(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                same_prefix(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn same_prefix(a: &[u8], b: &[u8], bits: u8) -> bool {
    let (whole, rest) = (usize::from(bits / 8), bits % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[whole] & mask == b[whole] & mask
    }
}

/// The client's address for a request from `peer` with `headers` (name, value pairs).
pub fn client_ip(peer: IpAddr, headers: &[(&str, &str)], trusted: &[ProxyNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("x-forwarded-for"))
        .flat_map(|(_, value)| value.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        // A hop that does not read as an address ends what can be believed.
        let Ok(ip) = hop.parse::<IpAddr>() else {
            return peer;
        };
        if !is_trusted(ip) {
            return ip.to_canonical();
        }
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<ProxyNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn networks_parse_and_contain() {
        let net: ProxyNet = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped IPv6");
        let one: ProxyNet = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let odd: ProxyNet = "192.168.0.0/23".parse().unwrap();
        assert!(odd.contains(ip("192.168.1.255")) && !odd.contains(ip("192.168.2.0")));
        let v6: ProxyNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0/8",
            "::/129",
            "proxy",
            "10.0.0.1/x",
        ] {
            assert!(bad.parse::<ProxyNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop_from_a_trusted_peer() {
        let trusted = nets(&["127.0.0.1", "10.0.0.0/8"]);
        let xff = |value| vec![("X-Forwarded-For", value)];
        let proxy = ip("127.0.0.1");
        assert_eq!(
            client_ip(proxy, &xff("203.0.113.7"), &trusted),
            ip("203.0.113.7")
        );
        // A forged first hop, then the real client, then an inner proxy.
        let chain = xff("1.2.3.4, 203.0.113.7, 10.0.0.5");
        assert_eq!(client_ip(proxy, &chain, &trusted), ip("203.0.113.7"));
        // Several headers read as one list, in order.
        let split = vec![
            ("x-forwarded-for", "1.2.3.4"),
            ("X-Forwarded-For", "198.51.100.2"),
        ];
        assert_eq!(client_ip(proxy, &split, &trusted), ip("198.51.100.2"));
        // Nothing usable: the proxy itself.
        assert_eq!(client_ip(proxy, &[], &trusted), proxy);
        assert_eq!(client_ip(proxy, &xff("10.0.0.9"), &trusted), proxy);
        assert_eq!(client_ip(proxy, &xff("1.2.3.4, junk"), &trusted), proxy);
        // An untrusted peer is itself, whatever it claims.
        let client = ip("198.51.100.9");
        assert_eq!(client_ip(client, &xff("203.0.113.7"), &trusted), client);
        assert_eq!(client_ip(proxy, &xff("203.0.113.7"), &[]), proxy);
    }
}
