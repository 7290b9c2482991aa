//! A network namespace the test makes for itself, joined to the test's own namespace by a veth
//! pair, with nftables rules inside it for what the in-test proxy cannot model: random packet
//! loss and a partition (every packet dropped, no socket told). The server runs inside the
//! namespace (`ip netns exec NAME quire-server ...`); clients in the test process reach it
//! through the veth pair, so every packet crosses the rules.
//!
//! Only the namespace's own link is ever targeted: a private /30 whose two ends are this
//! namespace and its veth peer. Dropping the [`NetNs`] deletes the namespace, which takes the
//! veth pair and the rules with it.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables); `scripts/test.sh` installs both.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The nftables table holding this module's rules inside the namespace.
const TABLE: &str = "quire_faults";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A live network namespace with a veth link to the test's namespace.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    /// The namespace's end of the link: where a server inside it listens.
    pub inside: String,
    /// The test's end of the link.
    pub outside: String,
}

impl NetNs {
    /// Makes the namespace, the veth pair and an empty rule table (input and output chains).
    ///
    /// Panics with the reason when the machine cannot: not root, or `ip`/`nft` missing.
    pub fn create() -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // A /30 per namespace in 10.213.0.0/16, picked from the process id and a counter so
        // parallel tests (and parallel test binaries) do not collide.
        let slot = (std::process::id().wrapping_mul(8).wrapping_add(n)) % 16_384;
        let (third, fourth) = (slot / 64, (slot % 64) * 4);
        let outside = format!("10.213.{third}.{}", fourth + 1);
        let inside = format!("10.213.{third}.{}", fourth + 2);
        let name = format!("quire-test-{slot}");
        // Interface names are limited to 15 bytes.
        let (veth_out, veth_in) = (format!("qo{slot}"), format!("qi{slot}"));

        // A namespace left over from a killed run with the same slot would make `add` fail.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let ns = Self {
            name,
            inside,
            outside,
        };
        run("ip", &["netns", "add", &ns.name]);
        run(
            "ip",
            &[
                "link", "add", &veth_out, "type", "veth", "peer", "name", &veth_in,
            ],
        );
        run("ip", &["link", "set", &veth_in, "netns", &ns.name]);
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/30", ns.outside),
                "dev",
                &veth_out,
            ],
        );
        run("ip", &["link", "set", &veth_out, "up"]);
        ns.ip(&["addr", "add", &format!("{}/30", ns.inside), "dev", &veth_in]);
        ns.ip(&["link", "set", &veth_in, "up"]);
        ns.ip(&["link", "set", "lo", "up"]);
        ns.nft(&["add", "table", "inet", TABLE]);
        for (chain, hook) in [("incoming", "input"), ("outgoing", "output")] {
            ns.nft(&[
                "add",
                "chain",
                "inet",
                TABLE,
                chain,
                &format!("{{ type filter hook {hook} priority 0; policy accept; }}"),
            ]);
        }
        ns
    }

    /// The prefix that runs a command inside the namespace (it execs, keeping the process id).
    pub fn exec_prefix(&self) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.name.clone(),
        ]
    }

    /// `inside:0`, for a server to listen on inside the namespace.
    pub fn listen_any_port(&self) -> String {
        format!("{}:0", self.inside)
    }

    /// Drops `percent` % of the packets in each direction, chosen at random per packet. TCP
    /// packets only, so nothing else on the link is disturbed.
    pub fn lose(&self, percent: u32) {
        self.clear();
        for chain in ["incoming", "outgoing"] {
            self.nft(&[
                "add",
                "rule",
                "inet",
                TABLE,
                chain,
                "meta",
                "l4proto",
                "tcp",
                "numgen",
                "random",
                "mod",
                "100",
                "<",
                &percent.to_string(),
                "counter",
                "drop",
            ]);
        }
    }

    /// Drops every TCP packet in both directions: a partition. Neither end is told; only
    /// timers (the heartbeat, TCP's own retransmission limit) can notice.
    pub fn partition(&self) {
        self.clear();
        for chain in ["incoming", "outgoing"] {
            self.nft(&[
                "add", "rule", "inet", TABLE, chain, "meta", "l4proto", "tcp", "counter", "drop",
            ]);
        }
    }

    /// Removes every fault rule: the link is clean again.
    pub fn heal(&self) {
        self.clear();
    }

    /// How many packets the rules in force have dropped (both directions) since they were set.
    pub fn dropped(&self) -> u64 {
        let output = Command::new("ip")
            .args([
                "netns", "exec", &self.name, "nft", "list", "table", "inet", TABLE,
            ])
            .output()
            .expect("running nft");
        let listing = String::from_utf8_lossy(&output.stdout);
        // Each rule's counter reads "counter packets N bytes M".
        listing
            .split("packets ")
            .skip(1)
            .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    fn clear(&self) {
        for chain in ["incoming", "outgoing"] {
            self.nft(&["flush", "chain", "inet", TABLE, chain]);
        }
    }

    fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    fn nft(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", self.name.as_str(), "nft"];
        all.extend_from_slice(args);
        run("ip", &all);
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace removes its veth end, which removes the pair.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("running {program} (install iproute2 and nftables, run as root): {e}")
        });
    assert!(
        output.status.success(),
        "{program} {} failed (needs root): {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
}
