//! Backups end to end, against the real binary: `POST /v1/backups` / `kyrodb backup create` under
//! write load, incremental backups, kill -9 during a backup, restore equal to the source (keys,
//! documents, search answers), a damaged file named by `verify` and refused by `restore`, the API's
//! refusals, and a real S3-compatible server (s3s-fs, installed by scripts/s3-server).

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::{command, KeepAlive, Server};
use serde_json::{json, Value};

/// How long a backup may take before a test gives up on it.
const BACKUP_DEADLINE: Duration = Duration::from_secs(180);

fn backup_dirs(dir: &Path) -> String {
    format!("--backup-dirs={}", dir.display())
}

/// Starts a backup through the API and polls its status until it is done or failed.
fn backup(s: &Server, to: &str) -> Value {
    let r = s.post("/v1/backups", &json!({ "to": to }).to_string());
    assert_eq!(r.status, 202, "{}", r.text());
    wait_backup(s, r.json()["id"].as_str().unwrap())
}

fn wait_backup(s: &Server, id: &str) -> Value {
    let deadline = Instant::now() + BACKUP_DEADLINE;
    loop {
        let st = s.get(&format!("/v1/backups/{id}")).json();
        if st["state"] == "done" || st["state"] == "failed" {
            return st;
        }
        assert!(Instant::now() < deadline, "backup {id} still running: {st}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `kyrodb backup ARGS…` (no server); returns (success, stdout, stderr).
fn cli(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = command()
        .arg("backup")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `kyrodb backup restore --from FROM --data-dir DIR`.
fn restore(from: &str, data_dir: &str) -> (bool, String, String) {
    cli(&["restore", "--from", from, "--data-dir", data_dir], &[])
}

fn put(c: &mut KeepAlive, key: u64, value: &str, keyspace: &str) -> u64 {
    let r = c
        .request(
            "PUT",
            &format!("/v1/kv/{key}?keyspace={keyspace}"),
            &[],
            value.as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["offset"].as_u64().unwrap()
}

/// `n` keys of `bytes`-byte values in `keyspace` (created), by batch_put.
fn load(s: &Server, keyspace: &str, n: u64, bytes: usize) {
    if keyspace != "default" {
        let r = s.post("/v1/keyspaces", &json!({ "name": keyspace }).to_string());
        assert!(r.status == 201 || r.status == 200, "{}", r.text());
    }
    let mut k = 0;
    while k < n {
        let items: Vec<Value> = (k..(k + 500).min(n))
            .map(|i| json!({"key": i, "value": value(keyspace, i, bytes), "keyspace": keyspace}))
            .collect();
        let r = s.post("/v1/kv/batch_put", &json!({ "items": items }).to_string());
        assert_eq!(r.status, 200, "{}", r.text());
        k += 500;
    }
}

fn value(keyspace: &str, i: u64, bytes: usize) -> String {
    let mut v = format!("{keyspace}-{i}-");
    while v.len() < bytes {
        v.push(char::from(b'a' + (i as usize + v.len()) as u8 % 26));
    }
    v
}

/// Every (keyspace, key, value) the server holds, by scanning each keyspace.
fn all_keys(s: &Server) -> BTreeMap<(String, u64), String> {
    let mut out = BTreeMap::new();
    let names: Vec<String> = s.get("/v1/keyspaces").json()["keyspaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap().to_owned())
        .collect();
    for ks in names {
        let mut start = 0u64;
        loop {
            let page = s
                .get(&format!("/v1/scan?start={start}&limit=1000&keyspace={ks}"))
                .json();
            for item in page["items"].as_array().unwrap() {
                out.insert(
                    (ks.clone(), item["key"].as_u64().unwrap()),
                    item["value"].as_str().unwrap_or("<binary>").to_owned(),
                );
            }
            match page["next_start"].as_u64() {
                Some(n) => start = n,
                None => break,
            }
        }
    }
    out
}

/// The data objects a manifest names, by logical path.
fn manifest(dir: &Path, id: &str) -> Value {
    let p = dir.join("backups").join(id).join("manifest.json");
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

#[test]
fn a_backup_under_write_load_restores_exactly_the_writes_up_to_its_sequence_number() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("backups");
    let s = Server::start_with_args(&tmp.path().join("data"), &[], &[&backup_dirs(&target)]);
    // Some bulk so the backup takes a moment, in a keyspace the writer does not touch.
    load(&s, "bulk", 20_000, 200);

    // The writer puts key k with value "v{k}", k = 0, 1, 2, … one at a time, and records each
    // write's sequence number: the keys a consistent backup holds are exactly those whose
    // sequence number is ≤ the backup's, a prefix.
    let stop = Arc::new(AtomicBool::new(false));
    let port = s.port;
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut c = KeepAlive::open(port).unwrap();
            let mut seqs = Vec::new();
            while !stop.load(Ordering::Relaxed) || seqs.len() < 200 {
                let k = seqs.len() as u64;
                seqs.push(put(&mut c, k, &format!("v{k}"), "default"));
            }
            seqs
        })
    };
    // Let the writer get going, then back up while it writes (through the CLI, as a user would).
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.get("/v1/keyspaces/default").json()["keys"]
        .as_u64()
        .unwrap()
        < 50
    {
        assert!(Instant::now() < deadline, "the writer does not write");
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = command()
        .args(["backup", "create", "--to"])
        .arg(&target)
        .arg("--url")
        .arg(s.url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["state"], "done", "{status}");
    let seq = status["seq"].as_u64().unwrap();
    let id = status["id"].as_str().unwrap().to_owned();
    stop.store(true, Ordering::Relaxed);
    let seqs = writer.join().unwrap();
    let in_backup = seqs.iter().take_while(|s| **s <= seq).count();
    assert!(
        seqs[in_backup..].iter().all(|s| *s > seq),
        "sequence numbers grow"
    );
    assert!(
        in_backup > 0 && in_backup < seqs.len(),
        "the backup ran while the writer wrote ({in_backup} of {} writes before seq {seq})",
        seqs.len()
    );

    let (ok, stdout, stderr) = cli(
        &["verify", "--from", target.to_str().unwrap(), "--id", &id],
        &[],
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!("backup {id} verified: seq {seq}")),
        "{stdout}"
    );
    let new = tmp.path().join("restored");
    let (ok, stdout, stderr) = restore(target.to_str().unwrap(), new.to_str().unwrap());
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!("restored backup {id} (seq {seq}")),
        "{stdout}"
    );
    drop(s);
    let r = Server::start(&new, &[]);
    let got = all_keys(&r);
    let writer_keys: Vec<u64> = got
        .keys()
        .filter(|(ks, _)| ks == "default")
        .map(|(_, k)| *k)
        .collect();
    assert_eq!(
        writer_keys,
        (0..in_backup as u64).collect::<Vec<_>>(),
        "the restored node holds exactly the writes with seq ≤ {seq}"
    );
    for k in 0..in_backup as u64 {
        assert_eq!(got[&("default".to_owned(), k)], format!("v{k}"));
    }
    assert_eq!(got.keys().filter(|(ks, _)| ks == "bulk").count(), 20_000);
    // The restored node's own writes continue after the backup's sequence number.
    let r2 = r.req("PUT", "/v1/kv/999999", &[], b"after");
    assert!(r2.json()["offset"].as_u64().unwrap() > seq, "{}", r2.text());
}

#[test]
fn incremental_backups_send_only_files_the_target_does_not_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("backups");
    let s = Server::start_with_args(&tmp.path().join("data"), &[], &[&backup_dirs(&target)]);
    load(&s, "a", 5_000, 100);
    load(&s, "b", 5_000, 100);
    let to = target.to_str().unwrap();
    let first = backup(&s, to);
    assert_eq!(first["state"], "done", "{first}");
    assert_eq!(first["files_sent"], first["files_total"], "{first}");
    assert_eq!(first["bytes_sent"], first["bytes_total"], "{first}");

    // Only keyspace b changes: a's snapshot files are already in the target.
    let mut c = KeepAlive::open(s.port).unwrap();
    put(&mut c, 1, "changed", "b");
    let second = backup(&s, to);
    assert_eq!(second["state"], "done", "{second}");
    let m1 = manifest(&target, first["id"].as_str().unwrap());
    let m2 = manifest(&target, second["id"].as_str().unwrap());
    let hashes1: BTreeSet<&str> = m1["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["hash"].as_str().unwrap())
        .collect();
    let new: Vec<&Value> = m2["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| !hashes1.contains(f["hash"].as_str().unwrap()))
        .collect();
    assert_eq!(
        second["files_sent"].as_u64().unwrap(),
        new.len() as u64,
        "sent exactly the new files: {second}"
    );
    assert!(
        new.iter().all(|f| {
            let p = f["path"].as_str().unwrap();
            p == "MANIFEST" || p.starts_with("snap/00000")
        }),
        "{new:?}"
    );
    let a_id = s.get("/v1/keyspaces/a").json();
    assert!(a_id["keys"] == 5_000);
    let unchanged = m2["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| hashes1.contains(f["hash"].as_str().unwrap()))
        .count();
    assert!(
        unchanged >= 2,
        "keyspace a's .bin and .data were not sent again: {m2}"
    );
    assert_eq!(
        second["files_skipped"].as_u64().unwrap(),
        unchanged as u64,
        "{second}"
    );
    assert!(
        second["bytes_sent"].as_u64().unwrap() < second["bytes_total"].as_u64().unwrap() / 2 + 4096,
        "{second}"
    );
    // Every object is there once: the union of both backups' files.
    let objects = std::fs::read_dir(target.join("data")).unwrap().count();
    assert_eq!(objects, hashes1.len() + new.len());

    let (ok, stdout, stderr) = cli(&["list", "--from", to, "--json"], &[]);
    assert!(ok, "{stderr}");
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            first["id"].as_str().unwrap(),
            second["id"].as_str().unwrap()
        ]
    );
    assert!(listed.as_array().unwrap().iter().all(|b| b["ok"] == true));
    let (ok, stdout, _) = cli(&["list", "--from", to], &[]);
    assert!(
        ok && stdout.contains(&format!("seq {}", second["seq"])),
        "{stdout}"
    );
}

#[test]
fn kill_9_during_a_backup_never_leaves_a_manifest_that_verifies_but_is_incomplete() {
    let tmp = tempfile::tempdir().unwrap();
    let targets = tmp.path().join("backups");
    let mut s = Server::start_with_args(&tmp.path().join("data"), &[], &[&backup_dirs(&targets)]);
    for ks in ["k1", "k2", "k3", "k4"] {
        load(&s, ks, 15_000, 500);
    }
    let want = all_keys(&s);
    // How long a whole backup into an empty target takes (the first one also compacts), to place
    // the kills inside one.
    let full = backup(&s, targets.join("measure0").to_str().unwrap());
    assert_eq!(full["state"], "done", "{full}");
    let started = Instant::now();
    let full = backup(&s, targets.join("measure1").to_str().unwrap());
    assert_eq!(full["state"], "done", "{full}");
    let took = started.elapsed();

    let mut x: u64 = 0x2545_F491_4F6C_DD1D ^ u64::from(std::process::id());
    let mut killed_before_manifest = 0;
    // At least 8 rounds; more (up to 24) until some kill landed inside a backup and some backup
    // finished first (its manifest must verify and restore). A round that finished before its
    // kill halves the window, one killed inside it grows the window by half (a busy machine makes
    // durations vary).
    let mut window = took;
    let mut rounds = 0;
    while rounds < 8
        || ((killed_before_manifest == 0 || killed_before_manifest == rounds) && rounds < 24)
    {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // A random instant within the window (a round may still finish first).
        let at = Duration::from_micros(x % (window.as_micros() as u64 + 1));
        let to = targets.join(format!("round{rounds}"));
        let r = s.post("/v1/backups", &json!({ "to": to }).to_string());
        assert_eq!(r.status, 202, "{}", r.text());
        std::thread::sleep(at); // the kill's instant, not a wait for anything
        s.kill9();
        // Finished: a manifest is there (its directory alone may come just before it).
        let finished = std::fs::read_dir(to.join("backups"))
            .map(|rd| {
                rd.flatten()
                    .any(|d| d.path().join("manifest.json").exists())
            })
            .unwrap_or(false);
        if finished {
            window /= 2;
        } else {
            killed_before_manifest += 1;
            window = window * 3 / 2;
        }
        s.restart();
        rounds += 1;
    }
    drop(s);
    eprintln!(
        "{killed_before_manifest} of {rounds} kills came before the manifest ({took:?} a backup)"
    );
    assert!(killed_before_manifest > 0, "no kill landed inside a backup");
    assert!(
        killed_before_manifest < rounds,
        "no backup finished before its kill"
    );
    // Every manifest in every target verifies and restores completely.
    let mut restored = 0;
    for round in 0..rounds {
        let to = targets.join(format!("round{round}"));
        let to = to.to_str().unwrap();
        let (ok, stdout, stderr) = cli(&["list", "--from", to, "--json"], &[]);
        assert!(ok, "{stderr}");
        let listed: Value = serde_json::from_str(&stdout).unwrap();
        for b in listed.as_array().unwrap() {
            assert_eq!(b["ok"], true, "{b}");
            let id = b["id"].as_str().unwrap();
            let (ok, _, stderr) = cli(&["verify", "--from", to, "--id", id], &[]);
            assert!(ok, "round {round}: {stderr}");
            let new = tmp.path().join(format!("restored{round}"));
            let (ok, _, stderr) = cli(
                &[
                    "restore",
                    "--from",
                    to,
                    "--id",
                    id,
                    "--data-dir",
                    new.to_str().unwrap(),
                ],
                &[],
            );
            assert!(ok, "round {round}: {stderr}");
            let r = Server::start(&new, &[]);
            assert_eq!(all_keys(&r), want, "round {round}: the restore is complete");
            restored += 1;
        }
    }
    eprintln!("{restored} of {rounds} killed backups had finished and restored whole");
    assert_eq!(restored, rounds - killed_before_manifest);
}

/// A collection with vectors, text and fields, as the restore test's source.
fn collection(s: &Server) {
    let r = s.req(
        "PUT",
        "/v2/collections/docs",
        &[],
        json!({"vectors": {"emb": {"dim": 8, "metric": "cosine"}},
               "text_fields": ["title"],
               "fields": {"kind": "keyword", "rank": "integer"}})
        .to_string()
        .as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let words = ["alpha", "beta", "gamma", "delta", "omega"];
    for chunk in (0..600u64).collect::<Vec<_>>().chunks(200) {
        let docs: Vec<Value> = chunk
            .iter()
            .map(|&i| {
                json!({"id": format!("d{i}"),
                       "text": {"title": format!("{} {} report {i}", words[(i % 5) as usize], words[(i / 5 % 5) as usize])},
                       "vectors": {"emb": common::vector8(i)},
                       "fields": {"kind": if i % 2 == 0 { "even" } else { "odd" }, "rank": i}})
            })
            .collect();
        let r = s.post(
            "/v2/collections/docs/documents",
            &json!({ "documents": docs }).to_string(),
        );
        assert!(r.status == 200 || r.status == 201, "{}", r.text());
    }
    // Some deletes and rewrites, so the restored state is not just the first writes.
    for i in (0..600).step_by(7) {
        let r = s.req(
            "DELETE",
            &format!("/v2/collections/docs/documents/d{i}"),
            &[],
            b"",
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

/// Every stored document, through the documents page route.
fn all_documents(s: &Server) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let q = if after.is_empty() {
            String::new()
        } else {
            format!("&after={after}")
        };
        let page = s
            .get(&format!(
                "/v2/collections/docs/documents?limit=1000&without_vectors=false{q}"
            ))
            .json();
        out.extend(page["documents"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(n) => after = n.to_owned(),
            None => return out,
        }
    }
}

/// The answers to a fixed set of vector, text and hybrid searches.
fn search_answers(s: &Server) -> Vec<Value> {
    let mut out = Vec::new();
    for i in [3u64, 50, 333] {
        let r = s.post(
            "/v2/collections/docs/search",
            &json!({"vector": common::vector8(i), "limit": 10}).to_string(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        out.push(r.json()["hits"].clone());
        let r = s.post(
            "/v2/collections/docs/search",
            &json!({"vector": common::vector8(i), "limit": 5, "filter": {"kind": "odd"}})
                .to_string(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        out.push(r.json()["hits"].clone());
    }
    for q in ["alpha report", "gamma delta", "omega"] {
        let r = s.post(
            "/v2/search/hybrid",
            &json!({"collection": "docs", "text_search": q, "limit": 10}).to_string(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        out.push(r.json()["hits"].clone());
        let r = s.post(
            "/v2/search/hybrid",
            &json!({"collection": "docs", "text_search": q,
                    "vector_similarity": {"embedding": common::vector8(7)},
                    "fusion_strategy": "rrf", "limit": 10})
            .to_string(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        out.push(r.json()["hits"].clone());
    }
    out
}

#[test]
fn a_restored_node_equals_the_source_keys_documents_and_search_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("backups");
    let s = Server::start_with_args(&tmp.path().join("data"), &[], &[&backup_dirs(&target)]);
    load(&s, "default", 3_000, 64);
    collection(&s);
    let b = backup(&s, target.to_str().unwrap());
    assert_eq!(b["state"], "done", "{b}");
    assert!(
        manifest(&target, b["id"].as_str().unwrap())["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"].as_str().unwrap().starts_with("search/")),
        "the collection's graph file goes along"
    );
    let keys = all_keys(&s);
    let docs = all_documents(&s);
    let answers = search_answers(&s);
    assert_eq!(docs.len(), 600 - 86);
    // Writes after the backup are not in it.
    let mut c = KeepAlive::open(s.port).unwrap();
    put(&mut c, 1, "after the backup", "default");
    drop(s);

    let new = tmp.path().join("restored");
    let (ok, _, stderr) = restore(target.to_str().unwrap(), new.to_str().unwrap());
    assert!(ok, "{stderr}");
    let r = Server::start(&new, &[]);
    assert_eq!(all_keys(&r), keys);
    assert_eq!(all_documents(&r), docs);
    assert_eq!(search_answers(&r), answers);
    // Restoring into a directory that is not empty is refused.
    let (ok, _, stderr) = restore(target.to_str().unwrap(), new.to_str().unwrap());
    assert!(!ok && stderr.contains("not empty"), "{stderr}");
}

#[test]
fn a_damaged_backup_file_is_named_by_verify_and_refused_by_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("backups");
    let s = Server::start_with_args(&tmp.path().join("data"), &[], &[&backup_dirs(&target)]);
    load(&s, "default", 20_000, 300);
    let b = backup(&s, target.to_str().unwrap());
    drop(s);
    let id = b["id"].as_str().unwrap();
    let to = target.to_str().unwrap();
    let (ok, _, stderr) = cli(&["verify", "--from", to], &[]);
    assert!(ok, "{stderr}");

    // Flip one byte in the middle of the biggest file's object (the values).
    let m = manifest(&target, id);
    let f = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|f| f["bytes"].as_u64().unwrap())
        .unwrap()
        .clone();
    let path = f["path"].as_str().unwrap();
    let object = format!("data/{}", f["hash"].as_str().unwrap());
    let obj = target.join(&object);
    let mut bytes = std::fs::read(&obj).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&obj, &bytes).unwrap();

    let (ok, _, stderr) = cli(&["verify", "--from", to, "--id", id], &[]);
    assert!(!ok, "verify passed a damaged backup");
    assert!(
        stderr.contains(&format!("damaged backup file {path} (object {object})")),
        "{stderr}"
    );
    let block = (at as u64 / (4 << 20)) * (4 << 20);
    assert!(stderr.contains(&format!("at byte {block}")), "{stderr}");
    let new = tmp.path().join("restored");
    let (ok, _, stderr) = restore(to, new.to_str().unwrap());
    assert!(!ok, "restore took a damaged backup");
    assert!(stderr.contains(path), "{stderr}");
    assert!(!new.exists(), "a refused restore leaves nothing behind");
    // Into an existing empty directory: left empty.
    std::fs::create_dir(&new).unwrap();
    let (ok, _, _) = restore(to, new.to_str().unwrap());
    assert!(!ok);
    assert_eq!(std::fs::read_dir(&new).unwrap().count(), 0);

    // A missing object and a damaged manifest are named too.
    bytes[at] ^= 0x40;
    std::fs::write(&obj, &bytes).unwrap();
    let (ok, _, stderr) = cli(&["verify", "--from", to], &[]);
    assert!(ok, "{stderr}");
    std::fs::rename(&obj, target.join("moved")).unwrap();
    let (ok, _, stderr) = cli(&["verify", "--from", to], &[]);
    assert!(
        !ok && stderr.contains(path) && stderr.contains("missing"),
        "{stderr}"
    );
    std::fs::rename(target.join("moved"), &obj).unwrap();
    let mpath = target.join("backups").join(id).join("manifest.json");
    let text = std::fs::read_to_string(&mpath).unwrap();
    std::fs::write(&mpath, text.replacen("\"seq\": ", "\"seq\": 1", 1)).unwrap();
    let (ok, _, stderr) = cli(&["verify", "--from", to], &[]);
    assert!(!ok && stderr.contains("manifest.json"), "{stderr}");
    let (ok, _, stderr) = restore(to, new.to_str().unwrap());
    assert!(!ok && stderr.contains("manifest.json"), "{stderr}");
}

#[test]
fn the_backup_api_refuses_targets_outside_backup_dirs_bad_input_and_a_second_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let allowed = tmp.path().join("allowed");
    // No backup_dirs: every target is refused.
    let s = Server::start(&tmp.path().join("d0"), &[]);
    let r = s.post(
        "/v1/backups",
        &json!({"to": allowed.to_str().unwrap()}).to_string(),
    );
    assert_eq!(
        (r.status, r.error_code()),
        (403, "backup_dir_not_allowed".into())
    );
    assert!(r.text().contains("backup-dirs"), "{}", r.text());
    drop(s);

    let s = Server::start_with_args(
        &tmp.path().join("d1"),
        &[("KYRODB_API_KEYS", "admin:adminadmin,write:writewrite")],
        &[&format!(
            "--backup-dirs={},s3://bkt/team",
            allowed.display()
        )],
    );
    let admin = [
        ("Authorization", "Bearer adminadmin"),
        ("Content-Type", "application/json"),
    ];
    let post = |to: Value, h: &[(&str, &str)]| {
        s.req(
            "POST",
            "/v1/backups",
            h,
            json!({ "to": to }).to_string().as_bytes(),
        )
    };
    let outside = tmp.path().join("elsewhere");
    for (to, status, code) in [
        (
            json!(outside.to_str().unwrap()),
            403,
            "backup_dir_not_allowed",
        ),
        (
            json!(format!("{}/../elsewhere", allowed.display())),
            400,
            "invalid_backup_target",
        ),
        (json!("relative/dir"), 400, "invalid_backup_target"),
        (json!("s3://bkt/teamx"), 403, "backup_dir_not_allowed"),
        (json!("s3://other/team"), 403, "backup_dir_not_allowed"),
        (json!("http://example.com/x"), 400, "invalid_backup_target"),
        (json!(""), 400, "invalid_backup_target"),
        (json!(17), 400, "invalid_request"),
    ] {
        let r = post(to.clone(), &admin);
        assert_eq!(
            (r.status, r.error_code()),
            (status, code.to_owned()),
            "{to}: {}",
            r.text()
        );
        assert!(
            r.text().contains("to"),
            "{to}: the message names the field: {}",
            r.text()
        );
    }
    let r = s.req("POST", "/v1/backups", &admin, br#"{"too": "/x"}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    // The write role may not back up.
    let r = post(
        json!(allowed.to_str().unwrap()),
        &[
            ("Authorization", "Bearer writewrite"),
            ("Content-Type", "application/json"),
        ],
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let r = s.req("GET", "/v1/backups/20250101T000000.000Z", &admin, b"");
    assert_eq!((r.status, r.error_code()), (404, "no_such_backup".into()));

    // One backup at a time: a second request while one runs is 409 (a bounded number of tries,
    // as a small backup may finish before the second request arrives).
    let mut c = KeepAlive::open(s.port).unwrap();
    let mut k = 0;
    while k < 60_000 {
        let items: Vec<Value> = (k..k + 2_000)
            .map(|i| json!({"key": i, "value": value("x", i, 400)}))
            .collect();
        let r = c
            .request(
                "POST",
                "/v1/kv/batch_put",
                &admin,
                json!({ "items": items }).to_string().as_bytes(),
            )
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        k += 2_000;
    }
    let mut conflicts = 0;
    for round in 0..10 {
        let to = allowed.join(format!("r{round}"));
        let body = json!({ "to": to }).to_string();
        let first = c
            .request("POST", "/v1/backups", &admin, body.as_bytes())
            .unwrap();
        assert_eq!(first.status, 202, "{}", first.text());
        let id = first.json()["id"].as_str().unwrap().to_owned();
        let second = c
            .request("POST", "/v1/backups", &admin, body.as_bytes())
            .unwrap();
        if second.status == 409 {
            assert_eq!(second.error_code(), "backup_in_progress");
            assert!(second.text().contains(&id), "{}", second.text());
            conflicts += 1;
        } else {
            assert_eq!(second.status, 202, "{}", second.text());
        }
        // Wait for what this round started to end before the next round.
        let mut ids = vec![id];
        if second.status == 202 {
            ids.push(second.json()["id"].as_str().unwrap().to_owned());
        }
        for id in ids {
            let deadline = Instant::now() + BACKUP_DEADLINE;
            loop {
                let st = c
                    .request("GET", &format!("/v1/backups/{id}"), &admin, b"")
                    .unwrap()
                    .json();
                if st["state"] == "done" {
                    break;
                }
                assert_ne!(st["state"], "failed", "{st}");
                assert!(Instant::now() < deadline, "{st}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if conflicts >= 2 {
            break;
        }
    }
    assert!(conflicts >= 1, "never saw 409 backup_in_progress");
    // Backups are admin actions: in the audit log, started and refused.
    let log = c
        .request("GET", "/v1/audit?limit=1000", &admin, b"")
        .unwrap()
        .json();
    let entries = log["entries"].as_array().unwrap();
    for outcome in ["ok", "denied"] {
        assert!(
            entries
                .iter()
                .any(|e| e["route"] == "/v1/backups" && e["outcome"] == outcome),
            "{outcome}: {log}"
        );
    }
    let st = c
        .request("GET", &format!("/v1/backups/{}", "x"), &admin, b"")
        .unwrap();
    assert_eq!(st.status, 404);
}

/// The S3-compatible server the tests run: s3s-fs over a temp directory on a loopback port.
struct S3Server {
    child: std::process::Child,
    port: u16,
    _root: PathBuf,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const S3_KEY: &str = "kyrodbtestkey";
const S3_SECRET: &str = "kyrodbtestsecret0123456789";

fn s3_server(root: &Path) -> S3Server {
    let bin = common::script_stdout("s3-server", &[], "scripts/s3-server (s3s-fs install)");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let port = common::free_port();
        let mut child = std::process::Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", S3_KEY, "--secret-key", S3_SECRET])
            .arg(root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Up when it accepts connections, or gone (the port was taken meanwhile: try another).
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return S3Server {
                    child,
                    port,
                    _root: root.to_owned(),
                };
            }
            assert!(Instant::now() < deadline, "s3s-fs did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.wait();
    }
}

#[test]
fn backups_to_an_s3_compatible_server_list_verify_and_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("s3");
    // s3s-fs keeps a bucket as a directory under its root.
    std::fs::create_dir_all(root.join("kyrodb-backups")).unwrap();
    let s3 = s3_server(&root);
    let endpoint = format!("http://127.0.0.1:{}", s3.port);
    let env = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", S3_KEY),
        ("AWS_SECRET_ACCESS_KEY", S3_SECRET),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ALLOW_HTTP", "true"),
    ];
    let url = "s3://kyrodb-backups/nightly";
    let s = Server::start_with_args(
        &tmp.path().join("data"),
        &env,
        &["--backup-dirs=s3://kyrodb-backups"],
    );
    load(&s, "default", 10_000, 200);
    // A file above the single-PUT size goes up as a multipart upload.
    load(&s, "big", 40_000, 600);
    collection(&s);
    let first = backup(&s, url);
    assert_eq!(first["state"], "done", "{first}");
    assert_eq!(first["files_sent"], first["files_total"]);
    let second = backup(&s, url);
    assert_eq!(second["state"], "done", "{second}");
    assert!(
        second["files_skipped"].as_u64().unwrap() >= first["files_total"].as_u64().unwrap() - 2,
        "unchanged files are not sent again: {second}"
    );
    let keys = all_keys(&s);
    let docs = all_documents(&s);
    let answers = search_answers(&s);
    drop(s);

    let (ok, stdout, stderr) = cli(&["list", "--from", url, "--json"], &env);
    assert!(ok, "{stderr}");
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let (ok, stdout, stderr) = cli(&["verify", "--from", url], &env);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(second["id"].as_str().unwrap()), "{stdout}");
    let new = tmp.path().join("restored");
    let (ok, _, stderr) = cli(
        &[
            "restore",
            "--from",
            url,
            "--data-dir",
            new.to_str().unwrap(),
        ],
        &env,
    );
    assert!(ok, "{stderr}");
    let r = Server::start(&new, &[]);
    assert_eq!(all_keys(&r), keys);
    assert_eq!(all_documents(&r), docs);
    assert_eq!(search_answers(&r), answers);
    drop(r);

    // A damaged object in the bucket is named by verify and refused by restore.
    let m = root
        .join("kyrodb-backups/nightly/backups")
        .join(second["id"].as_str().unwrap())
        .join("manifest.json");
    let m: Value = serde_json::from_slice(&std::fs::read(m).unwrap()).unwrap();
    let f = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"].as_str().unwrap().ends_with(".data"))
        .unwrap();
    let obj = root
        .join("kyrodb-backups/nightly/data")
        .join(f["hash"].as_str().unwrap());
    let mut bytes = std::fs::read(&obj).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&obj, &bytes).unwrap();
    let (ok, _, stderr) = cli(&["verify", "--from", url], &env);
    assert!(
        !ok && stderr.contains(f["path"].as_str().unwrap()),
        "{stderr}"
    );
    let new2 = tmp.path().join("restored2");
    let (ok, _, stderr) = cli(
        &[
            "restore",
            "--from",
            url,
            "--data-dir",
            new2.to_str().unwrap(),
        ],
        &env,
    );
    assert!(!ok && stderr.contains("damaged backup file"), "{stderr}");
    assert!(!new2.exists());
}

/// The README's "Backups" commands, run verbatim with bash from an empty directory (only the port
/// differs from a user's: `KYRODB_PORT` and `KYRODB_URL` name a free one).
#[test]
fn the_readme_backup_commands_run_verbatim() {
    let readme = std::fs::read_to_string(common::repo_root().join("README.md")).unwrap();
    let section = readme.split("## Backups\n").nth(1).unwrap();
    let block = section
        .split("```sh\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let bin_dir = Path::new(common::bin()).parent().unwrap().to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let bash = |line: &str| {
        let mut c = std::process::Command::new("bash");
        c.arg("-c").arg(line).current_dir(tmp.path());
        for k in common::SERVE_ENV {
            c.env_remove(k);
        }
        c.env("PATH", &path)
            .env("KYRODB_PORT", port.to_string())
            .env("KYRODB_URL", &url)
            .env("KYRODB_DISABLE_HTTP_LOG", "1")
            .env_remove("KYRODB_TOKEN");
        c
    };
    let mut background = Vec::new();
    for line in block.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(cmd) = line.strip_suffix('&') {
            let child = bash(&format!("exec {cmd}"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            background.push(child);
            let deadline = Instant::now() + Duration::from_secs(20);
            while common::try_request(port, "GET", "/health", &[], b"").is_err() {
                assert!(
                    Instant::now() < deadline,
                    "{line}: the server did not start"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            continue;
        }
        let out = bash(line).output().unwrap();
        assert!(
            out.status.success(),
            "{line}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for mut c in background {
        let _ = c.kill();
        let _ = c.wait();
    }
    let r = Server::start(&tmp.path().join("restored"), &[]);
    assert_eq!(r.get("/v1/kv/1").text(), "hello");
}

/// A backup of a cluster node (here a one-node cluster) restores as a standalone node with every
/// key and sequence number; the Raft apply marker is dropped, so it is not mistaken for a member.
#[test]
fn a_cluster_nodes_backup_restores_as_a_standalone_node() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("backups");
    let members = format!("1=127.0.0.1:{}", common::raft_port());
    let secret = "backup-test-cluster-secret";
    let n = Server::start_with_args(
        &tmp.path().join("n1"),
        &[("KYRODB_CLUSTER_SECRET", secret)],
        &[
            "--node-id",
            "1",
            "--cluster",
            &members,
            &backup_dirs(&target),
        ],
    );
    assert_eq!(n.post("/v1/cluster/init", "").status, 200);
    let mut c = KeepAlive::open(n.port).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.request("PUT", "/v1/kv/0", &[], b"v0").unwrap().status != 200 {
        assert!(Instant::now() < deadline, "the node never took a write");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut seqs = BTreeMap::new();
    for k in 1..200u64 {
        seqs.insert(k, put(&mut c, k, &format!("v{k}"), "default"));
    }
    let b = backup(&n, target.to_str().unwrap());
    assert_eq!(b["state"], "done", "{b}");
    drop(n);
    let new = tmp.path().join("restored");
    let (ok, _, stderr) = restore(target.to_str().unwrap(), new.to_str().unwrap());
    assert!(ok, "{stderr}");
    let r = Server::start(&new, &[]);
    for (k, seq) in seqs {
        let got = r.get(&format!("/v1/kv/{k}"));
        assert_eq!(got.text(), format!("v{k}"));
        assert_eq!(got.header("x-kyrodb-seq"), Some(seq.to_string().as_str()));
    }
    let st = r.get("/v1/cluster/status");
    assert_eq!(
        (st.status, st.error_code()),
        (404, "not_clustered".into()),
        "a standalone node"
    );
    // Its next write follows the backup's sequence numbers.
    let w = r.req("PUT", "/v1/kv/5000", &[], b"new");
    assert!(w.json()["offset"].as_u64().unwrap() > b["seq"].as_u64().unwrap());
}

/// A restored backup seeds a new cluster: a node started on it alone, `cluster init`, then a new
/// node joins and receives the seed's files (every key with its sequence number, the documents
/// and the same search answers). A restored node refuses to be joined to another cluster, and
/// refuses to seed one with other voters listed.
#[test]
fn a_restored_backup_seeds_a_new_cluster_that_a_new_node_joins() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("backups");
    let s = Server::start_with_args(&tmp.path().join("src"), &[], &[&backup_dirs(&target)]);
    load(&s, "default", 2_000, 64);
    collection(&s);
    let b = backup(&s, target.to_str().unwrap());
    assert_eq!(b["state"], "done", "{b}");
    let keys = all_keys(&s);
    let docs = all_documents(&s);
    let answers = search_answers(&s);
    let seqs: Vec<(u64, String)> = (0..2_000)
        .step_by(97)
        .map(|k| {
            let r = s.get(&format!("/v1/kv/{k}"));
            (k, r.header("x-kyrodb-seq").unwrap().to_owned())
        })
        .collect();
    drop(s);
    let restore = |name: &str| {
        let dir = tmp.path().join(name);
        let (ok, _, stderr) = restore(target.to_str().unwrap(), dir.to_str().unwrap());
        assert!(ok, "{stderr}");
        dir
    };
    let secret = "backup-seed-cluster-secret";
    let env = [("KYRODB_CLUSTER_SECRET", secret)];
    let (rp1, rp2) = (common::raft_port(), common::raft_port());

    // With another voter listed, a restored node refuses to seed: refused as configured, nothing
    // changed (409 cluster_change_refused, not the 503 of a change that may have happened).
    let both = format!("1=127.0.0.1:{rp1},2=127.0.0.1:{rp2}");
    let n = Server::start_with_args(
        &restore("two"),
        &env,
        &["--node-id", "1", "--cluster", &both],
    );
    let r = n.post("/v1/cluster/init", "");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (409, "cluster_change_refused"),
        "{}",
        r.text()
    );
    assert!(r.text().contains("restored backup"), "{}", r.text());
    drop(n);

    let seed = Server::start_with_args(
        &restore("seed"),
        &env,
        &["--node-id", "1", "--cluster", &format!("1=127.0.0.1:{rp1}")],
    );
    // Before it seeds, it takes no Raft traffic from other nodes (it would diverge).
    let r = common::try_request(
        rp1,
        "POST",
        "/raft/append",
        &[("x-kyrodb-cluster-secret", secret)],
        b"x",
    )
    .unwrap();
    assert_eq!(r.status, 409, "{}", r.text());
    let r = seed.post("/v1/cluster/init", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let deadline = Instant::now() + Duration::from_secs(30);
    while seed.req("PUT", "/v1/kv/900000", &[], b"after").status != 200 {
        assert!(Instant::now() < deadline, "the seed never took a write");
        std::thread::sleep(Duration::from_millis(20));
    }
    let joiner = Server::start_with_args(
        &tmp.path().join("joiner"),
        &env,
        &["--node-id", "2", "--cluster", &format!("2=127.0.0.1:{rp2}")],
    );
    let r = seed.post(
        "/v1/cluster/nodes",
        &json!({"node_id": 2, "raft_addr": format!("127.0.0.1:{rp2}")}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // The joiner restarts in place to install the seed's files; wait until it applied the commit.
    let commit = seed.get("/v1/cluster/status").json()["commit_index"]
        .as_u64()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = common::try_request(joiner.port, "GET", "/v1/cluster/status", &[], b"");
        if let Ok(st) = st {
            if st.status == 200 && st.json()["applied_index"].as_u64().unwrap_or(0) >= commit {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the joiner did not catch up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut want = keys.clone();
    want.insert(("default".into(), 900_000), "after".into());
    assert_eq!(all_keys(&joiner), want);
    for (k, seq) in &seqs {
        let r = joiner.get(&format!("/v1/kv/{k}?consistency=stale"));
        assert_eq!(r.header("x-kyrodb-seq"), Some(seq.as_str()), "key {k}");
    }
    assert_eq!(all_documents(&joiner), docs);
    assert_eq!(search_answers(&joiner), answers);
    // Writes through the joiner reach the seed.
    let r = joiner.req("PUT", "/v1/kv/900001", &[], b"via the joiner");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(seed.get("/v1/kv/900001").text(), "via the joiner");
}
