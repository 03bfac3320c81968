//! The index file round-trips, and truncated, bit-flipped or crafted files are refused with a typed
//! error naming the file and offset — then rebuilt, never served.

mod common;

use std::path::Path;

use common::{keys, Shape};
use kyrodb_rmi::{Rmi, RmiConfig, RmiError, RmiFile, HEADER_BYTES, TRAILER_BYTES};

fn build(keys: &[u64]) -> Rmi {
    Rmi::build(
        keys,
        &RmiConfig {
            epsilon_max_slots: 4,
            ..RmiConfig::default()
        },
    )
    .expect("build")
}

fn assert_same_answers(a: &Rmi, b: &Rmi, keys: &[u64]) {
    for (i, &k) in keys.iter().enumerate() {
        assert_eq!(b.find(keys, k), Some(i));
        assert_eq!(
            a.lower_bound(keys, k.wrapping_add(1)),
            b.lower_bound(keys, k.wrapping_add(1))
        );
    }
}

fn refused(path: &Path) -> RmiError {
    match RmiFile::open(path) {
        Ok(_) => panic!("{} was accepted", path.display()),
        Err(e) => e,
    }
}

#[test]
fn round_trip_with_and_without_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    for shape in [
        Shape::Uniform,
        Shape::Clustered,
        Shape::Outliers,
        Shape::NearMax,
    ] {
        let keys = keys(shape, 20_000, 3);
        let rmi = build(&keys);
        let model_only = dir.path().join("model.rmi");
        rmi.save(&model_only, None).expect("save");
        let loaded = Rmi::load(&model_only).expect("load");
        loaded.verify(&keys).expect("verify");
        assert_same_answers(&rmi, &loaded, &keys);
        let with_keys = dir.path().join("with_keys.rmi");
        rmi.save(&with_keys, Some(&keys)).expect("save");
        let file = RmiFile::open(&with_keys).expect("open");
        assert_eq!(file.keys(), Some(&keys[..]));
        assert_same_answers(&rmi, file.rmi(), &keys);
        assert!(!dir.path().join("with_keys.rmi.tmp").exists());
    }
    let empty = dir.path().join("empty.rmi");
    build(&[]).save(&empty, Some(&[])).expect("save");
    assert_eq!(Rmi::load(&empty).expect("load").lower_bound(&[], 9), 0);
}

#[test]
fn every_truncation_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keys(Shape::Clustered, 300, 5);
    let path = dir.path().join("idx.rmi");
    build(&keys).save(&path, Some(&keys)).expect("save");
    let bytes = std::fs::read(&path).expect("read");
    let cut = dir.path().join("cut.rmi");
    // Every length through the header, then every 7th byte and the last few (each is a write + open).
    let lengths = (0..HEADER_BYTES + 16)
        .chain((HEADER_BYTES..bytes.len()).step_by(7))
        .chain(bytes.len() - 9..bytes.len());
    for len in lengths {
        std::fs::write(&cut, &bytes[..len]).expect("write");
        match refused(&cut) {
            RmiError::Truncated { path, offset, .. } => {
                assert_eq!(path, cut);
                assert_eq!(offset, len as u64);
            }
            other => panic!("len {len}: expected Truncated, got {other}"),
        }
    }
    let mut longer = bytes.clone();
    longer.push(0);
    std::fs::write(&cut, &longer).expect("write");
    assert!(
        matches!(refused(&cut), RmiError::Corrupt { offset, .. } if offset == bytes.len() as u64)
    );
}

#[test]
fn every_bit_flip_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keys(Shape::Outliers, 40, 9);
    let path = dir.path().join("idx.rmi");
    build(&keys).save(&path, Some(&keys)).expect("save");
    let bytes = std::fs::read(&path).expect("read");
    let flipped = dir.path().join("flipped.rmi");
    for byte in 0..bytes.len() {
        let bit = byte % 8;
        let mut b = bytes.clone();
        b[byte] ^= 1 << bit;
        std::fs::write(&flipped, &b).expect("write");
        let err = refused(&flipped);
        let message = err.to_string();
        assert!(
            message.contains("flipped.rmi"),
            "error must name the file: {message}"
        );
        assert!(
            matches!(
                err,
                RmiError::Checksum { .. } | RmiError::Corrupt { .. } | RmiError::Truncated { .. }
            ),
            "byte {byte} bit {bit}: {err}"
        );
    }
}

/// Rewrites the trailing checksum so only the structural checks stand between the file and use.
fn reseal(bytes: &mut [u8]) {
    let body = bytes.len() - TRAILER_BYTES;
    let sum = kyrodb_rmi::checksum(&bytes[..body]);
    bytes[body..].copy_from_slice(&sum.to_le_bytes());
}

type Mutation = Box<dyn Fn(&mut Vec<u8>)>;

#[test]
fn crafted_files_with_valid_checksums_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keys(Shape::Uniform, 2000, 1);
    let path = dir.path().join("idx.rmi");
    build(&keys).save(&path, Some(&keys)).expect("save");
    let good = std::fs::read(&path).expect("read");
    let crafted = dir.path().join("crafted.rmi");
    let cases: [(&str, Mutation); 4] = [
        (
            "epsilon above its bound",
            Box::new(|b| b[52..56].copy_from_slice(&1000u32.to_le_bytes())),
        ),
        ("unknown flag", Box::new(|b| b[12] |= 0x80)),
        (
            "key out of order",
            Box::new(|b| {
                let at = b.len() - TRAILER_BYTES - 8 * 10;
                b[at..at + 8].copy_from_slice(&0u64.to_le_bytes());
            }),
        ),
        (
            "router entry past the leaves",
            Box::new(|b| {
                let tables = u64::from_le_bytes(b[32..40].try_into().unwrap()) as usize;
                let at = HEADER_BYTES + tables * 24 + 4;
                b[at..at + 4].copy_from_slice(&0x3fff_fff0u32.to_le_bytes());
            }),
        ),
    ];
    for (what, mutate) in cases {
        let mut b = good.clone();
        mutate(&mut b);
        reseal(&mut b);
        std::fs::write(&crafted, &b).expect("write");
        assert!(
            matches!(refused(&crafted), RmiError::Corrupt { .. }),
            "{what} accepted"
        );
    }
}

#[test]
fn corrupt_or_missing_file_is_rebuilt_not_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keys(Shape::Lognormal, 5000, 2);
    let path = dir.path().join("idx.rmi");
    // ε = 4 keeps the model-free shapes out (their reads exceed 2·4 + 1): a model that can go stale.
    // (A binary-search index fits any sorted set of its size; tests/shapes.rs covers those files.)
    let config = RmiConfig {
        epsilon_max_slots: 4,
        ..RmiConfig::default()
    };
    let (_, rebuilt) = Rmi::load_or_rebuild(&path, &keys, &config).expect("first");
    assert!(rebuilt, "missing file must be rebuilt");
    let (_, rebuilt) = Rmi::load_or_rebuild(&path, &keys, &config).expect("second");
    assert!(!rebuilt, "valid file must be reused");
    let mut bytes = std::fs::read(&path).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&path, &bytes).expect("write");
    let (rmi, rebuilt) = Rmi::load_or_rebuild(&path, &keys, &config).expect("third");
    assert!(rebuilt, "corrupt file must be rebuilt");
    rmi.verify(&keys).expect("verify");
    // Stale: a valid file for other keys is not served either.
    let other: Vec<u64> = keys.iter().map(|k| k * 2 + 1).collect();
    let (rmi, rebuilt) = Rmi::load_or_rebuild(&path, &other, &config).expect("fourth");
    assert!(rebuilt);
    rmi.verify(&other).expect("verify");
}
