//! Property: within a session, any delivery order with any duplicates and
//! losses gives exactly the outcome of a small reference model of the
//! receive chain: every message opens at most once (exactly once when it is
//! delivered and within the bounds), a second delivery is `Replay`, a jump
//! of more than `MAX_SKIP` is `TooFarAhead`, and at most `MAX_SKIPPED_KEYS`
//! skipped keys are kept (oldest erased first). A refused delivery changes
//! nothing.

mod common;

use std::collections::BTreeSet;

use common::*;
use proptest::prelude::*;
use sotto_proto::session::{MAX_SKIP, MAX_SKIPPED_KEYS};
use sotto_proto::*;

/// The receive side of a session, as docs/protocol.md describes it.
#[derive(Default)]
struct Model {
    next: u32,
    skipped: BTreeSet<u32>,
}

impl Model {
    fn receive(&mut self, c: u32) -> Result<()> {
        if c < self.next {
            return if self.skipped.remove(&c) {
                Ok(())
            } else {
                Err(Error::Replay)
            };
        }
        if c - self.next > MAX_SKIP {
            return Err(Error::TooFarAhead);
        }
        for i in self.next..c {
            self.skipped.insert(i);
            if self.skipped.len() > MAX_SKIPPED_KEYS {
                self.skipped.pop_first();
            }
        }
        self.next = c + 1;
        Ok(())
    }
}

fn check(
    n: usize,
    lost_prefix: u32,
    deliveries: Vec<usize>,
) -> std::result::Result<(), TestCaseError> {
    let mut rng = TestRng::new("order property");
    let (alice, bob) = (UserKey::generate(&mut rng), UserKey::generate(&mut rng));
    let (mut a, mut b) = (device(&mut rng, &alice), device(&mut rng, &bob));
    connect(&mut rng, &mut a, &mut b, &bob.public());
    // Messages lost in transit before the ones we deliver.
    for i in 0..lost_prefix {
        a.seal(
            &mut rng,
            &payload(&alice.public(), 1_000_000 + i),
            &[b.id()],
        )
        .unwrap();
    }
    let msgs: Vec<(Payload, Vec<u8>)> = (0..n as u32)
        .map(|i| {
            let p = payload(&alice.public(), i);
            let dg = a.seal(&mut rng, &p, &[b.id()]).unwrap();
            (p, dg)
        })
        .collect();
    let mut model = Model::default();
    let mut opened = vec![0u32; n];
    // The random deliveries, then every message once more in order.
    for i in deliveries.into_iter().chain(0..n) {
        let (p, dg) = &msgs[i];
        let c = lost_prefix + i as u32;
        let expected = model.receive(c);
        b.take_changes();
        match b.open(dg) {
            Ok(o) => {
                prop_assert_eq!(
                    expected,
                    Ok(()),
                    "message {} opened, the model refuses it",
                    i
                );
                prop_assert_eq!(&o.payload, p);
                opened[i] += 1;
            }
            Err(e) => {
                prop_assert_eq!(expected, Err(e.clone()), "message {}", i);
                prop_assert!(
                    b.take_changes().is_empty(),
                    "a refused delivery changed state"
                );
            }
        }
    }
    for (i, count) in opened.iter().enumerate() {
        prop_assert!(*count <= 1, "message {} opened {} times", i, count);
        // Every message whose counter was ever within reach opened once.
        if lost_prefix == 0 {
            prop_assert_eq!(*count, 1, "message {} never opened", i);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Random orders with duplicates: everything opens exactly once.
    #[test]
    fn any_order_with_duplicates_opens_each_message_once(
        (n, deliveries) in (1usize..40).prop_flat_map(|n| (Just(n), prop::collection::vec(0..n, 0..3 * n)))
    ) {
        check(n, 0, deliveries)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Losses near the skip bound: some counters are out of reach
    /// (`TooFarAhead`) until a nearer one moves the chain forward, and the
    /// skipped-key store stays bounded.
    #[test]
    fn jumps_near_the_skip_bound_follow_the_model(
        lost in (MAX_SKIP - 12)..(MAX_SKIP + 2),
        (n, deliveries) in (1usize..24).prop_flat_map(|n| (Just(n), prop::collection::vec(0..n, 0..3 * n)))
    ) {
        check(n, lost, deliveries)?;
    }
}

#[test]
fn the_model_itself_erases_the_oldest_skipped_key() {
    let mut m = Model::default();
    assert_eq!(m.receive(MAX_SKIP + 1), Err(Error::TooFarAhead));
    assert_eq!(m.receive(MAX_SKIP), Ok(()));
    assert_eq!(m.skipped.len(), MAX_SKIPPED_KEYS);
    assert_eq!(m.receive(MAX_SKIP + 2), Ok(()));
    assert_eq!(m.receive(0), Err(Error::Replay));
    assert_eq!(m.receive(1), Ok(()));
    assert_eq!(m.receive(1), Err(Error::Replay));
}
