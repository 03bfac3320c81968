//! Every present key is found at its exact position, every probe's lower bound equals
//! `partition_point`, and no window exceeds `2·ε_max + 1` keys — over many key shapes and sizes.

mod common;

use common::{keys, probes, Shape, SHAPES};
use kyrodb_rmi::{Kernel, Rmi, RmiConfig, RmiError};
use proptest::prelude::*;

fn check_all(keys: &[u64], epsilon: u32) {
    let config = RmiConfig {
        epsilon_max_slots: epsilon,
        ..RmiConfig::default()
    };
    let mut rmi = Rmi::build(keys, &config).expect("build");
    assert!(rmi.epsilon() <= epsilon);
    assert!(rmi.window_max_slots() <= 2 * epsilon as usize + 1);
    rmi.verify(keys).expect("verify");
    let probes = probes(keys, keys.len() as u64);
    for kernel in Kernel::ALL.into_iter().filter(|k| k.is_supported()) {
        rmi.set_kernel(kernel).expect("supported");
        for (i, &k) in keys.iter().enumerate() {
            assert_eq!(rmi.find(keys, k), Some(i), "{kernel:?} present key {k}");
        }
        for &p in &probes {
            assert_eq!(
                rmi.lower_bound(keys, p),
                keys.partition_point(|k| *k < p),
                "{kernel:?} probe {p}"
            );
            assert_eq!(rmi.find(keys, p), keys.binary_search(&p).ok());
            if let Some(predicted) = rmi.predict(p) {
                let lo = predicted.saturating_sub(rmi.epsilon() as usize);
                let answer = keys.partition_point(|k| *k < p);
                assert!(answer >= lo && answer <= predicted + rmi.epsilon() as usize + 1);
            }
        }
    }
    let mut lower = vec![0; probes.len()];
    rmi.lower_bound_batch(keys, &probes, &mut lower);
    let mut found = vec![None; probes.len()];
    rmi.find_batch(keys, &probes, &mut found);
    for (j, &p) in probes.iter().enumerate() {
        assert_eq!(lower[j], keys.partition_point(|k| *k < p));
        assert_eq!(found[j], keys.binary_search(&p).ok());
    }
}

fn shape() -> impl Strategy<Value = Shape> {
    (0..SHAPES.len()).prop_map(|i| SHAPES[i])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn lookups_are_exact_and_bounded(shape in shape(), n in 0usize..3000, seed in any::<u64>(), eps in prop::sample::select(vec![0u32, 1, 2, 5, 16, 32, 100])) {
        check_all(&keys(shape, n, seed), eps);
    }

    #[test]
    fn arbitrary_sets_are_exact(mut raw in prop::collection::vec(any::<u64>(), 0..300), eps in 0u32..40) {
        raw.sort_unstable();
        raw.dedup();
        check_all(&raw, eps);
    }
}

#[test]
fn edge_sets() {
    for eps in [0, 1, 16] {
        check_all(&[], eps);
        check_all(&[0], eps);
        check_all(&[u64::MAX], eps);
        check_all(&[0, u64::MAX], eps);
        check_all(&(u64::MAX - 1000..=u64::MAX).collect::<Vec<_>>(), eps);
        check_all(
            &(0..2000u64).map(|i| i * 1_000_000_007).collect::<Vec<_>>(),
            eps,
        );
    }
}

#[test]
fn larger_sets_of_every_shape() {
    for shape in SHAPES {
        check_all(&keys(shape, 60_000, 7), 16);
    }
}

#[test]
fn empty_index_answers_without_panicking() {
    let rmi = Rmi::build(&[], &RmiConfig::default()).expect("build");
    assert_eq!(rmi.find(&[], 5), None);
    assert_eq!(rmi.lower_bound(&[], 5), 0);
    // A mismatched slice gives wrong answers, never a panic.
    assert_eq!(rmi.lower_bound(&[1, 2, 3], 2), 0);
}

#[test]
fn unsorted_or_duplicate_input_is_refused() {
    let err = Rmi::build(&[1, 3, 2], &RmiConfig::default()).unwrap_err();
    assert!(matches!(
        err,
        RmiError::NotSortedOrDuplicate { index: 2, .. }
    ));
    let err = Rmi::build(&[1, 1], &RmiConfig::default()).unwrap_err();
    assert!(matches!(
        err,
        RmiError::NotSortedOrDuplicate { index: 1, .. }
    ));
    let bad = RmiConfig {
        epsilon_max_slots: u32::MAX,
        ..RmiConfig::default()
    };
    assert!(matches!(
        Rmi::build(&[1], &bad),
        Err(RmiError::InvalidConfig(_))
    ));
}

#[test]
fn mismatched_slice_never_panics() {
    let keys: Vec<u64> = (0..10_000u64).map(|i| i * 3).collect();
    let rmi = Rmi::build(&keys, &RmiConfig::default()).expect("build");
    let short = &keys[..100];
    for p in [0, 500, 29_997, u64::MAX] {
        let _ = rmi.find(short, p);
        let _ = rmi.lower_bound(short, p);
    }
    assert!(rmi.verify(short).is_err());
}
