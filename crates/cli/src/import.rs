//! `kyrodb import FILE`: JSONL (`{"key": 1, "value": "..."}` per line) or CSV (`key,value` per line,
//! optional header, value optionally in double quotes with `""` escapes, one line per record) into a
//! running server, in atomic batches over `/v1/kv/batch_put`, with a progress bar and a summary.

use std::{
    fs::File,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    time::Instant,
};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;

use crate::client::{Conn, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Jsonl,
    Csv,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The file to import.
    pub file: PathBuf,
    /// File format [default: from the extension: .csv is CSV, anything else JSONL]
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Records per batch_put request.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
}

/// Bad lines reported by line number at most this many times.
const BAD_LINES_SHOWN_MAX: usize = 10;

#[derive(Deserialize)]
struct JsonRecord {
    key: u64,
    value: serde_json::Value,
}

/// One line into (key, value), or why not.
pub fn parse_line(
    format: Format,
    line: &str,
    line_no: u64,
) -> Result<Option<(u64, String)>, String> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    match format {
        Format::Jsonl => {
            let r: JsonRecord = serde_json::from_str(line).map_err(|e| e.to_string())?;
            let value = match r.value {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            Ok(Some((r.key, value)))
        }
        Format::Csv => {
            let (k, v) = line.split_once(',').ok_or("expected key,value")?;
            let k = k.trim();
            let key = match k.parse::<u64>() {
                Ok(key) => key,
                Err(_) if line_no == 1 => return Ok(None), // a header row
                Err(_) => return Err(format!("key {k:?} is not an unsigned 64-bit integer")),
            };
            let v = v.strip_suffix('\r').unwrap_or(v);
            let value = match v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                Some(inner) => inner.replace("\"\"", "\""),
                None => v.to_owned(),
            };
            Ok(Some((key, value)))
        }
    }
}

fn format_of(path: &Path, explicit: Option<Format>) -> Format {
    explicit.unwrap_or_else(|| match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("csv") => Format::Csv,
        _ => Format::Jsonl,
    })
}

struct Summary {
    lines: u64,
    imported: u64,
    bad_lines: u64,
    batches: u64,
}

/// Imports the file; returns an error when anything was skipped or refused.
pub async fn run(target: &Target, token: Option<&str>, args: &ImportArgs) -> Result<(), String> {
    let format = format_of(&args.file, args.format);
    let file = File::open(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = ProgressBar::new(total_bytes);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut conn = Conn::connect(&target.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", target.addr))?;
    let mut reader = BufReader::new(file);
    let started = Instant::now();
    let mut s = Summary {
        lines: 0,
        imported: 0,
        bad_lines: 0,
        batches: 0,
    };
    let mut batch: Vec<(u64, String)> = Vec::with_capacity(args.batch);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| format!("{}: line {}: {e}", args.file.display(), s.lines + 1))?;
        if n == 0 {
            break;
        }
        s.lines += 1;
        bar.inc(n as u64);
        match parse_line(format, line.trim_end_matches('\n'), s.lines) {
            Ok(Some(kv)) => batch.push(kv),
            Ok(None) => {}
            Err(e) => {
                s.bad_lines += 1;
                if s.bad_lines as usize <= BAD_LINES_SHOWN_MAX {
                    bar.suspend(|| eprintln!("line {}: {e} (skipped)", s.lines));
                }
            }
        }
        if batch.len() >= args.batch.max(1) {
            send(&mut conn, target, token, &mut batch, &mut s).await?;
            bar.set_message(format!("{} records", s.imported));
        }
    }
    if !batch.is_empty() {
        send(&mut conn, target, token, &mut batch, &mut s).await?;
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "imported {} records from {} lines in {} batches in {secs:.2}s ({:.0} records/s); {} bad lines skipped",
        s.imported,
        s.lines,
        s.batches,
        s.imported as f64 / secs.max(1e-9),
        s.bad_lines
    );
    if s.bad_lines > 0 {
        return Err(format!("{} bad lines were skipped", s.bad_lines));
    }
    Ok(())
}

async fn send(
    conn: &mut Conn,
    target: &Target,
    token: Option<&str>,
    batch: &mut Vec<(u64, String)>,
    s: &mut Summary,
) -> Result<(), String> {
    let items: Vec<serde_json::Value> = batch
        .iter()
        .map(|(k, v)| serde_json::json!({"key": k, "value": v}))
        .collect();
    let body =
        serde_json::to_vec(&serde_json::json!({ "items": items })).map_err(|e| e.to_string())?;
    let resp = conn
        .request(
            target,
            "POST",
            "/v1/kv/batch_put",
            token,
            Some("application/json"),
            &body,
        )
        .await
        .map_err(|e| format!("batch_put: {e}"))?;
    if resp.status != 200 {
        return Err(format!(
            "batch ending at line {} refused, nothing of it written (HTTP {}): {}",
            s.lines,
            resp.status,
            String::from_utf8_lossy(&resp.body)
        ));
    }
    s.imported += batch.len() as u64;
    s.batches += 1;
    batch.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_and_csv_lines_parse() {
        assert_eq!(
            parse_line(Format::Jsonl, r#"{"key": 5, "value": "x"}"#, 1).unwrap(),
            Some((5, "x".into()))
        );
        assert_eq!(
            parse_line(Format::Jsonl, r#"{"key": 5, "value": {"a":1}}"#, 1).unwrap(),
            Some((5, r#"{"a":1}"#.into()))
        );
        assert!(parse_line(Format::Jsonl, r#"{"key": -5, "value": "x"}"#, 1).is_err());
        assert_eq!(parse_line(Format::Csv, "key,value", 1).unwrap(), None);
        assert_eq!(
            parse_line(Format::Csv, "7,a,b\r", 2).unwrap(),
            Some((7, "a,b".into()))
        );
        assert_eq!(
            parse_line(Format::Csv, r#"7,"say ""hi""""#, 2).unwrap(),
            Some((7, r#"say "hi""#.into()))
        );
        assert!(parse_line(Format::Csv, "x,1", 2).is_err());
        assert_eq!(parse_line(Format::Csv, "", 2).unwrap(), None);
    }
}
