//! Client commands for the `/v2` collections API: `collection create|list|info|drop|reembed`,
//! `docs import|get|delete` and `search`. Each prints the server's JSON (pretty) or a short line for
//! people, and fails with the server's error code and message on a 4xx/5xx.

use std::{io::Read as _, path::PathBuf};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::{
    bulk::{self, Batching, Endpoint},
    client::{path_segment, Conn, Target},
};

#[derive(Debug, Subcommand)]
pub(crate) enum CollectionCmd {
    /// Create a collection from a schema (a JSON object: vectors, text_fields, fields,
    /// timestamp_field); succeeds too when it exists with the same schema.
    Create {
        name: String,
        /// The schema's file, or `-` for stdin.
        #[arg(
            long,
            required_unless_present = "schema_json",
            conflicts_with = "schema_json"
        )]
        schema: Option<String>,
        /// The schema as JSON text.
        #[arg(long)]
        schema_json: Option<String>,
    },
    /// List the collections: name, documents, vector fields (`--json`: the server's answer).
    List,
    /// A collection's schema, document count and index state, as JSON.
    Info { name: String },
    /// Drop a collection and its documents.
    Drop { name: String },
    /// Re-embed a vector field: switch it to a model (and source text field) and recompute every
    /// stored document's vector in the background; `--wait` shows progress until the job ends.
    Reembed {
        name: String,
        /// The vector field (needed when the collection has several).
        #[arg(long)]
        field: Option<String>,
        /// The model [default: the field's current one]
        #[arg(long, requires = "source")]
        model: Option<String>,
        /// The text field embedded [default: the field's current one]
        #[arg(long, requires = "model")]
        source: Option<String>,
        /// Follow the job's progress (on stderr) until it is done; exit 1 if it fails.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DocsCmd {
    /// Import a JSONL file of documents (one `{"id", "text", "fields", "timestamp", "vector" or
    /// "vectors"}` object per line); exits non-zero if any line was skipped or failed.
    Import(DocsImportArgs),
    /// Print a document as JSON (exit 1 when absent).
    Get { collection: String, id: String },
    /// Delete documents by id in one atomic request; prints how many were deleted and absent.
    Delete {
        collection: String,
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct DocsImportArgs {
    pub collection: String,
    /// The JSONL file.
    pub file: PathBuf,
    /// Most documents per request (the server's documents_per_batch_max lowers it).
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Most bytes of JSON per request [default and ceiling: 15/16 of the server's body_bytes_max,
    /// from /build_info]
    #[arg(long)]
    pub batch_bytes: Option<usize>,
}

#[derive(Debug, Args)]
pub(crate) struct SearchArgs {
    pub collection: String,
    /// The query vector as a JSON array.
    #[arg(
        long,
        required_unless_present = "vector_file",
        conflicts_with = "vector_file",
        allow_hyphen_values = true
    )]
    pub vector: Option<String>,
    /// Read the query vector from this file (a JSON array, or numbers separated by spaces, commas
    /// or newlines); `-` for stdin.
    #[arg(long)]
    pub vector_file: Option<String>,
    /// The vector field to search (needed when the collection has several).
    #[arg(long)]
    pub using: Option<String>,
    /// A filter, as JSON (the filter language of the API).
    #[arg(long)]
    pub filter: Option<String>,
    /// Hits wanted [server default: 10]
    #[arg(long)]
    pub limit: Option<u64>,
    /// Beam width [server default: 100]
    #[arg(long)]
    pub ef: Option<u64>,
    /// What hits carry besides id and score: any of fields, text, vectors [server default: fields]
    #[arg(long, value_delimiter = ',')]
    pub with: Option<Vec<String>>,
    /// Drop hits scoring below this.
    #[arg(long, allow_hyphen_values = true)]
    pub threshold: Option<f64>,
    /// Also print the plan the server chose.
    #[arg(long)]
    pub explain: bool,
    /// Print the server's JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The server the commands talk to.
pub(crate) struct Api {
    target: Target,
    token: Option<String>,
}

impl Api {
    pub(crate) fn new(target: Target, token: Option<&str>) -> Result<Self, String> {
        Ok(Self {
            target,
            token: token.map(str::to_owned),
        })
    }

    fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The status and JSON body of a 2xx; the server's error code and message otherwise.
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let mut conn = Conn::connect(&self.target)
            .await
            .map_err(|e| format!("connect {}: {e}", self.target.addr))?;
        let bytes = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| e.to_string())?,
            None => Vec::new(),
        };
        let resp = conn
            .request(
                &self.target,
                method,
                path,
                self.token(),
                body.map(|_| "application/json"),
                &bytes,
            )
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        if !(200..300).contains(&resp.status) {
            let code = bulk::error_code(&resp).unwrap_or_else(|| "error".into());
            return Err(format!(
                "HTTP {} {code}: {}",
                resp.status,
                bulk::error_message(&resp)
            ));
        }
        let v = if resp.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&resp.body)
                .map_err(|e| format!("{method} {path}: the answer is not JSON: {e}"))?
        };
        Ok((resp.status, v))
    }
}

fn collection_path(name: &str) -> String {
    format!("/v2/collections/{}", path_segment(name))
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// `-` reads stdin, anything else is a file.
fn read_text(source: &str) -> Result<String, String> {
    if source == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("stdin: {e}"))?;
        Ok(s)
    } else {
        std::fs::read_to_string(source).map_err(|e| format!("{source}: {e}"))
    }
}

fn parse_json(what: &str, text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("{what} is not valid JSON: {e}"))
}

/// One line per collection: `name  N documents  vectors: field(dim, metric), …`.
fn collection_line(c: &Value) -> String {
    let vectors: Vec<String> = c["schema"]["vectors"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}({}, {})", v["dim"], v["metric"].as_str().unwrap_or("?")))
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{}\t{} documents\tvectors: {}",
        c["name"].as_str().unwrap_or("?"),
        c["documents"],
        if vectors.is_empty() {
            "none".into()
        } else {
            vectors.join(", ")
        }
    )
}

pub(crate) async fn collection(api: &Api, cmd: CollectionCmd, json: bool) -> Result<(), String> {
    match cmd {
        CollectionCmd::Create {
            name,
            schema,
            schema_json,
        } => {
            let schema = match (schema, schema_json) {
                (Some(src), _) => parse_json("the schema", &read_text(&src)?)?,
                (None, Some(text)) => parse_json("--schema-json", &text)?,
                (None, None) => return Err("give --schema FILE|- or --schema-json".into()),
            };
            let (status, v) = api
                .call("PUT", &collection_path(&name), Some(&schema))
                .await?;
            if json {
                println!("{}", pretty(&v));
            } else if status == 201 {
                println!("created collection {name}");
            } else {
                println!("collection {name} already exists with this schema");
            }
        }
        CollectionCmd::List => {
            let (_, v) = api.call("GET", "/v2/collections", None).await?;
            if json {
                println!("{}", pretty(&v));
            } else {
                let list = v["collections"].as_array().cloned().unwrap_or_default();
                if list.is_empty() {
                    println!("no collections");
                }
                for c in &list {
                    println!("{}", collection_line(c));
                }
            }
        }
        CollectionCmd::Info { name } => {
            let (_, v) = api.call("GET", &collection_path(&name), None).await?;
            println!("{}", pretty(&v));
        }
        CollectionCmd::Reembed {
            name,
            field,
            model,
            source,
            wait,
        } => {
            let mut body = json!({});
            if let Some(f) = field {
                body["field"] = json!(f);
            }
            if let (Some(m), Some(src)) = (model, source) {
                body["embed"] = json!({"model": m, "source": src});
            }
            let path = format!("{}/reembed", collection_path(&name));
            let (_, v) = api.call("POST", &path, Some(&body)).await?;
            if json && !wait {
                println!("{}", pretty(&v));
            } else if !wait {
                println!(
                    "re-embedding {name}.{} with {}: {} documents (follow with `kyrodb collection info {name}`)",
                    v["field"].as_str().unwrap_or("?"),
                    v["model"].as_str().unwrap_or("?"),
                    v["total"]
                );
            }
            if wait {
                return follow_job(api, &name, json).await;
            }
        }
        CollectionCmd::Drop { name } => {
            let (_, v) = api.call("DELETE", &collection_path(&name), None).await?;
            if json {
                println!("{}", pretty(&v));
            } else {
                println!("dropped collection {name}");
            }
        }
    }
    Ok(())
}

/// Polls the collection's `reembed` record, printing progress to stderr, until the job ends.
async fn follow_job(api: &Api, name: &str, json: bool) -> Result<(), String> {
    let mut last = String::new();
    loop {
        let (_, v) = api.call("GET", &collection_path(name), None).await?;
        let j = &v["reembed"];
        let line = format!(
            "re-embedding {name}.{}: {}/{} documents ({:.0}%), {}{}",
            j["field"].as_str().unwrap_or("?"),
            j["done"],
            j["total"],
            j["progress"].as_f64().unwrap_or(0.0) * 100.0,
            j["state"].as_str().unwrap_or("?"),
            j["paused"]
                .as_str()
                .map(|p| format!(": {p}"))
                .unwrap_or_default()
        );
        if line != last {
            eprintln!("{line}");
            last = line;
        }
        match j["state"].as_str() {
            Some("done") => {
                if json {
                    println!("{}", pretty(j));
                }
                return Ok(());
            }
            Some("failed") => {
                return Err(format!(
                    "re-embed job failed: {}",
                    j["error"].as_str().unwrap_or("no reason given")
                ))
            }
            None => return Err(format!("collection {name} has no re-embed job")),
            _ => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
        }
    }
}

pub(crate) async fn docs(api: &Api, cmd: DocsCmd, json: bool) -> Result<(), String> {
    match cmd {
        DocsCmd::Import(args) => import(api, &args).await,
        DocsCmd::Get { collection, id } => {
            let path = format!(
                "{}/documents/{}",
                collection_path(&collection),
                path_segment(&id)
            );
            let (_, v) = api.call("GET", &path, None).await?;
            println!("{}", pretty(&v));
            Ok(())
        }
        DocsCmd::Delete { collection, ids } => {
            let path = format!("{}/documents/delete", collection_path(&collection));
            let (_, v) = api
                .call("POST", &path, Some(&json!({ "ids": ids })))
                .await?;
            if json {
                println!("{}", pretty(&v));
            } else {
                println!("deleted {}, absent {}", v["deleted"], v["absent"]);
            }
            Ok(())
        }
    }
}

/// The documents route as [`bulk`] sees it.
fn documents_endpoint(collection: &str) -> Endpoint {
    Endpoint {
        path: format!("{}/documents", collection_path(collection)),
        list: "documents",
        noun: "documents",
        rate_noun: "docs",
        skipped_label: "skipped",
    }
}

/// One JSONL line as the JSON of a document, `None` when blank, or why it cannot be one. The
/// server checks the document against the schema; a document it refuses is found by the
/// `documents[i]` its error names.
fn document_line(
    line: &str,
    body_bytes_max: usize,
    envelope: usize,
) -> Result<Option<Vec<u8>>, String> {
    let text = line.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if !v.is_object() {
        let kind = match v {
            Value::Array(_) => "an array",
            Value::String(_) => "a string",
            Value::Number(_) => "a number",
            Value::Bool(_) => "a boolean",
            _ => "null",
        };
        return Err(format!("not a JSON object (a document), got {kind}"));
    }
    if envelope + text.len() > body_bytes_max {
        return Err(format!(
            "the document is {} bytes of JSON, more than the server's body_bytes_max ({body_bytes_max})",
            text.len()
        ));
    }
    Ok(Some(text.as_bytes().to_vec()))
}

async fn import(api: &Api, args: &DocsImportArgs) -> Result<(), String> {
    // A missing collection (or a typo in its name) stops the import before the file is read.
    api.call("GET", &collection_path(&args.collection), None)
        .await
        .map_err(|e| format!("collection {}: {e}", args.collection))?;
    let limits = bulk::server_limits(&api.target, api.token()).await?;
    let batching = Batching::new(
        args.batch,
        limits.documents_per_batch_max,
        args.batch_bytes,
        &limits,
    );
    let ep = documents_endpoint(&args.collection);
    let envelope = bulk::batch_body_bytes(&ep, &[]);
    let (summary, stopped) = bulk::import_lines(
        &api.target,
        api.token(),
        &args.file,
        &ep,
        batching,
        |line, _| document_line(line, limits.body_bytes_max, envelope),
    )
    .await?;
    bulk::finish(&ep, &summary, stopped)
}

/// A vector from a file: a JSON array, or numbers separated by whitespace or commas.
fn parse_vector_text(text: &str) -> Result<Value, String> {
    let t = text.trim();
    if t.starts_with('[') {
        return parse_json("the vector", t);
    }
    let nums: Result<Vec<f64>, String> = t
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<f64>()
                .map_err(|_| format!("{s:?} is not a number"))
        })
        .collect();
    Ok(json!(nums.map_err(|e| format!("the vector: {e}"))?))
}

fn search_body(a: &SearchArgs) -> Result<Value, String> {
    let vector = match (&a.vector, &a.vector_file) {
        (Some(v), _) => parse_json("--vector", v)?,
        (None, Some(f)) => parse_vector_text(&read_text(f)?)?,
        (None, None) => return Err("give --vector '[…]' or --vector-file FILE".into()),
    };
    let mut body = json!({ "vector": vector });
    if let Some(u) = &a.using {
        body["using"] = json!(u);
    }
    if let Some(f) = &a.filter {
        body["filter"] = parse_json("--filter", f)?;
    }
    if let Some(n) = a.limit {
        body["limit"] = json!(n);
    }
    if let Some(n) = a.ef {
        body["ef"] = json!(n);
    }
    if let Some(w) = &a.with {
        body["with"] = json!(w);
    }
    if let Some(t) = a.threshold {
        body["threshold"] = json!(t);
    }
    if a.explain {
        body["explain"] = json!(true);
    }
    Ok(body)
}

/// The hits as a table: rank, id, score, then fields and text when present.
fn hits_table(answer: &Value) -> String {
    let hits = answer["hits"].as_array().cloned().unwrap_or_default();
    let cell = |v: &Value| match v {
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let rows: Vec<[String; 5]> = hits
        .iter()
        .enumerate()
        .map(|(i, h)| {
            [
                (i + 1).to_string(),
                h["id"]
                    .as_str()
                    .map_or_else(|| h["id"].to_string(), str::to_owned),
                h["score"]
                    .as_f64()
                    .map_or_else(String::new, |s| format!("{s:.6}")),
                cell(&h["fields"]),
                cell(&h["text"]),
            ]
        })
        .collect();
    let with_text = rows.iter().any(|r| !r[4].is_empty());
    let header = ["RANK", "ID", "SCORE", "FIELDS", "TEXT"];
    let columns = if with_text { 5 } else { 4 };
    let width = |c: usize| {
        rows.iter()
            .map(|r| r[c].chars().count())
            .chain([header[c].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..columns).map(width).collect();
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (c, w) in widths.iter().enumerate() {
            let text = &cells[c];
            if c + 1 == columns {
                s.push_str(text);
            } else {
                s.push_str(text);
                s.push_str(&" ".repeat(w - text.chars().count() + 2));
            }
        }
        s.trim_end().to_owned()
    };
    let mut out = line(&header.map(str::to_owned));
    out.push('\n');
    for r in &rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("(no hits)\n");
    }
    out
}

pub(crate) async fn search(api: &Api, a: &SearchArgs) -> Result<(), String> {
    let body = search_body(a)?;
    let path = format!("{}/search", collection_path(&a.collection));
    let (_, answer) = api.call("POST", &path, Some(&body)).await?;
    if a.json {
        println!("{}", pretty(&answer));
        return Ok(());
    }
    print!("{}", hits_table(&answer));
    if let Some(plan) = answer.get("plan").filter(|p| !p.is_null()) {
        println!("plan: {}", pretty(plan));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_lines_must_be_json_objects_within_the_body_limit() {
        assert_eq!(
            document_line(" {\"id\":\"a\"} \r", 100, 16).unwrap(),
            Some(b"{\"id\":\"a\"}".to_vec())
        );
        assert_eq!(document_line("  ", 100, 16).unwrap(), None);
        assert!(document_line("{\"id\":", 100, 16)
            .unwrap_err()
            .starts_with("not JSON"));
        assert!(document_line("[1,2]", 100, 16)
            .unwrap_err()
            .contains("got an array"));
        assert!(
            document_line(&format!("{{\"id\":\"{}\"}}", "x".repeat(90)), 100, 16)
                .unwrap_err()
                .contains("body_bytes_max")
        );
    }

    #[test]
    fn vectors_come_as_json_or_plain_numbers() {
        assert_eq!(parse_vector_text("[0.5, 1]").unwrap(), json!([0.5, 1]));
        assert_eq!(
            parse_vector_text("0.5, 1\n-2 3e-1\n").unwrap(),
            json!([0.5, 1.0, -2.0, 0.3])
        );
        assert!(parse_vector_text("1 x").is_err());
    }

    #[test]
    fn hits_print_as_an_aligned_table() {
        let answer = json!({"hits": [
            {"id": "a/b c", "score": 1.0, "fields": {"lang": "en"}},
            {"id": "long-id-2", "score": 0.25},
        ]});
        let t = hits_table(&answer);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "RANK  ID         SCORE     FIELDS");
        assert_eq!(lines[1], "1     a/b c      1.000000  {\"lang\":\"en\"}");
        assert_eq!(lines[2], "2     long-id-2  0.250000");
        assert!(hits_table(&json!({"hits": []})).contains("(no hits)"));
    }
}

/// `kyrodb cluster …`: cluster administration through any node's HTTP API.
#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCmd {
    /// Initialise a new cluster with the voters listed in the node's --cluster (run once, on one
    /// node).
    Init,
    /// Add a node (started with --node-id and --cluster listing it): it catches up from the log,
    /// then votes.
    Join {
        /// The new node's id.
        #[arg(long)]
        node_id: u64,
        /// The new node's Raft address, IP:PORT.
        #[arg(long)]
        raft_addr: String,
    },
    /// Remove a node from the voters.
    Leave {
        /// The node's id.
        node_id: u64,
    },
    /// Role, term, leader, commit and applied index, members, followers' lag, as JSON.
    Status,
}

pub(crate) async fn cluster(api: &Api, cmd: ClusterCmd) -> Result<(), String> {
    let (_, v) = match cmd {
        ClusterCmd::Init => api.call("POST", "/v1/cluster/init", None).await?,
        ClusterCmd::Join { node_id, raft_addr } => {
            api.call(
                "POST",
                "/v1/cluster/nodes",
                Some(&json!({"node_id": node_id, "raft_addr": raft_addr})),
            )
            .await?
        }
        ClusterCmd::Leave { node_id } => {
            api.call("DELETE", &format!("/v1/cluster/nodes/{node_id}"), None)
                .await?
        }
        ClusterCmd::Status => api.call("GET", "/v1/cluster/status", None).await?,
    };
    println!("{}", pretty(&v));
    Ok(())
}
