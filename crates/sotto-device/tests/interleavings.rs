//! Property: across three devices (alice, and bob with two devices) wired
//! together in memory, any interleaving of sends, partial and reordered
//! deliveries, duplicated deliveries, crashes between commit and
//! acknowledgement, and restarts (the machine dropped and loaded again from
//! its store's committed change sets) loses no message and shows none
//! twice: once everything is delivered, every device's history holds every
//! message exactly once.

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use sotto_device::testing::{Net, Node};

#[derive(Clone, Debug)]
enum Step {
    /// Device `from` (0 alice, 1 bob, 2 bob's second device) sends a
    /// message to the other user.
    Send { from: usize },
    /// Device `to` receives its waiting datagrams: the first `take` of
    /// them, rotated by `rotate`, each twice if `twice`.
    Deliver {
        to: usize,
        take: usize,
        rotate: usize,
        twice: bool,
    },
    /// Device `dev` commits what it receives next but dies before
    /// acknowledging, then restarts.
    Crash { dev: usize, take: usize },
    /// Device `dev` takes its waiting datagrams in but dies before any of
    /// its requests (sender lookups, acknowledgements) went out.
    Interrupted { dev: usize, take: usize },
    /// Device `dev` receives while the directory is down: datagrams whose
    /// sender it must look up stay unacknowledged.
    Outage { dev: usize },
    /// Device `dev` restarts (in-memory state and unsent
    /// acknowledgements lost).
    Restart { dev: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..3usize).prop_map(|from| Step::Send { from }),
        4 => (0..3usize, 0..6usize, 0..6usize, any::<bool>())
            .prop_map(|(to, take, rotate, twice)| Step::Deliver { to, take, rotate, twice }),
        1 => (0..3usize, 1..4usize).prop_map(|(dev, take)| Step::Crash { dev, take }),
        1 => (0..3usize, 1..4usize).prop_map(|(dev, take)| Step::Interrupted { dev, take }),
        1 => (0..3usize).prop_map(|dev| Step::Outage { dev }),
        1 => (0..3usize).prop_map(|dev| Step::Restart { dev }),
    ]
}

/// The first `take` indexes of `n`, rotated, each once or twice.
fn order(n: usize, take: usize, rotate: usize, twice: bool) -> Vec<usize> {
    let k = take.min(n);
    (0..k)
        .map(|i| (i + rotate) % k.max(1))
        .flat_map(|i| if twice { vec![i, i] } else { vec![i] })
        .collect()
}

fn run(steps: &[Step]) -> Result<(), TestCaseError> {
    let mut net = Net::new(T0);
    let alice = register(&mut net, "alice", 1);
    let mut bob = register(&mut net, "bob", 2);
    let bob2 = net.link(&mut bob, rng(3));
    let mut nodes: [Node; 3] = [alice, bob, bob2];
    let mut sent: Vec<String> = Vec::new();
    let mut seed = 100;
    for s in steps {
        net.now += 1000;
        match *s {
            Step::Send { from } => {
                let to = if from == 0 { "bob" } else { "alice" };
                let text = format!("message {}", sent.len());
                net.send(&mut nodes[from], to, &text)
                    .map_err(|e| TestCaseError::fail(format!("send: {e}")))?;
                sent.push(text);
            }
            Step::Deliver {
                to,
                take,
                rotate,
                twice,
            } => {
                net.deliver_in(&mut nodes[to], |n| order(n, take, rotate, twice));
            }
            Step::Crash { dev, take } => {
                nodes[dev].machine.set_skip_ack(true);
                net.deliver_in(&mut nodes[dev], |n| (0..take.min(n)).collect());
                seed += 1;
                nodes[dev].restart(rng(seed));
            }
            Step::Interrupted { dev, take } => {
                net.receive_only(&mut nodes[dev], |n| (0..take.min(n)).collect());
                seed += 1;
                nodes[dev].restart(rng(seed));
            }
            Step::Outage { dev } => {
                net.lookups_fail = true;
                net.deliver_in(&mut nodes[dev], |n| (0..n).collect());
                net.lookups_fail = false;
            }
            Step::Restart { dev } => {
                seed += 1;
                nodes[dev].restart(rng(seed));
            }
        }
    }
    // Deliver everything that waits, until nothing does.
    for _ in 0..4 {
        for n in nodes.iter_mut() {
            net.sync(n);
        }
    }
    for (i, n) in nodes.iter_mut().enumerate() {
        prop_assert_eq!(
            net.waiting(&n.device()),
            0,
            "device {} has nothing waiting",
            i
        );
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for m in n.machine.history(net.now, None, None).unwrap() {
            *seen.entry(m.body).or_default() += 1;
        }
        for text in &sent {
            prop_assert_eq!(
                seen.get(text).copied(),
                Some(1),
                "device {} shows {:?} once",
                i,
                text
            );
        }
        prop_assert_eq!(seen.len(), sent.len(), "device {} shows nothing else", i);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn no_message_is_lost_or_shown_twice(steps in proptest::collection::vec(step(), 1..30)) {
        run(&steps)?;
    }
}

/// A fixed interleaving with every kind of step, so that a regression shows
/// here first with a readable history.
#[test]
fn a_known_hard_interleaving() {
    use Step::*;
    run(&[
        Send { from: 0 },
        Outage { dev: 1 },
        Crash { dev: 1, take: 1 },
        Send { from: 2 },
        Deliver {
            to: 0,
            take: 5,
            rotate: 1,
            twice: true,
        },
        Restart { dev: 0 },
        Send { from: 1 },
        Deliver {
            to: 2,
            take: 2,
            rotate: 1,
            twice: false,
        },
        Crash { dev: 2, take: 3 },
        Send { from: 0 },
        Restart { dev: 1 },
        Send { from: 2 },
        Interrupted { dev: 0, take: 3 },
        Send { from: 0 },
        Interrupted { dev: 1, take: 2 },
    ])
    .unwrap();
}
