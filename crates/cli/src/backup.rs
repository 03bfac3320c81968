//! `kyrodb backup create|list|verify|restore`. `create` asks a running server (`POST /v1/backups`)
//! and follows it; the others read the target directly (a directory, or `s3://bucket/prefix` with
//! the AWS_* variables), no server needed.

use std::{path::PathBuf, time::Duration};

use clap::Subcommand;
use serde_json::{json, Value};

use crate::v2::Api;

#[derive(Debug, Subcommand)]
pub(crate) enum BackupCmd {
    /// Ask the server at --url to back itself up into TARGET (a directory on the server's machine
    /// or s3://bucket/prefix, inside the server's --backup-dirs); prints progress on stderr and
    /// the finished backup's status (id, seq, files, bytes) as JSON on stdout.
    Create {
        /// Where the backup goes.
        #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
        to: String,
    },
    /// List the backups in a target: id, sequence number, files, bytes, whether the manifest
    /// checks out.
    List {
        /// The target to read.
        #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
        from: String,
        /// Print JSON (one object per backup, in an array).
        #[arg(long)]
        json: bool,
    },
    /// Re-read every file of a backup and check every checksum; exits 1 naming the first damaged
    /// file.
    Verify {
        /// The target to read.
        #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
        from: String,
        /// The backup [default: the newest]
        #[arg(long)]
        id: Option<String>,
    },
    /// Restore a backup into a new data directory (it must not exist or be empty); every file
    /// is checked first and a damaged backup is refused, leaving nothing behind. Then start a
    /// node on it (`kyrodb serve --data-dir NEW`), or seed a new cluster with it: start it with
    /// `--node-id 1 --cluster 1=ADDR` listing only itself, `kyrodb cluster init`, then join
    /// nodes started on empty data directories.
    Restore {
        /// The target to read.
        #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
        from: String,
        /// The backup [default: the newest]
        #[arg(long)]
        id: Option<String>,
        /// The new data directory.
        #[arg(long, value_name = "NEW")]
        data_dir: PathBuf,
    },
}

impl BackupCmd {
    /// Whether the command talks to a server (the others must run outside an async runtime: the
    /// S3 client has its own).
    pub(crate) fn needs_server(&self) -> bool {
        matches!(self, BackupCmd::Create { .. })
    }
}

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

/// `create`: POST, then poll the status until it is done or failed.
pub(crate) async fn create(api: &Api, to: &str) -> Result<(), String> {
    let (_, v) = api
        .call("POST", "/v1/backups", Some(&json!({ "to": to })))
        .await?;
    let id = v["id"]
        .as_str()
        .ok_or_else(|| format!("the server's answer has no id: {v}"))?
        .to_owned();
    eprintln!(
        "backup {id} started into {}",
        v["to"].as_str().unwrap_or(to)
    );
    let mut last_line = String::new();
    let mut last_print = std::time::Instant::now();
    let path = format!("/v1/backups/{id}");
    loop {
        let (_, st) = api.call("GET", &path, None).await?;
        let state = st["state"].as_str().unwrap_or("?");
        let n = |k: &str| st[k].as_u64().unwrap_or(0);
        match state {
            "done" => {
                eprintln!(
                    "backup {id} done: seq {}, {} files ({} sent, {} already in the target), {} ({} sent)",
                    n("seq"),
                    n("files_total"),
                    n("files_sent"),
                    n("files_skipped"),
                    mb(n("bytes_total")),
                    mb(n("bytes_sent"))
                );
                println!("{st}");
                return Ok(());
            }
            "failed" => {
                return Err(format!(
                    "backup {id} failed: {} {}",
                    st["error"]["code"].as_str().unwrap_or("error"),
                    st["error"]["message"].as_str().unwrap_or("")
                ))
            }
            _ => {
                let line = format!(
                    "backup {id}: {state} {}/{} files, {}/{}",
                    n("files_done"),
                    n("files_total"),
                    mb(n("bytes_done")),
                    mb(n("bytes_total"))
                );
                if line != last_line && last_print.elapsed() >= Duration::from_secs(1) {
                    eprintln!("{line}");
                    last_line = line;
                    last_print = std::time::Instant::now();
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `list`, `verify`, `restore`: no server, no async runtime.
pub(crate) fn local(cmd: BackupCmd) -> Result<(), String> {
    let open = |s: &str| kyrodb_backup::open_target(s).map_err(|e| e.to_string());
    match cmd {
        BackupCmd::Create { .. } => unreachable!("create asks the server"),
        BackupCmd::List { from, json } => {
            let t = open(&from)?;
            let all = kyrodb_backup::list(t.as_ref()).map_err(|e| e.to_string())?;
            if json {
                let v: Vec<Value> = all
                    .iter()
                    .map(|l| match &l.manifest {
                        Ok(m) => json!({
                            "id": l.id, "ok": true, "seq": m.seq, "created_ms": m.created_ms,
                            "files": m.files.len(), "bytes": m.bytes(),
                            "kyrodb_version": m.kyrodb_version,
                        }),
                        Err(e) => json!({"id": l.id, "ok": false, "error": e}),
                    })
                    .collect();
                println!("{}", Value::Array(v));
                return Ok(());
            }
            if all.is_empty() {
                println!("no backups in {}", t.location());
            }
            for l in &all {
                match &l.manifest {
                    Ok(m) => println!(
                        "{}  seq {}  {} files  {}",
                        l.id,
                        m.seq,
                        m.files.len(),
                        mb(m.bytes())
                    ),
                    Err(e) => println!("{}  DAMAGED MANIFEST: {e}", l.id),
                }
            }
            Ok(())
        }
        BackupCmd::Verify { from, id } => {
            let t = open(&from)?;
            let v = kyrodb_backup::verify(t.as_ref(), id.as_deref(), &|_| {})
                .map_err(|e| e.to_string())?;
            println!(
                "backup {} verified: seq {}, {} files, {}",
                v.manifest.id,
                v.manifest.seq,
                v.files,
                mb(v.bytes)
            );
            Ok(())
        }
        BackupCmd::Restore { from, id, data_dir } => {
            let t = open(&from)?;
            let m = kyrodb_backup::restore(t.as_ref(), id.as_deref(), &data_dir, &|_| {})
                .map_err(|e| e.to_string())?;
            println!(
                "restored backup {} (seq {}, {} files, {}) into {}",
                m.id,
                m.seq,
                m.files.len(),
                mb(m.bytes()),
                data_dir.display()
            );
            Ok(())
        }
    }
}
