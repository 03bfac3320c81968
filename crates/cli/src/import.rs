//! `kyrodb import FILE`: JSONL (`{"key": 1, "value": "..."}` or `{"key": 1, "value_b64": "..."}` per
//! line) or CSV (`key,value` per line, optional header, value optionally in double quotes with `""`
//! escapes, one line per record) into a running server, in atomic batches over `/v1/kv/batch_put`,
//! with a progress bar and a summary.
//!
//! Batches are bounded by records and by the bytes of the JSON body sent, under the limits the server
//! reports in `/build_info`. A bad record is reported as `line N: reason` and skipped without costing
//! the good records around it: most are caught here (key, base64, value size); one the server still
//! refuses is found by the `items[i]` its error names (or by halving the batch) and the rest resent.

use std::{
    collections::VecDeque,
    fs::File,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::client::{Conn, Response, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Jsonl,
    Csv,
}

#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// The file to import.
    pub file: PathBuf,
    /// File format [default: from the extension: .csv is CSV, anything else JSONL]
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Most records per batch_put request (the server's batch_keys_max lowers it).
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Most bytes of JSON per batch_put request [default and ceiling: 15/16 of the server's
    /// body_bytes_max, from /build_info]
    #[arg(long)]
    pub batch_bytes: Option<usize>,
}

/// Messages about single lines shown at most this many times (the summary counts them all).
const LINE_MESSAGES_SHOWN_MAX: u64 = 100;
/// `{"items":[` and `]}` around the items of a batch_put body.
const ENVELOPE_BYTES: usize = 12;
/// A 429 or 503 (busy) is retried this many times, after the server's `Retry-After`.
const RETRIES_MAX: u32 = 5;
/// Longest wait for one `Retry-After`.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(10);

/// The server's limits that shape batches: `/build_info`'s `limits`, or the defaults of a server that
/// does not report them.
#[derive(Debug, Clone, Copy, Deserialize)]
pub(crate) struct ServerLimits {
    pub body_bytes_max: usize,
    pub value_bytes_max: usize,
    pub batch_keys_max: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            body_bytes_max: 8 << 20,
            value_bytes_max: 1 << 20,
            batch_keys_max: 10_000,
        }
    }
}

/// A record's value as the file gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecordValue {
    Text(String),
    /// Standard base64, already checked; `len` is the decoded length.
    Base64 {
        b64: String,
        len: usize,
    },
}

impl RecordValue {
    fn len(&self) -> usize {
        match self {
            Self::Text(s) => s.len(),
            Self::Base64 { len, .. } => *len,
        }
    }
}

/// One batch_put item as sent.
#[derive(Serialize)]
struct WireItem<'a> {
    key: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_b64: Option<&'a str>,
}

#[derive(Deserialize)]
struct JsonRecord {
    key: serde_json::Value,
    #[serde(default)]
    value: Option<serde_json::Value>,
    #[serde(default)]
    value_b64: Option<serde_json::Value>,
}

/// One line into (key, value), `None` for a blank line or a CSV header, or why the line is bad.
pub(crate) fn parse_line(
    format: Format,
    line: &str,
    line_no: u64,
) -> Result<Option<(u64, RecordValue)>, String> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    match format {
        Format::Jsonl => {
            let r: JsonRecord =
                serde_json::from_str(line).map_err(|e| format!("not a JSON record: {e}"))?;
            let key = r
                .key
                .as_u64()
                .ok_or_else(|| format!("key {} is not an unsigned 64-bit integer", r.key))?;
            let value = match (r.value, r.value_b64) {
                (Some(serde_json::Value::String(s)), None) => RecordValue::Text(s),
                (Some(other), None) => RecordValue::Text(other.to_string()),
                (None, Some(serde_json::Value::String(b64))) => {
                    let len = BASE64
                        .decode(&b64)
                        .map_err(|e| format!("value_b64 is not standard base64: {e}"))?
                        .len();
                    RecordValue::Base64 { b64, len }
                }
                (None, Some(_)) => return Err("value_b64 is not a string".into()),
                _ => return Err("expected exactly one of value and value_b64".into()),
            };
            Ok(Some((key, value)))
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
            Ok(Some((key, RecordValue::Text(value))))
        }
    }
}

/// The record as one batch_put item, checked against the server's limits.
fn encode(key: u64, value: &RecordValue, limits: &ServerLimits) -> Result<Vec<u8>, String> {
    if value.len() > limits.value_bytes_max {
        return Err(format!(
            "value of {} bytes is larger than the server's value_bytes_max ({})",
            value.len(),
            limits.value_bytes_max
        ));
    }
    let (text, b64) = match value {
        RecordValue::Text(s) => (Some(s.as_str()), None),
        RecordValue::Base64 { b64, .. } => (None, Some(b64.as_str())),
    };
    let json = serde_json::to_vec(&WireItem {
        key,
        value: text,
        value_b64: b64,
    })
    .map_err(|e| e.to_string())?;
    if ENVELOPE_BYTES + json.len() > limits.body_bytes_max {
        return Err(format!(
            "the record encodes to {} bytes of JSON, more than the server's body_bytes_max ({})",
            json.len(),
            limits.body_bytes_max
        ));
    }
    Ok(json)
}

fn format_of(path: &Path, explicit: Option<Format>) -> Format {
    explicit.unwrap_or_else(|| match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("csv") => Format::Csv,
        _ => Format::Jsonl,
    })
}

/// A record waiting in a batch: its line number and its encoded item.
struct Item {
    line: u64,
    json: Vec<u8>,
}

/// The body of a batch_put of `items`.
fn body_of(items: &[Item]) -> Vec<u8> {
    let mut body = Vec::with_capacity(batch_body_bytes(items));
    body.extend_from_slice(b"{\"items\":[");
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&it.json);
    }
    body.extend_from_slice(b"]}");
    body
}

fn batch_body_bytes(items: &[Item]) -> usize {
    ENVELOPE_BYTES
        + items.iter().map(|i| i.json.len()).sum::<usize>()
        + items.len().saturating_sub(1)
}

/// The index `i` of an error message that starts `items[i]: ` (batch_put's form for a bad item).
pub(crate) fn failed_item(message: &str) -> Option<usize> {
    let rest = message.strip_prefix("items[")?;
    let (index, _) = rest.split_once("]:")?;
    index.parse().ok()
}

/// The server's `{"error":{"message"}}`, or the body as text.
fn error_message(resp: &Response) -> String {
    serde_json::from_slice::<serde_json::Value>(&resp.body)
        .ok()
        .and_then(|j| j["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&resp.body).trim().to_owned())
}

fn lines_of(items: &[Item]) -> String {
    match (items.first(), items.last()) {
        (Some(a), Some(b)) if a.line != b.line => format!("lines {}..={}", a.line, b.line),
        (Some(a), _) => format!("line {}", a.line),
        _ => "no lines".into(),
    }
}

/// Counts and the connection of one import.
struct Importer<'a> {
    target: &'a Target,
    token: Option<&'a str>,
    conn: Option<Conn>,
    bar: ProgressBar,
    lines: u64,
    imported: u64,
    skipped: u64,
    failed: u64,
    requests: u64,
    messages: u64,
}

impl Importer<'_> {
    /// Prints one message about some lines, above the progress bar, up to the cap.
    fn report(&mut self, msg: String) {
        self.messages += 1;
        if self.messages <= LINE_MESSAGES_SHOWN_MAX {
            self.bar.suspend(|| eprintln!("{msg}"));
        } else if self.messages == LINE_MESSAGES_SHOWN_MAX + 1 {
            self.bar
                .suspend(|| eprintln!("(further messages about lines are not shown)"));
        }
    }

    fn skip(&mut self, line: u64, reason: &str) {
        self.skipped += 1;
        self.report(format!("line {line}: {reason} (skipped)"));
    }

    /// One batch_put, reconnecting if the last one broke the connection, retrying 429 and 503 after
    /// their `Retry-After`.
    async fn post(&mut self, body: &[u8]) -> Result<Response, String> {
        let mut attempt = 0;
        loop {
            let conn = match self.conn.as_mut() {
                Some(c) => c,
                None => self.conn.insert(
                    Conn::connect(&self.target.addr)
                        .await
                        .map_err(|e| format!("connect {}: {e}", self.target.addr))?,
                ),
            };
            self.requests += 1;
            let resp = conn
                .request(
                    self.target,
                    "POST",
                    "/v1/kv/batch_put",
                    self.token,
                    Some("application/json"),
                    body,
                )
                .await;
            let resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    self.conn = None;
                    return Err(format!("batch_put: {e}"));
                }
            };
            let retry_after = resp
                .headers
                .iter()
                .find(|(n, _)| n == "retry-after")
                .and_then(|(_, v)| v.parse::<u64>().ok());
            match (resp.status, retry_after) {
                (429 | 503, Some(s)) if attempt < RETRIES_MAX => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_secs(s).min(RETRY_AFTER_MAX)).await;
                }
                _ => return Ok(resp),
            }
        }
    }

    /// Sends one batch. A 4xx that names a bad item skips that item and resends the rest; one that
    /// names none halves the batch until the bad record is alone. A network error or 5xx fails the
    /// lines it was sending. `Err` means the import cannot go on (no connection, auth, wrong URL).
    async fn send(&mut self, batch: Vec<Item>) -> Result<(), String> {
        let mut queue = VecDeque::from([batch]);
        while let Some(mut items) = queue.pop_front() {
            if items.is_empty() {
                continue;
            }
            let resp = match self.post(&body_of(&items)).await {
                Ok(r) => r,
                Err(e) => {
                    let lost: Vec<Item> = items
                        .into_iter()
                        .chain(queue.into_iter().flatten())
                        .collect();
                    self.failed += lost.len() as u64;
                    self.report(format!(
                        "{} failed, may or may not have been written: {e}",
                        lines_of(&lost)
                    ));
                    if self.conn.is_none() {
                        // Only a connection that cannot be made again stops the import.
                        if let Err(e2) = Conn::connect(&self.target.addr).await {
                            return Err(format!("connect {}: {e2}", self.target.addr));
                        }
                    }
                    return Ok(());
                }
            };
            let msg = error_message(&resp);
            match resp.status {
                200..=299 => {
                    self.imported += items.len() as u64;
                    self.bar.set_message(format!("{} records", self.imported));
                }
                400 | 413 | 422 => match failed_item(&msg).filter(|&i| i < items.len()) {
                    Some(i) => {
                        let bad = items.remove(i);
                        let reason = msg.split_once("]: ").map_or(msg.as_str(), |(_, r)| r);
                        self.skip(bad.line, &format!("refused by the server: {reason}"));
                        queue.push_front(items);
                    }
                    None if items.len() > 1 => {
                        let back = items.split_off(items.len() / 2);
                        queue.push_front(back);
                        queue.push_front(items);
                    }
                    None => {
                        let line = items[0].line;
                        self.skip(line, &format!("refused by the server: {msg}"));
                    }
                },
                status => {
                    let lost: Vec<Item> = items
                        .into_iter()
                        .chain(queue.into_iter().flatten())
                        .collect();
                    self.failed += lost.len() as u64;
                    let fatal = matches!(status, 401 | 403 | 404 | 405);
                    let verdict = if status >= 500 || status == 408 {
                        "may or may not have been written"
                    } else {
                        "not written"
                    };
                    let text = format!(
                        "{} failed with HTTP {status}, {verdict}: {msg}",
                        lines_of(&lost)
                    );
                    if fatal {
                        return Err(text);
                    }
                    self.report(text);
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// The limits `/build_info` reports; the defaults when the server is older and reports none.
async fn server_limits(target: &Target, token: Option<&str>) -> Result<ServerLimits, String> {
    let mut conn = Conn::connect(&target.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", target.addr))?;
    let resp = conn
        .request(target, "GET", "/build_info", token, None, b"")
        .await
        .map_err(|e| format!("GET /build_info: {e}"))?;
    if resp.status != 200 {
        return Err(format!(
            "GET /build_info: HTTP {}: {}",
            resp.status,
            error_message(&resp)
        ));
    }
    let info: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
    Ok(serde_json::from_value(info["limits"].clone()).unwrap_or_default())
}

/// Imports the file; returns an error when any line was skipped or failed.
pub(crate) async fn run(
    target: &Target,
    token: Option<&str>,
    args: &ImportArgs,
) -> Result<(), String> {
    let format = format_of(&args.file, args.format);
    let file = File::open(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let limits = server_limits(target, token).await?;
    let headroom = limits.body_bytes_max / 16;
    let bytes_max = args
        .batch_bytes
        .unwrap_or(usize::MAX)
        .min(limits.body_bytes_max - headroom);
    let records_max = args.batch.clamp(1, limits.batch_keys_max.max(1));

    let bar = ProgressBar::new(total_bytes);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut im = Importer {
        target,
        token,
        conn: None,
        bar,
        lines: 0,
        imported: 0,
        skipped: 0,
        failed: 0,
        requests: 0,
        messages: 0,
    };
    let mut reader = BufReader::new(file);
    let started = Instant::now();
    let mut batch: Vec<Item> = Vec::new();
    let mut batch_bytes = ENVELOPE_BYTES;
    let mut raw = Vec::new();
    let mut stopped = None;
    loop {
        raw.clear();
        let n = reader
            .read_until(b'\n', &mut raw)
            .map_err(|e| format!("{}: line {}: {e}", args.file.display(), im.lines + 1))?;
        if n == 0 {
            break;
        }
        im.lines += 1;
        im.bar.inc(n as u64);
        let line_no = im.lines;
        let parsed = std::str::from_utf8(&raw)
            .map_err(|e| format!("not UTF-8: {e}"))
            .and_then(|line| parse_line(format, line.trim_end_matches('\n'), line_no))
            .and_then(|r| r.map(|(k, v)| encode(k, &v, &limits)).transpose());
        let json = match parsed {
            Ok(Some(json)) => json,
            Ok(None) => continue,
            Err(e) => {
                im.skip(line_no, &e);
                continue;
            }
        };
        let sep = usize::from(!batch.is_empty());
        if !batch.is_empty()
            && (batch.len() >= records_max || batch_bytes + sep + json.len() > bytes_max)
        {
            if let Err(e) = im.send(std::mem::take(&mut batch)).await {
                stopped = Some(e);
                break;
            }
            batch_bytes = ENVELOPE_BYTES;
        }
        batch_bytes += usize::from(!batch.is_empty()) + json.len();
        batch.push(Item {
            line: line_no,
            json,
        });
    }
    if stopped.is_none() && !batch.is_empty() {
        if let Err(e) = im.send(batch).await {
            stopped = Some(e);
        }
    }
    im.bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "imported {} records from {} lines in {} request{} in {secs:.2}s ({:.0} records/s); {} lines skipped, {} failed",
        im.imported,
        im.lines,
        im.requests,
        if im.requests == 1 { "" } else { "s" },
        im.imported as f64 / secs.max(1e-9),
        im.skipped,
        im.failed,
    );
    if let Some(e) = stopped {
        return Err(format!(
            "stopped after line {}: {e}; {} lines skipped, {} failed",
            im.lines, im.skipped, im.failed
        ));
    }
    if im.skipped > 0 || im.failed > 0 {
        return Err(format!(
            "{} lines skipped, {} failed (see the messages above)",
            im.skipped, im.failed
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn text(s: &str) -> RecordValue {
        RecordValue::Text(s.into())
    }

    #[test]
    fn jsonl_and_csv_lines_parse() {
        assert_eq!(
            parse_line(Format::Jsonl, r#"{"key": 5, "value": "x"}"#, 1).unwrap(),
            Some((5, text("x")))
        );
        assert_eq!(
            parse_line(Format::Jsonl, r#"{"key": 5, "value": {"a":1}}"#, 1).unwrap(),
            Some((5, text(r#"{"a":1}"#)))
        );
        assert_eq!(
            parse_line(Format::Jsonl, r#"{"key": 5, "value_b64": "AP8="}"#, 1).unwrap(),
            Some((
                5,
                RecordValue::Base64 {
                    b64: "AP8=".into(),
                    len: 2
                }
            ))
        );
        for bad in [
            r#"{"key": -5, "value": "x"}"#,
            r#"{"key": "5", "value": "x"}"#,
            r#"{"key": 5}"#,
            r#"{"key": 5, "value": "x", "value_b64": "eA=="}"#,
            r#"{"key": 5, "value_b64": "not base64!"}"#,
            r#"{"value": "x"}"#,
            "not json",
        ] {
            assert!(parse_line(Format::Jsonl, bad, 1).is_err(), "{bad}");
        }
        assert_eq!(parse_line(Format::Csv, "key,value", 1).unwrap(), None);
        assert_eq!(
            parse_line(Format::Csv, "7,a,b\r", 2).unwrap(),
            Some((7, text("a,b")))
        );
        assert_eq!(
            parse_line(Format::Csv, r#"7,"say ""hi""""#, 2).unwrap(),
            Some((7, text(r#"say "hi""#)))
        );
        assert!(parse_line(Format::Csv, "x,1", 2).is_err());
        assert_eq!(parse_line(Format::Csv, "", 2).unwrap(), None);
    }

    #[test]
    fn records_encode_within_the_limits_and_bodies_measure_exactly() {
        let limits = ServerLimits {
            body_bytes_max: 1024,
            value_bytes_max: 100,
            batch_keys_max: 10,
        };
        let a = encode(1, &text("a\"b"), &limits).unwrap();
        assert_eq!(a, br#"{"key":1,"value":"a\"b"}"#);
        let b64 = RecordValue::Base64 {
            b64: "AP8=".into(),
            len: 2,
        };
        let b = encode(2, &b64, &limits).unwrap();
        assert_eq!(b, br#"{"key":2,"value_b64":"AP8="}"#);
        assert!(encode(3, &text(&"x".repeat(101)), &limits)
            .unwrap_err()
            .contains("value_bytes_max"));
        // Within value_bytes_max but over the body limit once escaped.
        let tight = ServerLimits {
            body_bytes_max: 200,
            ..limits
        };
        assert!(encode(3, &text(&"\u{1}".repeat(100)), &tight)
            .unwrap_err()
            .contains("body_bytes_max"));
        let items = [Item { line: 1, json: a }, Item { line: 2, json: b }];
        let body = body_of(&items);
        assert_eq!(body.len(), batch_body_bytes(&items));
        let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(j["items"][1]["value_b64"], "AP8=");
        assert_eq!(lines_of(&items), "lines 1..=2");
    }

    /// A stand-in server whose batch_put refuses what a real server cannot be made to refuse on
    /// purpose: key 13 by index (400 `items[i]`), key 7 with no index (413), key 99 with a 500.
    async fn fake_server(written: Arc<Mutex<Vec<u64>>>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let written = written.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let head_end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            if sock.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                                return;
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                        let len: usize = head
                            .split("content-length: ")
                            .nth(1)
                            .and_then(|r| r.split("\r\n").next()?.parse().ok())
                            .unwrap_or(0);
                        while buf.len() < head_end + len {
                            if sock.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                                return;
                            }
                        }
                        let body: Vec<u8> = buf.drain(..head_end + len).skip(head_end).collect();
                        let (status, answer) = if head.starts_with("get /build_info") {
                            (200, r#"{"version":"0"}"#.to_owned())
                        } else {
                            batch_put(&body, &written)
                        };
                        let resp = format!(
                            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
                            answer.len()
                        );
                        if sock.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    fn batch_put(body: &[u8], written: &Mutex<Vec<u64>>) -> (u16, String) {
        let j: serde_json::Value = serde_json::from_slice(body).unwrap();
        let keys: Vec<u64> = j["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["key"].as_u64().unwrap())
            .collect();
        let error = |m: &str| format!(r#"{{"error":{{"code":"x","message":"{m}"}}}}"#);
        if keys.contains(&99) {
            return (500, error("engine failed"));
        }
        if keys.contains(&7) {
            return (413, error("length limit exceeded"));
        }
        if let Some(i) = keys.iter().position(|&k| k == 13) {
            return (400, error(&format!("items[{i}]: not this one")));
        }
        written.lock().unwrap().extend(keys);
        (200, r#"{"offset":1}"#.to_owned())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn refused_items_are_dropped_and_the_rest_resent_and_5xx_fails_the_batch() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let url = fake_server(written.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("in.jsonl");
        let mut text = String::new();
        for k in (0..20).chain([99, 100]) {
            text.push_str(&format!("{{\"key\":{k},\"value\":\"v\"}}\n"));
        }
        std::fs::write(&file, text).unwrap();
        let args = ImportArgs {
            file,
            format: None,
            batch: 10,
            batch_bytes: None,
        };
        let err = run(&Target::parse(&url).unwrap(), None, &args)
            .await
            .unwrap_err();
        assert!(err.contains("2 lines skipped, 2 failed"), "{err}");
        let mut keys = written.lock().unwrap().clone();
        keys.sort_unstable();
        let want: Vec<u64> = (0..20).filter(|k| ![7, 13].contains(k)).collect();
        assert_eq!(keys, want);
    }

    #[test]
    fn the_failed_item_is_read_from_the_message() {
        assert_eq!(failed_item("items[3]: value is too large"), Some(3));
        assert_eq!(failed_item("items[x]: no"), None);
        assert_eq!(failed_item("body too large"), None);
    }
}
