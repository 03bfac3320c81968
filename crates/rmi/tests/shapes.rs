//! Every shape the build can choose answers exactly; the chooser picks a model-free layout where a model
//! cannot pay and keeps every index within the model budget, also on clustered string-prefix keys; files
//! of every shape round-trip and crafted ones are refused.

mod common;

use common::{keys, probes, Shape as KeyShape, SHAPES};
use kyrodb_rmi::{
    Kernel, Rmi, RmiConfig, RmiError, RmiFile, Shape, FLAG_BINARY, FLAG_TREE, HEADER_BYTES,
    MODEL_BYTES_PER_KEY_MAX, TRAILER_BYTES,
};
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Every shape a build may produce, for the given ε bound.
fn all_shapes(epsilon: u32) -> Vec<Shape> {
    let mut shapes = vec![Shape::BinarySearch];
    shapes.extend([1, 16, 32, 64].map(|b| Shape::SearchTree { block_keys: b }));
    shapes.extend([0, 1, 8, epsilon].map(|e| Shape::Learned { epsilon_max: e }));
    shapes
}

fn config(epsilon: u32) -> RmiConfig {
    RmiConfig {
        epsilon_max_slots: epsilon,
        ..RmiConfig::default()
    }
}

/// Exact answers for every key and every probe (neighbours, extremes, random), with every kernel, single
/// and batched; at most `window_max_slots <= 2·ε_max + 1` keys read.
fn check_exact(rmi: &mut Rmi, keys: &[u64]) {
    assert!(rmi.window_max_slots() <= 2 * rmi.epsilon_max() as usize + 1);
    rmi.verify(keys).expect("verify");
    let probes = probes(keys, keys.len() as u64 ^ 0x5eed);
    for kernel in Kernel::ALL.into_iter().filter(|k| k.is_supported()) {
        rmi.set_kernel(kernel).expect("supported");
        for (i, &k) in keys.iter().enumerate() {
            assert_eq!(
                rmi.find(keys, k),
                Some(i),
                "{} {kernel:?} key {k}",
                rmi.shape()
            );
        }
        for &p in &probes {
            assert_eq!(
                rmi.lower_bound(keys, p),
                keys.partition_point(|k| *k < p),
                "{} {kernel:?} probe {p}",
                rmi.shape()
            );
            assert_eq!(rmi.find(keys, p), keys.binary_search(&p).ok());
        }
        let mut lower = vec![0; probes.len()];
        rmi.lower_bound_batch(keys, &probes, &mut lower);
        let mut found = vec![None; probes.len()];
        rmi.find_batch(keys, &probes, &mut found);
        for (j, &p) in probes.iter().enumerate() {
            assert_eq!(
                lower[j],
                keys.partition_point(|k| *k < p),
                "{} batch",
                rmi.shape()
            );
            assert_eq!(
                found[j],
                keys.binary_search(&p).ok(),
                "{} batch",
                rmi.shape()
            );
        }
    }
}

/// Builds `shape` over `keys` when the bound allows it and checks it; returns whether it was built.
fn check_shape(keys: &[u64], shape: Shape, epsilon: u32) -> bool {
    match Rmi::build_shape(keys, &config(epsilon), shape) {
        Ok(mut rmi) => {
            assert_eq!(rmi.shape(), shape);
            check_exact(&mut rmi, keys);
            true
        }
        Err(RmiError::InvalidConfig(_)) => false,
        Err(e) => panic!("{shape}: {e}"),
    }
}

fn key_shape() -> impl Strategy<Value = KeyShape> {
    (0..SHAPES.len()).prop_map(|i| SHAPES[i])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn every_shape_is_exact(shape in key_shape(), n in 0usize..5000, seed in any::<u64>(), eps in prop::sample::select(vec![0u32, 8, 16, 32, 100])) {
        let keys = keys(shape, n, seed);
        for s in all_shapes(eps) {
            check_shape(&keys, s, eps);
        }
        let mut chosen = Rmi::build(&keys, &config(eps)).expect("build");
        check_exact(&mut chosen, &keys);
    }

    #[test]
    fn every_shape_is_exact_on_arbitrary_sets(mut raw in prop::collection::vec(any::<u64>(), 0..400)) {
        raw.sort_unstable();
        raw.dedup();
        for s in all_shapes(32) {
            check_shape(&raw, s, 32);
        }
    }
}

#[test]
fn every_shape_is_exact_across_tree_levels() {
    // Sizes around node and block boundaries: 16 · 16^k keys and their neighbours.
    for n in [16, 17, 255, 256, 257, 4095, 4096, 4097, 65_537] {
        let keys = keys(KeyShape::Uniform, n, n as u64);
        for s in all_shapes(32) {
            check_shape(&keys, s, 32);
        }
    }
}

#[test]
fn bounds_keep_model_free_shapes_out() {
    let keys = keys(KeyShape::Uniform, 10_000, 4);
    // Blocks wider than 2·ε + 1 and binary searches of more probes are refused, never built.
    assert!(!check_shape(&keys, Shape::SearchTree { block_keys: 16 }, 7));
    assert!(!check_shape(&keys, Shape::BinarySearch, 6));
    assert!(check_shape(&keys, Shape::BinarySearch, 7));
    // And the chooser does not pick them either.
    for eps in [0, 1, 4, 6] {
        let rmi = Rmi::build(&keys, &config(eps)).expect("build");
        assert!(
            matches!(rmi.shape(), Shape::Learned { epsilon_max } if epsilon_max <= eps),
            "eps {eps}: chose {}",
            rmi.shape()
        );
        assert!(rmi.window_max_slots() <= 2 * eps as usize + 1);
    }
}

#[test]
fn tiny_and_cache_resident_sets_get_no_model() {
    for shape in SHAPES {
        for n in [1, 10, 100, 1000, 10_000] {
            let keys = keys(shape, n, 11);
            let rmi = Rmi::build(&keys, &RmiConfig::default()).expect("build");
            assert!(
                matches!(rmi.shape(), Shape::BinarySearch | Shape::SearchTree { .. }),
                "{shape:?} n {n}: chose {}",
                rmi.shape()
            );
        }
    }
    // The smallest sets need no structure at all.
    let keys = keys(KeyShape::Uniform, 1000, 3);
    let rmi = Rmi::build(&keys, &RmiConfig::default()).expect("build");
    assert_eq!(rmi.shape(), Shape::BinarySearch);
    assert_eq!(rmi.predict(keys[10]), None);
}

#[test]
fn sets_beyond_l2_get_a_structure() {
    // 1M keys (8 MB) outgrow L2: the last binary-search steps miss, so a tree or a model must win.
    for shape in [KeyShape::Uniform, KeyShape::Clustered] {
        let keys = keys(shape, 1_000_000, 12);
        let rmi = Rmi::build(&keys, &RmiConfig::default()).expect("build");
        assert_ne!(rmi.shape(), Shape::BinarySearch, "{shape:?}");
        assert!(rmi.model_bytes() as f64 <= MODEL_BYTES_PER_KEY_MAX * keys.len() as f64);
    }
}

#[test]
fn choice_is_deterministic() {
    for shape in SHAPES {
        let keys = keys(shape, 50_000, 5);
        let a = Rmi::build(&keys, &RmiConfig::default()).expect("build");
        let b = Rmi::build(&keys, &RmiConfig::default()).expect("build");
        assert_eq!(a.shape(), b.shape(), "{shape:?}");
        assert_eq!(a.model_bytes(), b.model_bytes());
    }
}

/// Package-name-like strings: a few hundred popular stems (some shared by thousands of names, as
/// `django-` or `azure-` are), then a random tail; the first 8 bytes big-endian, sorted, deduplicated.
fn string_prefix_keys(n: usize, seed: u64) -> Vec<u64> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = SmallRng::seed_from_u64(seed);
    let stems: Vec<Vec<u8>> = (0..400)
        .map(|_| {
            let len = rng.gen_range(1..8);
            let mut stem: Vec<u8> = (0..len).map(|_| ALPHABET[rng.gen_range(0..26)]).collect();
            if rng.gen_bool(0.3) {
                stem.push(b'-');
            }
            stem
        })
        .collect();
    let mut keys: Vec<u64> = Vec::with_capacity(n + n / 4);
    while keys.len() < n + n / 4 {
        // Zipf-like stem popularity: stem i with weight ~ 1 / (i + 1).
        let stem = &stems[(stems.len() as f64 * rng.gen::<f64>().powi(3)) as usize];
        let mut name = stem.clone();
        let tail = rng.gen_range(0..12);
        name.extend((0..tail).map(|_| {
            let i = (ALPHABET.len() as f64 * rng.gen::<f64>().powi(2)) as usize;
            ALPHABET[i]
        }));
        let mut bytes = [0u8; 8];
        let len = name.len().min(8);
        bytes[..len].copy_from_slice(&name[..len]);
        keys.push(u64::from_be_bytes(bytes));
    }
    keys.sort_unstable();
    keys.dedup();
    keys.truncate(n);
    keys
}

#[test]
fn string_prefix_keys_stay_within_the_model_budget() {
    for (n, seed) in [(20_000, 1), (200_000, 2), (600_000, 3)] {
        let keys = string_prefix_keys(n, seed);
        assert!(keys.len() > n / 2, "generator made {} keys", keys.len());
        let per_key = |rmi: &Rmi| rmi.model_bytes() as f64 / keys.len() as f64;
        let chosen = Rmi::build(&keys, &RmiConfig::default()).expect("build");
        assert!(
            per_key(&chosen) <= MODEL_BYTES_PER_KEY_MAX,
            "n {n}: {} takes {:.3} B/key",
            chosen.shape(),
            per_key(&chosen)
        );
        // The learned shape itself, at the default ε, fits the budget on these keys too.
        let learned = Rmi::build_shape(
            &keys,
            &RmiConfig::default(),
            Shape::Learned {
                epsilon_max: RmiConfig::default().epsilon_max_slots,
            },
        )
        .expect("build");
        assert!(
            per_key(&learned) <= MODEL_BYTES_PER_KEY_MAX,
            "n {n}: learned takes {:.3} B/key",
            per_key(&learned)
        );
        let mut chosen = chosen;
        check_exact(&mut chosen, &keys);
    }
}

fn reseal(bytes: &mut [u8]) {
    let body = bytes.len() - TRAILER_BYTES;
    let sum = kyrodb_rmi::checksum(&bytes[..body]);
    bytes[body..].copy_from_slice(&sum.to_le_bytes());
}

#[test]
fn model_free_files_round_trip_and_crafted_ones_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keys(KeyShape::Clustered, 5000, 8);
    for shape in [
        Shape::BinarySearch,
        Shape::SearchTree { block_keys: 16 },
        Shape::SearchTree { block_keys: 64 },
        Shape::Learned { epsilon_max: 32 },
    ] {
        let rmi = Rmi::build_shape(&keys, &config(32), shape).expect("build");
        let path = dir.path().join("idx.rmi");
        rmi.save(&path, None).expect("save");
        let mut loaded = Rmi::load(&path).expect("load");
        assert_eq!(loaded.shape(), shape);
        assert_eq!(loaded.model_bytes(), rmi.model_bytes());
        check_exact(&mut loaded, &keys);
        rmi.save(&path, Some(&keys)).expect("save");
        let file = RmiFile::open(&path).expect("open");
        assert_eq!(file.keys(), Some(&keys[..]));
        let good = std::fs::read(&path).expect("read");
        let flags = u32::from_le_bytes(good[12..16].try_into().unwrap());
        match shape {
            Shape::BinarySearch => assert_eq!(flags & (FLAG_BINARY | FLAG_TREE), FLAG_BINARY),
            Shape::SearchTree { .. } => assert_eq!(flags & (FLAG_BINARY | FLAG_TREE), FLAG_TREE),
            Shape::Learned { .. } => assert_eq!(flags & (FLAG_BINARY | FLAG_TREE), 0),
        }
        // A stale file (other keys, same count) is rebuilt, never served.
        let other: Vec<u64> = keys.iter().map(|k| k / 2 * 2 + 1).collect::<Vec<_>>();
        let mut other = other;
        other.dedup();
        rmi.save(&path, None).expect("save");
        let (mut rebuilt, was_rebuilt) =
            Rmi::load_or_rebuild(&path, &other, &config(32)).expect("rebuild");
        assert!(was_rebuilt || rebuilt.verify(&other).is_ok());
        check_exact(&mut rebuilt, &other);
    }

    // Crafted tree and binary files with valid checksums.
    let tree =
        Rmi::build_shape(&keys, &config(32), Shape::SearchTree { block_keys: 16 }).expect("build");
    let path = dir.path().join("tree.rmi");
    tree.save(&path, Some(&keys)).expect("save");
    let good = std::fs::read(&path).expect("read");
    type Mutation = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "both model-free flags",
            Box::new(|b| b[12] |= FLAG_BINARY as u8),
        ),
        (
            "block of 0 keys",
            Box::new(|b| b[HEADER_BYTES..HEADER_BYTES + 4].fill(0)),
        ),
        (
            "block wider than the window bound",
            Box::new(|b| b[HEADER_BYTES..HEADER_BYTES + 4].copy_from_slice(&66u32.to_le_bytes())),
        ),
        (
            "nodes of 8 keys",
            Box::new(|b| {
                b[HEADER_BYTES + 4..HEADER_BYTES + 8].copy_from_slice(&8u32.to_le_bytes())
            }),
        ),
        (
            "a level too many",
            Box::new(|b| {
                let t = u64::from_le_bytes(b[32..40].try_into().unwrap()) + 1;
                b[32..40].copy_from_slice(&t.to_le_bytes());
            }),
        ),
        (
            "a separator moved past its keys",
            Box::new(|b| {
                // The last separator of the bottom level's first node, which bounds block 15.
                let nodes = u64::from_le_bytes(b[40..48].try_into().unwrap()) as usize / 16;
                let first_bottom = nodes - 5000usize.div_ceil(16).div_ceil(16);
                let at = HEADER_BYTES + 8 + first_bottom * 128;
                b[at..at + 8].copy_from_slice(&0u64.to_le_bytes());
            }),
        ),
        (
            "tree file with leaves",
            Box::new(|b| b[24..32].copy_from_slice(&1u64.to_le_bytes())),
        ),
    ];
    let crafted = dir.path().join("crafted.rmi");
    for (what, mutate) in cases {
        let mut b = good.clone();
        mutate(&mut b);
        reseal(&mut b);
        std::fs::write(&crafted, &b).expect("write");
        match RmiFile::open(&crafted) {
            Err(RmiError::Corrupt { .. }) => {}
            Err(RmiError::Truncated { .. }) if what == "a level too many" => {}
            other => panic!("{what}: {:?}", other.map(|_| "accepted")),
        }
    }
    // A binary-search file claiming tables.
    let binary = Rmi::build_shape(&keys, &config(32), Shape::BinarySearch).expect("build");
    binary.save(&path, None).expect("save");
    let mut b = std::fs::read(&path).expect("read");
    b[32..40].copy_from_slice(&1u64.to_le_bytes());
    reseal(&mut b);
    std::fs::write(&crafted, &b).expect("write");
    assert!(matches!(
        RmiFile::open(&crafted),
        Err(RmiError::Corrupt { .. })
    ));
}

/// Above the last-level cache the shape is chosen by timing the candidates: whatever wins, it stays
/// within the model budget and exact.
#[test]
fn large_sets_chosen_by_timing_stay_within_budget_and_exact() {
    let n = 2_200_000u64; // 17.6 MB of keys: over the 16 MB the cost model assumes cached
    let keys: Vec<u64> = (0..n).map(|i| i * 7919 + (i * i) % 7907).collect();
    let rmi = Rmi::build(&keys, &RmiConfig::default()).expect("build");
    assert!(
        rmi.model_bytes() <= keys.len(),
        "{} model bytes for {} keys ({:?})",
        rmi.model_bytes(),
        keys.len(),
        rmi.shape()
    );
    for i in (0..keys.len()).step_by(997) {
        assert_eq!(rmi.find(&keys, keys[i]), Some(i), "{:?}", rmi.shape());
        let gap = keys[i] + 1;
        assert_eq!(
            rmi.lower_bound(&keys, gap),
            keys.partition_point(|&k| k < gap),
            "{:?}",
            rmi.shape()
        );
    }
}
