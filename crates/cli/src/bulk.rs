//! What `kyrodb import` (KV records over `/v1/kv/batch_put`) and `kyrodb docs import` (documents over
//! `/v2/collections/{name}/documents`) share: a line file read into batches bounded by items and by the
//! bytes of the JSON body sent, under the limits the server reports in `/build_info`; progress on
//! stderr; retries of 429/503 after `Retry-After`; one bad item a 4xx names by index (`items[i]`,
//! `documents[i]`) dropped and the rest resent (or the batch halved when none is named); a summary.
//!
//! The caller turns each line into the JSON of one item (or says why the line is bad); everything
//! else is here.

use std::{
    collections::VecDeque,
    fs::File,
    io::{BufRead, BufReader, IsTerminal as _},
    path::Path,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;

use crate::client::{Conn, Response, Target};

/// Messages about single lines shown at most this many times (the summary counts them all).
const LINE_MESSAGES_SHOWN_MAX: u64 = 100;
/// A 429 or 503 (busy) is retried this many times, after the server's `Retry-After`; so is a 409
/// `write_conflict` (after a short pause).
const RETRIES_MAX: u32 = 5;
/// Longest wait for one `Retry-After`.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(10);
/// Without a terminal, a plain progress line this often.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The server's limits that shape batches: `/build_info`'s `limits`, or the defaults of a server that
/// does not report them.
#[derive(Debug, Clone, Copy, Deserialize)]
pub(crate) struct ServerLimits {
    pub body_bytes_max: usize,
    pub value_bytes_max: usize,
    pub batch_keys_max: usize,
    /// Reported since `/v2`; the server's default before.
    #[serde(default = "documents_per_batch_max_default")]
    pub documents_per_batch_max: usize,
}

fn documents_per_batch_max_default() -> usize {
    1000
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            body_bytes_max: 8 << 20,
            value_bytes_max: 1 << 20,
            batch_keys_max: 10_000,
            documents_per_batch_max: documents_per_batch_max_default(),
        }
    }
}

/// The limits `/build_info` reports; the defaults when the server is older and reports none.
pub(crate) async fn server_limits(
    target: &Target,
    token: Option<&str>,
) -> Result<ServerLimits, String> {
    let mut conn = Conn::connect(target)
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

/// The server's `{"error":{"message"}}`, or the body as text.
pub(crate) fn error_message(resp: &Response) -> String {
    serde_json::from_slice::<serde_json::Value>(&resp.body)
        .ok()
        .and_then(|j| j["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&resp.body).trim().to_owned())
}

/// The server's `{"error":{"code"}}`.
pub(crate) fn error_code(resp: &Response) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(&resp.body)
        .ok()
        .and_then(|j| j["error"]["code"].as_str().map(str::to_owned))
}

/// The index `i` of an error message about `{list}[i]` (`items[3]: value too large`,
/// `documents[2].vector: expected 4 dimensions, got 3`) and the rest of the message after the index
/// (`value too large`, `vector: expected …`).
pub(crate) fn failed_item<'m>(list: &str, message: &'m str) -> Option<(usize, &'m str)> {
    let rest = message.strip_prefix(list)?.strip_prefix('[')?;
    let (index, rest) = rest.split_once(']')?;
    let index = index.parse().ok()?;
    if let Some(reason) = rest.strip_prefix(':') {
        Some((index, reason.trim_start()))
    } else {
        Some((index, rest.strip_prefix('.')?))
    }
}

/// Where one kind of import sends its batches and how it talks about them.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// The POST route.
    pub path: String,
    /// The body's array: `items` for `{"items":[…]}`; also how the server names a bad one.
    pub list: &'static str,
    /// What the summary calls the items (`records`, `documents`).
    pub noun: &'static str,
    /// The rate's unit before `/s` (`records`, `docs`).
    pub rate_noun: &'static str,
    /// What the summary calls skipped lines (`lines skipped`, `skipped`).
    pub skipped_label: &'static str,
}

impl Endpoint {
    /// `{"<list>":[` and `]}` around the items.
    fn envelope_bytes(&self) -> usize {
        self.list.len() + 7
    }
}

/// How large batches may grow.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batching {
    pub items_max: usize,
    pub bytes_max: usize,
}

impl Batching {
    /// `items` (the flag) within 1..=`server_items_max`; `bytes` (the flag) within 15/16 of the
    /// server's body limit (the rest is headroom for what the server counts that we do not).
    pub(crate) fn new(
        items: usize,
        server_items_max: usize,
        bytes: Option<usize>,
        limits: &ServerLimits,
    ) -> Self {
        let headroom = limits.body_bytes_max / 16;
        Self {
            items_max: items.clamp(1, server_items_max.max(1)),
            bytes_max: bytes
                .unwrap_or(usize::MAX)
                .min(limits.body_bytes_max - headroom),
        }
    }
}

/// An item waiting in a batch: its line number and its JSON.
pub(crate) struct Item {
    pub line: u64,
    pub json: Vec<u8>,
}

/// The body of a batch of `items`.
pub(crate) fn body_of(ep: &Endpoint, items: &[Item]) -> Vec<u8> {
    let mut body = Vec::with_capacity(batch_body_bytes(ep, items));
    body.extend_from_slice(b"{\"");
    body.extend_from_slice(ep.list.as_bytes());
    body.extend_from_slice(b"\":[");
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&it.json);
    }
    body.extend_from_slice(b"]}");
    body
}

pub(crate) fn batch_body_bytes(ep: &Endpoint, items: &[Item]) -> usize {
    ep.envelope_bytes()
        + items.iter().map(|i| i.json.len()).sum::<usize>()
        + items.len().saturating_sub(1)
}

pub(crate) fn lines_of(items: &[Item]) -> String {
    match (items.first(), items.last()) {
        (Some(a), Some(b)) if a.line != b.line => format!("lines {}..={}", a.line, b.line),
        (Some(a), _) => format!("line {}", a.line),
        _ => "no lines".into(),
    }
}

/// A progress bar when stderr is a terminal; otherwise a plain line every few seconds.
enum Progress {
    Bar(ProgressBar),
    Plain {
        total: u64,
        read: u64,
        imported: u64,
        noun: &'static str,
        started: Instant,
        last: Instant,
    },
}

impl Progress {
    fn new(total: u64, noun: &'static str) -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            Progress::Bar(bar)
        } else {
            let now = Instant::now();
            Progress::Plain {
                total,
                read: 0,
                imported: 0,
                noun,
                started: now,
                last: now,
            }
        }
    }

    fn read(&mut self, bytes: u64) {
        match self {
            Progress::Bar(b) => b.inc(bytes),
            Progress::Plain { read, .. } => {
                *read += bytes;
                self.tick();
            }
        }
    }

    fn imported(&mut self, n: u64) {
        match self {
            Progress::Bar(b) => b.set_message(format!("{n} imported")),
            Progress::Plain { imported, .. } => {
                *imported = n;
                self.tick();
            }
        }
    }

    fn tick(&mut self) {
        if let Progress::Plain {
            total,
            read,
            imported,
            noun,
            started,
            last,
        } = self
        {
            if last.elapsed() >= PLAIN_PROGRESS_EVERY {
                *last = Instant::now();
                let pct = if *total == 0 {
                    100.0
                } else {
                    *read as f64 * 100.0 / *total as f64
                };
                eprintln!(
                    "progress: {read}/{total} bytes read ({pct:.0}%), {imported} {noun} imported, {:.0}s",
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }

    /// Prints a line without tearing the bar.
    fn println(&self, msg: &str) {
        match self {
            Progress::Bar(b) => b.suspend(|| eprintln!("{msg}")),
            Progress::Plain { .. } => eprintln!("{msg}"),
        }
    }

    fn finish(&self) {
        if let Progress::Bar(b) = self {
            b.finish_and_clear();
        }
    }
}

/// What one import did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Summary {
    pub lines: u64,
    pub imported: u64,
    pub skipped: u64,
    pub failed: u64,
    pub requests: u64,
    pub secs: f64,
}

/// Counts and the connection of one import.
struct Importer<'a> {
    target: &'a Target,
    token: Option<&'a str>,
    ep: &'a Endpoint,
    conn: Option<Conn>,
    progress: Progress,
    sum: Summary,
    messages: u64,
}

impl Importer<'_> {
    /// Prints one message about some lines, above the progress bar, up to the cap.
    fn report(&mut self, msg: String) {
        self.messages += 1;
        if self.messages <= LINE_MESSAGES_SHOWN_MAX {
            self.progress.println(&msg);
        } else if self.messages == LINE_MESSAGES_SHOWN_MAX + 1 {
            self.progress
                .println("(further messages about lines are not shown)");
        }
    }

    fn skip(&mut self, line: u64, reason: &str) {
        self.sum.skipped += 1;
        self.report(format!("line {line}: {reason} (skipped)"));
    }

    /// One POST, reconnecting if the last one broke the connection, retrying 429 and 503 after their
    /// `Retry-After` and a 409 `write_conflict` after a short pause.
    async fn post(&mut self, body: &[u8]) -> Result<Response, String> {
        let mut attempt = 0;
        loop {
            let conn = match self.conn.as_mut() {
                Some(c) => c,
                None => self.conn.insert(
                    Conn::connect(self.target)
                        .await
                        .map_err(|e| format!("connect {}: {e}", self.target.addr))?,
                ),
            };
            self.sum.requests += 1;
            let resp = conn
                .request(
                    self.target,
                    "POST",
                    &self.ep.path,
                    self.token,
                    Some("application/json"),
                    body,
                )
                .await;
            let resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    self.conn = None;
                    return Err(format!("POST {}: {e}", self.ep.path));
                }
            };
            let retry_after = resp
                .headers
                .iter()
                .find(|(n, _)| n == "retry-after")
                .and_then(|(_, v)| v.parse::<u64>().ok());
            let wait = match (resp.status, retry_after) {
                (429 | 503, Some(s)) => Duration::from_secs(s).min(RETRY_AFTER_MAX),
                (409, _) if error_code(&resp).as_deref() == Some("write_conflict") => {
                    Duration::from_millis(50 << attempt)
                }
                _ => return Ok(resp),
            };
            if attempt >= RETRIES_MAX {
                return Ok(resp);
            }
            attempt += 1;
            tokio::time::sleep(wait).await;
        }
    }

    /// Sends one batch. A 4xx that names a bad item skips that item and resends the rest; one that
    /// names none halves the batch until the bad item is alone. A network error or 5xx fails the
    /// lines it was sending. `Err` means the import cannot go on (no connection, auth, wrong URL, no
    /// such collection, out of memory budget).
    async fn send(&mut self, batch: Vec<Item>) -> Result<(), String> {
        let mut queue = VecDeque::from([batch]);
        while let Some(mut items) = queue.pop_front() {
            if items.is_empty() {
                continue;
            }
            let resp = match self.post(&body_of(self.ep, &items)).await {
                Ok(r) => r,
                Err(e) => {
                    let lost: Vec<Item> = items
                        .into_iter()
                        .chain(queue.into_iter().flatten())
                        .collect();
                    self.sum.failed += lost.len() as u64;
                    self.report(format!(
                        "{} failed, may or may not have been written: {e}",
                        lines_of(&lost)
                    ));
                    if self.conn.is_none() {
                        // Only a connection that cannot be made again stops the import.
                        if let Err(e2) = Conn::connect(self.target).await {
                            return Err(format!("connect {}: {e2}", self.target.addr));
                        }
                    }
                    return Ok(());
                }
            };
            let msg = error_message(&resp);
            match resp.status {
                200..=299 => {
                    self.sum.imported += items.len() as u64;
                    self.progress.imported(self.sum.imported);
                }
                400 | 413 | 422 => {
                    match failed_item(self.ep.list, &msg).filter(|&(i, _)| i < items.len()) {
                        Some((i, reason)) => {
                            let bad = items.remove(i);
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
                    }
                }
                status => {
                    let lost: Vec<Item> = items
                        .into_iter()
                        .chain(queue.into_iter().flatten())
                        .collect();
                    self.sum.failed += lost.len() as u64;
                    let fatal = matches!(status, 401 | 403 | 404 | 405 | 507);
                    let verdict = if status >= 500 && status != 507 || status == 408 {
                        "may or may not have been written"
                    } else {
                        "not written"
                    };
                    let code = error_code(&resp).map_or(String::new(), |c| format!(" {c}"));
                    let text = format!(
                        "{} failed with HTTP {status}{code}, {verdict}: {msg}",
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

/// Reads `file` line by line; `item` turns a line (without its newline) into the JSON of one item,
/// `None` for a line to pass over (blank, header), or why the line is bad. Returns the summary and,
/// when the import had to stop early, why.
pub(crate) async fn import_lines(
    target: &Target,
    token: Option<&str>,
    file: &Path,
    ep: &Endpoint,
    batching: Batching,
    mut item: impl FnMut(&str, u64) -> Result<Option<Vec<u8>>, String>,
) -> Result<(Summary, Option<String>), String> {
    let f = File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let total_bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut im = Importer {
        target,
        token,
        ep,
        conn: None,
        progress: Progress::new(total_bytes, ep.noun),
        sum: Summary::default(),
        messages: 0,
    };
    let mut reader = BufReader::new(f);
    let started = Instant::now();
    let mut batch: Vec<Item> = Vec::new();
    let mut batch_bytes = ep.envelope_bytes();
    let mut raw = Vec::new();
    let mut stopped = None;
    loop {
        raw.clear();
        let n = reader
            .read_until(b'\n', &mut raw)
            .map_err(|e| format!("{}: line {}: {e}", file.display(), im.sum.lines + 1))?;
        if n == 0 {
            break;
        }
        im.sum.lines += 1;
        im.progress.read(n as u64);
        let line_no = im.sum.lines;
        let parsed = std::str::from_utf8(&raw)
            .map_err(|e| format!("not UTF-8: {e}"))
            .and_then(|line| item(line.trim_end_matches('\n'), line_no));
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
            && (batch.len() >= batching.items_max
                || batch_bytes + sep + json.len() > batching.bytes_max)
        {
            if let Err(e) = im.send(std::mem::take(&mut batch)).await {
                stopped = Some(e);
                break;
            }
            batch_bytes = ep.envelope_bytes();
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
    im.progress.finish();
    im.sum.secs = started.elapsed().as_secs_f64();
    Ok((im.sum, stopped))
}

/// Prints the summary line to stderr; an error when the import stopped or any line was skipped or
/// failed (so the exit status is non-zero).
pub(crate) fn finish(ep: &Endpoint, sum: &Summary, stopped: Option<String>) -> Result<(), String> {
    eprintln!(
        "imported {} {} from {} lines in {} request{} in {:.2}s ({:.0} {}/s); {} {}, {} failed",
        sum.imported,
        ep.noun,
        sum.lines,
        sum.requests,
        if sum.requests == 1 { "" } else { "s" },
        sum.secs,
        sum.imported as f64 / sum.secs.max(1e-9),
        ep.rate_noun,
        sum.skipped,
        ep.skipped_label,
        sum.failed,
    );
    if let Some(e) = stopped {
        return Err(format!(
            "stopped after line {}: {e}; {} {}, {} failed",
            sum.lines, sum.skipped, ep.skipped_label, sum.failed
        ));
    }
    if sum.skipped > 0 || sum.failed > 0 {
        return Err(format!(
            "{} {}, {} failed (see the messages above)",
            sum.skipped, ep.skipped_label, sum.failed
        ));
    }
    Ok(())
}

/// A stand-in HTTP/1.1 server for unit tests, for answers a real server cannot be made to give on
/// purpose.
#[cfg(test)]
pub(crate) mod fake {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves `answer(lower-cased request head, body) -> (status, extra header lines, JSON body)`;
    /// returns its URL.
    pub(crate) async fn server(
        answer: impl Fn(&str, &[u8]) -> (u16, String, String) + Send + Sync + 'static,
    ) -> String {
        let answer = std::sync::Arc::new(answer);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let answer = answer.clone();
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
                        let (status, headers, text) = answer(&head, &body);
                        let resp = format!(
                            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\n\r\n{text}",
                            text.len()
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failed_item_and_the_reason_are_read_from_the_message() {
        assert_eq!(
            failed_item("items", "items[3]: value is too large"),
            Some((3, "value is too large"))
        );
        assert_eq!(
            failed_item(
                "documents",
                "documents[2].vector: expected 4 dimensions, got 3"
            ),
            Some((2, "vector: expected 4 dimensions, got 3"))
        );
        assert_eq!(
            failed_item("documents", "documents[0]: encodes to 9 bytes"),
            Some((0, "encodes to 9 bytes"))
        );
        assert_eq!(failed_item("items", "items[x]: no"), None);
        assert_eq!(failed_item("items", "documents[1]: no"), None);
        assert_eq!(failed_item("documents", "documents[1]x"), None);
        assert_eq!(failed_item("items", "body too large"), None);
    }

    #[test]
    fn bodies_measure_exactly_for_each_envelope() {
        for list in ["items", "documents"] {
            let ep = Endpoint {
                path: "/x".into(),
                list,
                noun: "things",
                rate_noun: "things",
                skipped_label: "skipped",
            };
            let items = [
                Item {
                    line: 1,
                    json: br#"{"a":1}"#.to_vec(),
                },
                Item {
                    line: 2,
                    json: br#"{"b":"x"}"#.to_vec(),
                },
            ];
            let body = body_of(&ep, &items);
            assert_eq!(body.len(), batch_body_bytes(&ep, &items), "{list}");
            assert_eq!(body_of(&ep, &[]).len(), ep.envelope_bytes());
            let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(j[list][1]["b"], "x");
            assert_eq!(lines_of(&items), "lines 1..=2");
        }
    }

    #[test]
    fn batching_stays_within_the_servers_limits() {
        let limits = ServerLimits {
            body_bytes_max: 1600,
            ..ServerLimits::default()
        };
        let b = Batching::new(5000, 1000, None, &limits);
        assert_eq!((b.items_max, b.bytes_max), (1000, 1500));
        let b = Batching::new(0, 1000, Some(10_000), &limits);
        assert_eq!((b.items_max, b.bytes_max), (1, 1500));
        let b = Batching::new(10, 1000, Some(700), &limits);
        assert_eq!((b.items_max, b.bytes_max), (10, 700));
        // An older server reports no documents_per_batch_max.
        let old: ServerLimits = serde_json::from_str(
            r#"{"body_bytes_max": 100, "value_bytes_max": 10, "batch_keys_max": 5}"#,
        )
        .unwrap();
        assert_eq!(old.documents_per_batch_max, 1000);
    }

    /// 429 with Retry-After is retried; a 400 naming `documents[i]` drops that document (reported
    /// with its line) and resends the rest; a line the caller refuses is skipped before sending.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn busy_is_retried_and_a_named_document_is_dropped_and_the_rest_resent() {
        use std::sync::{Arc, Mutex};
        let written = Arc::new(Mutex::new(Vec::<String>::new()));
        let posts = Arc::new(Mutex::new(0u32));
        let (w, p) = (written.clone(), posts.clone());
        let url = fake::server(move |_, body| {
            let mut posts = p.lock().unwrap();
            *posts += 1;
            if *posts == 1 {
                let busy = r#"{"error":{"code":"busy","message":"retry"}}"#;
                return (503, "Retry-After: 1\r\n".into(), busy.into());
            }
            let j: serde_json::Value = serde_json::from_slice(body).unwrap();
            let ids: Vec<String> = j["documents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].as_str().unwrap().to_owned())
                .collect();
            if let Some(i) = ids.iter().position(|id| id == "bad") {
                let m = format!(
                    r#"{{"error":{{"code":"dimension_mismatch","message":"documents[{i}].vector: expected 4 dimensions, got 3"}}}}"#
                );
                return (400, String::new(), m);
            }
            w.lock().unwrap().extend(ids);
            (200, String::new(), r#"{"upserted":1,"seq":1}"#.into())
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("d.jsonl");
        std::fs::write(
            &file,
            "{\"id\":\"a\"}\n{\"id\":\"bad\"}\nnot json\n{\"id\":\"c\"}\n",
        )
        .unwrap();
        let ep = Endpoint {
            path: "/v2/collections/c/documents".into(),
            list: "documents",
            noun: "documents",
            rate_noun: "docs",
            skipped_label: "skipped",
        };
        let batching = Batching::new(10, 10, None, &ServerLimits::default());
        let (sum, stopped) = import_lines(
            &Target::parse(&url).unwrap(),
            None,
            &file,
            &ep,
            batching,
            |line, _| {
                serde_json::from_str::<serde_json::Value>(line).map_err(|e| e.to_string())?;
                Ok(Some(line.as_bytes().to_vec()))
            },
        )
        .await
        .unwrap();
        assert!(stopped.is_none());
        assert_eq!(
            (
                sum.lines,
                sum.imported,
                sum.skipped,
                sum.failed,
                sum.requests
            ),
            (4, 2, 2, 0, 3)
        );
        assert!(sum.secs >= 1.0, "waited for Retry-After");
        assert_eq!(*written.lock().unwrap(), ["a", "c"]);
        assert!(finish(&ep, &sum, None)
            .unwrap_err()
            .contains("2 skipped, 0 failed"));
    }
}
